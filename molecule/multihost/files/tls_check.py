"""Connect to a host's gateway from the controller and check its certificate against the one CA.

usage: tls_check.py CA_FILE ADDRESS PORT NAME [NAME ...]
Verifies the chain and the name for each NAME (an IP address or a DNS name; DNS names are sent as SNI and
connected to ADDRESS), then prints the certificate's subjectAltName entries, one per line.
"""

import socket
import ssl
import sys


def main(argv: list[str]) -> int:
    ca_file, address, port, names = argv[0], argv[1], int(argv[2]), argv[3:]
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    sans: set[str] = set()
    for name in names:
        # wrap_socket verifies the chain and the name.
        with (
            socket.create_connection((address, port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as tls,
        ):
            sans.update(value for _kind, value in tls.getpeercert().get("subjectAltName", ()))
    print("\n".join(sorted(sans)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
