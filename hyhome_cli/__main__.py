"""``python -m hyhome_cli`` is the ``hyhome`` command."""

import sys

from hyhome_cli.main import main

sys.exit(main())
