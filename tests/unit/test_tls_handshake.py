"""A real TLS handshake: serve the leaf with Python's ``ssl``, trust only rootCA.pem on the client.

Hostname verification is checked for every SAN (the wildcard through a name under it), with
TLS 1.2 and TLS 1.3 pinned on the client, for RSA and ECDSA leaves.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls

NAMES = ["home.arpa", "*.home.arpa", "localhost", "127.0.0.1", "::1"]
# What a client asks for, per SAN: the wildcard is exercised through a name it covers.
CLIENT_NAMES = ["home.arpa", "gateway.home.arpa", "localhost", "127.0.0.1", "::1"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class Server:
    """A TLS server on loopback answering every connection with ``ok`` until stopped."""

    def __init__(self, cert_file, key_file, family=socket.AF_INET, host="127.0.0.1"):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the gateway's policy: TLS 1.2+
        self.ctx.load_cert_chain(cert_file, key_file)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(5)
            with contextlib.suppress(ssl.SSLError, OSError), self.ctx.wrap_socket(conn, server_side=True) as tconn:
                tconn.sendall(b"ok")
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module", params=["rsa", "ecdsa"])
def served(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"tls-{request.param}")
    ca_key = tls.generate_key(request.param, tls.CA_RSA_BITS)
    ca = tls.build_ca(tls.CAProfile(key_type=request.param), ca_key)
    key = tls.generate_key(request.param, tls.LEAF_RSA_BITS)
    leaf = tls.issue_leaf(tls.LeafProfile.from_names(NAMES, key_type=request.param), key, ca, ca_key)
    (tmp / "rootCA.pem").write_bytes(tls.cert_to_pem(ca))
    (tmp / "cert.pem").write_bytes(tls.cert_to_pem(leaf))
    (tmp / "key.pem").write_bytes(tls.key_to_pem(key))
    servers = {4: Server(tmp / "cert.pem", tmp / "key.pem")}
    if _ipv6_loopback():
        servers[6] = Server(tmp / "cert.pem", tmp / "key.pem", socket.AF_INET6, "::1")
    yield tmp, servers
    for s in servers.values():
        s.close()


def client_ctx(cafile, version):
    ctx = ssl.create_default_context(cafile=str(cafile))  # only this CA: no system store
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def handshake(servers, cafile, name, version, family=4):
    server = servers[family]
    host = "::1" if family == 6 else "127.0.0.1"
    ctx = client_ctx(cafile, version)
    with socket.create_connection((host, server.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as conn:
        assert conn.recv(2) == b"ok"
        return conn.version()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_handshake_verifies_each_name(served, name, version):
    tmp, servers = served
    got = handshake(servers, tmp / "rootCA.pem", name, version)
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_handshake_over_ipv6_when_available(served):
    tmp, servers = served
    if 6 not in servers:
        pytest.fail("no IPv6 loopback on this machine: the ::1 SAN cannot be exercised over IPv6")
    assert handshake(servers, tmp / "rootCA.pem", "::1", ssl.TLSVersion.TLSv1_3, family=6) == "TLSv1.3"


@pytest.mark.parametrize("name", ["evil.test", "a.b.home.arpa", "arpa", "10.0.0.1"])
def test_names_outside_the_certificate_are_rejected(served, name):
    tmp, servers = served
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(servers, tmp / "rootCA.pem", name, ssl.TLSVersion.TLSv1_3)


def test_another_ca_is_not_trusted(served, tmp_path):
    _, servers = served
    other = tls.build_ca(tls.CAProfile(key_type="ecdsa"), tls.generate_key("ecdsa"))
    (tmp_path / "other.pem").write_bytes(tls.cert_to_pem(other))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(servers, tmp_path / "other.pem", "home.arpa", ssl.TLSVersion.TLSv1_2)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_is_refused(served):
    tmp, servers = served
    ctx = ssl.create_default_context(cafile=str(tmp / "rootCA.pem"))
    try:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        return  # this OpenSSL cannot even offer TLS 1.1: nothing older than 1.2 can connect
    with socket.create_connection(("127.0.0.1", servers[4].port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="home.arpa")
