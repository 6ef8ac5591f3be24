"""Serve cert.pem/key.pem on loopback and connect to it as a client that trusts only the SYSTEM store.

Usage: tls_client.py CERT KEY NAME...   (runs on the Molecule target with its own python3, stdlib only)
Exit 0 when every name verifies over TLS 1.2 and TLS 1.3 and a name outside the certificate is refused.
"""

import socket
import ssl
import sys
import threading


def main():
    cert, key, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]

    def serve():
        while True:
            conn, _ = sock.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tconn:
                    tconn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()

    def connect(name, version):
        ctx = ssl.create_default_context()  # no cafile: the system trust store only (no --cacert)
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=name) as tconn:
            assert tconn.recv(2) == b"ok"
            return tconn.version()

    for name in names:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            print(f"{name} {connect(name, version)} ok")
    try:
        connect("not-in-the-certificate.example", ssl.TLSVersion.TLSv1_3)
    except ssl.SSLCertVerificationError:
        print("a name outside the certificate is refused")
    else:
        sys.exit("a name outside the certificate was accepted")


main()
