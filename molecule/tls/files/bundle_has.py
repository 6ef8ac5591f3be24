"""Exit 0 when the PEM bundle (argv[2]) holds the certificate in argv[1], compared by DER. Stdlib only."""

import base64
import re
import sys

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def ders(path):
    with open(path, "rb") as fh:
        return [base64.b64decode(b"".join(m.group(1).split())) for m in PEM.finditer(fh.read())]


want = ders(sys.argv[1])[0]
sys.exit(0 if want in ders(sys.argv[2]) else 1)
