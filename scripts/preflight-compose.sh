#!/usr/bin/env bash
# AC-1: report every missing prerequisite of a Compose project's first boot, read-only.
# Prints the findings table, writes the JSON report where --json says.
#   exit codes: 0 nothing blocks first boot; 1 something blocks it; 2 bad input: no such directory, not a
#   Compose project, a bad option, or a file that cannot be used at all (not UTF-8 text, binary/NUL, empty,
#   a directory, top level not a mapping, nested too deep, YAML aliases expanding past the limit), one line
#   on stderr naming it; 3 internal error (one line; HYHOME_DEBUG=1 shows the traceback).
#   usage: scripts/preflight-compose.sh [PROJECT_DIR] [--json FILE] [--quiet] [--defer STEP ...] [--help]
#   PROJECT_DIR defaults to $HYHOME_PROJECT_DIR, else the embedded stack (./stack).
# Same checks as `ansible-playbook playbooks/preflight.yml`, without Ansible around them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${HYHOME_PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "preflight: $PY not found; run scripts/setup.sh first (or set HYHOME_PYTHON)" >&2
  exit 2
fi
export HYHOME_PROJECT_DIR=${HYHOME_PROJECT_DIR:-$ROOT/stack}
exec "$PY" -c 'import sys
from ansible_collections.hyhome.bootstrap.plugins.module_utils.preflight import cli
sys.exit(cli(sys.argv[1:]))' "$@"
