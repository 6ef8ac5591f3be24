"""stack_verify: security baseline, exceptions, health, memory on fake inspect/stats data; the TLS
probe against in-process TLS servers with a throw-away CA."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import warnings

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu
from ansible_collections.hyhome.bootstrap.plugins.module_utils import stack_verify as sv
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Project, Service
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import summarize
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MIB = 1024 * 1024


def container(service, user="1000:1000", security_opt=("no-new-privileges:true",), cap_drop=("ALL",),
              cap_add=(), privileged=False, pid="", net="hy_default", ipc="private", memory=32 * MIB,
              status="running", health="healthy", exit_code=0, restart="unless-stopped", cid=None):
    state = {"Status": status, "ExitCode": exit_code, "StartedAt": "2026-11-22T02:00:00Z"}
    if health:
        state["Health"] = {"Status": health, "Log": [{"ExitCode": 0 if health == "healthy" else 1,
                                                      "Output": "probe output"}]}
    return {
        "Id": cid or (service * 64)[:64], "Name": f"/hy-{service}-1", "Image": "sha256:x", "State": state,
        "Config": {"User": user, "Labels": {cu.PROJECT_LABEL: "hy", cu.SERVICE_LABEL: service}},
        "HostConfig": {"SecurityOpt": list(security_opt) if security_opt is not None else None,
                       "CapDrop": list(cap_drop) if cap_drop is not None else None, "CapAdd": list(cap_add),
                       "Privileged": privileged, "PidMode": pid, "NetworkMode": net, "IpcMode": ipc,
                       "Memory": memory, "RestartPolicy": {"Name": restart}},
    }


def rules(findings, severity="error"):
    return sorted((f.service, f.rule) for f in findings if f.severity == severity)


# ---------------------------------------------------------------------------------------------
# security baseline
# ---------------------------------------------------------------------------------------------

def test_hardened_container_passes():
    assert sv.check_security(container("api")) == []


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"security_opt": None}, sv.RULE_NO_NEW_PRIVS),
    ({"security_opt": ["seccomp=unconfined"]}, sv.RULE_NO_NEW_PRIVS),
    ({"security_opt": ["no-new-privileges:false"]}, sv.RULE_NO_NEW_PRIVS),
    ({"cap_drop": ["NET_RAW"]}, sv.RULE_CAP_DROP),
    ({"cap_drop": None}, sv.RULE_CAP_DROP),
    ({"user": ""}, sv.RULE_NON_ROOT),
    ({"user": "root"}, sv.RULE_NON_ROOT),
    ({"user": "0:0"}, sv.RULE_NON_ROOT),
    ({"privileged": True}, sv.RULE_PRIVILEGED),
    ({"pid": "host"}, sv.RULE_HOST_NS),
    ({"net": "host"}, sv.RULE_HOST_NS),
    ({"ipc": "host"}, sv.RULE_HOST_NS),
    ({"memory": 0}, sv.RULE_MEM_LIMIT),
])
def test_each_baseline_violation_is_an_error(kwargs, rule):
    assert rules(sv.check_security(container("db", **kwargs))) == [("db", rule)]


def test_security_summary_counts_containers_meeting_the_baseline():
    cs = [container("a"), container("b", user="root"), container("c", cap_add=["NET_BIND_SERVICE"])]
    found = [f for c in cs for f in sv.check_security(c)]
    assert sv.security_summary(cs, found).message.startswith("2 of 3 containers meet the whole baseline")


def test_equivalent_spellings_pass():
    c = container("api", security_opt=["no-new-privileges"], cap_drop=["CAP_ALL"], user="postgres")
    c["HostConfig"]["CapDrop"] = ["all"]
    assert sv.check_security(c) == []
    added = sv.check_security(container("gw", cap_add=["NET_BIND_SERVICE"]))
    assert [(f.severity, f.message) for f in added] == [("info", "capabilities added back: NET_BIND_SERVICE")]


def model_with_exceptions():
    svc = {
        "db": Service("db", "postgres", None, None, extensions={"x-hyhome": {"exceptions": {
            "security-non-root": "the entrypoint chowns the data dir, then drops to uid 999"}}}),
        "init": Service("init", "postgres", None, "999", restart="no", extensions={"x-hyhome": {"kind": "init",
                        "exceptions": {"healthcheck": "one-shot", "security-cap-drop-all": " "}}}),
        "api": Service("api", "api", None, "1000",
                       depends_on={"init": {"condition": "service_completed_successfully"}}),
    }
    return Project(name="hy", working_dir="/x", files=[], services=svc)


def test_exceptions_are_reported_with_reason_not_silenced():
    proj = model_with_exceptions()
    exc = sv.declared_exceptions(proj)
    assert exc["db"]["security-non-root"].startswith("the entrypoint")
    assert exc["init"]["security-healthcheck"] == "one-shot"      # short ids accepted too
    assert "security-cap-drop-all" not in exc["init"]             # no written reason: not applied
    findings = sv.check_security(container("db", user="")) + sv.check_security(container("init", cap_drop=[]))
    findings = sv.apply_exceptions(findings, exc)
    db = next(f for f in findings if f.service == "db")
    assert db.accepted and not db.blocking and db.severity == "error"
    init = next(f for f in findings if f.service == "init")
    assert init.blocking
    assert summarize(findings) == {"error": 1, "warning": 0, "info": 0, "accepted": 1}
    table = sv.render_table(findings).splitlines()
    assert table[0].split() == ["SEVERITY", "RULE", "SUBJECT", "MESSAGE"]
    assert table[1].startswith("error     security-cap-drop-all  init ")          # what fails comes first
    assert table[2].startswith("accepted  security-non-root      db ")
    assert table[3].strip().startswith("accepted: the entrypoint")


# ---------------------------------------------------------------------------------------------
# health
# ---------------------------------------------------------------------------------------------

def test_health_init_exit_0_ok_and_failures_named():
    proj = model_with_exceptions()
    good = cu.by_service([container("db"), container("api", health=None),
                          container("init", status="exited", exit_code=0, health=None, restart="no")])
    assert rules(sv.check_health(proj, good)) == []
    assert {f.service: f.message for f in sv.check_health(proj, good)}["init"] == "completed"
    bad = cu.by_service([container("db", health="unhealthy"),
                         container("init", status="exited", exit_code=1, health=None, restart="no")])
    found = sv.check_health(proj, bad)
    assert rules(found) == [("api", "health"), ("db", "health"), ("init", "health")]
    db = next(f for f in found if f.service == "db")
    assert "unhealthy" in db.message and "exit 1: probe output" in db.message
    assert next(f for f in found if f.service == "api").message == "not ready: no container"


def test_wait_settled_polls_read_only_with_fake_clock():
    proj = model_with_exceptions()
    proj.services = {"db": proj.services["db"]}
    snaps = iter([cu.by_service([container("db", health="starting")])] * 2
                 + [cu.by_service([container("db")])])
    now = [0.0]
    snap = sv.wait_settled(proj, lambda: next(snaps), 30, clock=lambda: now[0],
                           sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert snap["db"][0].health == "healthy" and now[0] == 2.0


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------

def stats(usage, cache=0, v2=False):
    key = "inactive_file" if v2 else "total_inactive_file"
    return {"memory_stats": {"usage": usage, "stats": {key: cache}}}


def test_memory_usage_subtracts_page_cache():
    assert sv.memory_usage(stats(100 * MIB, 30 * MIB)) == 70 * MIB
    assert sv.memory_usage(stats(100 * MIB, 30 * MIB, v2=True)) == 70 * MIB
    assert sv.memory_usage({"memory_stats": {"usage": 5, "stats": {"cache": 2}}}) == 3
    assert sv.memory_usage({}) is None


def test_memory_ceiling():
    host = 8 * 1024 * MIB
    cs = [container("a", memory=256 * MIB, cid="a" * 64), container("b", memory=0, cid="b" * 64),
          container("c", status="exited", health=None, cid="c" * 64)]
    st = {"a" * 64: stats(300 * MIB, 100 * MIB), "b" * 64: stats(50 * MIB)}
    rep, found = sv.check_memory(cs, st, host, 20)
    assert (rep.limit_sum, rep.usage_sum) == (256 * MIB, 250 * MIB)
    assert rep.unlimited == ["hy-b-1"] and "hy-c-1" not in rep.per_container
    assert [f.severity for f in found] == ["info", "warning"]
    _, found = sv.check_memory(cs, st, 1024 * MIB, 20)   # 250 MiB of 1 GiB = 24%
    assert found[0].severity == "error" and "usage above the ceiling" in found[0].message
    _, found = sv.check_memory([container("a", memory=4 * 1024 * MIB)], {}, host, 20)
    assert found[0].severity == "warning" and "limits could exceed" in found[0].message
    _, found = sv.check_memory([container("a", memory=9 * 1024 * MIB)], {}, host, 20)
    assert found[0].severity == "error" and "exceed host memory" in found[0].message
    _, found = sv.check_memory(cs, st, 0)
    assert found[0].severity == "warning"


# ---------------------------------------------------------------------------------------------
# TLS: in-process servers, a throw-away CA
# ---------------------------------------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(tmp_path, label):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(label)).issuer_name(_name(label))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = tmp_path / f"{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, str(path)


def make_leaf(tmp_path, ca_key, ca_cert, names):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class TlsServer:
    """Accepts connections in a thread and completes handshakes; never sends application data."""

    def __init__(self, cert, key, minimum=ssl.TLSVersion.TLSv1_2):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if minimum < ssl.TLSVersion.TLSv1_2:
            self.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.ctx.minimum_version = minimum
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(1)
                    with contextlib.suppress(OSError):
                        tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def pki(tmp_path):
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "local-ca")
    cert, key = make_leaf(tmp_path, ca_key, ca_cert, ["hyhome.localhost", "api.hyhome.localhost"])
    return {"ca": ca_path, "cert": cert, "key": key, "tmp": tmp_path}


@pytest.fixture
def server(pki):
    servers = []

    def start(minimum=ssl.TLSVersion.TLSv1_2):
        s = TlsServer(pki["cert"], pki["key"], minimum)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def test_tls_verified_chain_hostname_and_legacy_refused(pki, server):
    s = server()
    p = sv.probe_tls("127.0.0.1", s.port, "hyhome.localhost", pki["ca"])
    assert p.verified and p.version in ("TLSv1.2", "TLSv1.3") and p.tls12 == "accepted"
    assert set(p.legacy.values()) <= {"refused", "untestable"}
    found = sv.check_tls([p])
    assert rules(found) == []
    assert "chain to the local CA and hostname verified" in found[0].message
    if "refused" in p.legacy.values():
        assert any("refuses TLSv1" in f.message for f in found)


def test_tls_hostname_mismatch(pki, server):
    s = server()
    p = sv.probe_tls("127.0.0.1", s.port, "other.localhost", pki["ca"])
    assert not p.verified and p.chain_ok and p.hostname_ok is False
    assert "does not match other.localhost" in sv.check_tls([p])[0].message


def test_tls_wrong_ca(pki, server):
    _, _, other_ca = make_ca(pki["tmp"], "other-ca")
    s = server()
    p = sv.probe_tls("127.0.0.1", s.port, "hyhome.localhost", other_ca)
    assert p.chain_ok is False
    assert "does not chain to the local CA" in sv.check_tls([p])[0].message


def test_tls_legacy_version_accepted_is_an_error(pki, server):
    s = server(minimum=ssl.TLSVersion.TLSv1)
    p = sv.probe_tls("127.0.0.1", s.port, "hyhome.localhost", pki["ca"])
    if set(p.legacy.values()) == {"untestable"}:
        pytest.fail("the local OpenSSL cannot offer TLS 1.0/1.1 even at SECLEVEL 0: the legacy probe is untestable")
    assert p.legacy["TLSv1"] == "accepted"
    assert any("accepts TLSv1 " in f.message for f in sv.check_tls([p]) if f.severity == "error")


def test_tls_nothing_listening_and_bad_ca_file(pki):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    p = sv.probe_tls("127.0.0.1", port, "hyhome.localhost", pki["ca"], timeout=1)
    assert not p.verified and "failed" in p.error
    assert sv.check_tls([p])[0].severity == "error"
    with pytest.raises(HyHomeError, match="cannot load the CA certificate"):
        sv.probe_tls("127.0.0.1", port, "x", str(pki["tmp"] / "missing.pem"))


# ---------------------------------------------------------------------------------------------
# Docker-backed: the module's run() against the busybox fixture on the real engine
# ---------------------------------------------------------------------------------------------

@pytest.mark.docker
def test_docker_verify_running_fixture(tmp_path):
    import os
    import shutil
    import subprocess
    import uuid

    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_project
    from ansible_collections.hyhome.bootstrap.plugins.modules import stack_verify as module

    d = tmp_path / "proj"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "fixtures", "compose_up"), d)
    (d / "secrets").mkdir()
    for name in ("web_token", "worker_token"):
        (d / "secrets" / f"{name}.txt").write_text(uuid.uuid4().hex)
        os.chmod(d / "secrets" / f"{name}.txt", 0o644)
    name = f"hyhome-sv-pytest-{uuid.uuid4().hex[:8]}"
    params = {"project_dir": str(d), "project_name": name, "files": None, "env_file": None, "profiles": [],
              "docker_cli": "docker",
              "checks": ["health", "security", "memory"], "settle_timeout": 30, "tls_endpoints": [],
              "tls_host": "127.0.0.1", "tls_port": 443, "tls_server_names": ["localhost"], "tls_ca_file": None,
              "tls_timeout": 5, "memory_ceiling_percent": 20.0}
    try:
        with pytest.raises(HyHomeError, match="no containers of compose project"):
            module.run(params)
        proj = load_project(str(d))
        proj.name = name
        cu.apply(cu.Engine(str(d), name), proj, cu.Options(pull="never", wait_timeout=60))
        res = module.run(params)
        assert res["changed"] is False
        assert res["summary"]["error"] == 0 and res["summary"]["accepted"] == 1, res["table"]
        assert "2 of 3 containers meet the whole baseline" in res["table"]
        accepted = [f for f in res["findings"] if f["accepted"]]
        assert accepted[0]["service"] == "init" and accepted[0]["rule"] == sv.RULE_NON_ROOT
        assert {f["service"]: f["message"] for f in res["findings"] if f["rule"] == "health"} == {
            "init": "completed", "web": "ready", "worker": "ready"}
        assert res["memory"]["limit_sum"] == 2 * 32 * MIB
        subprocess.run(["docker", "stop", "-t", "1", f"{name}-worker-1"], check=True, capture_output=True)
        res = module.run(dict(params, settle_timeout=0))
        assert [f["service"] for f in res["findings"] if f["severity"] == "error" and not f["accepted"]] == ["worker"]
    finally:
        subprocess.run(["docker", "compose", "-p", name, "down", "-t", "1"], cwd=d, capture_output=True, check=False)


# --------------------------------------------------------------------------------------------
# Memory counters straight from the cgroup (the fast path on the engine's host)
# --------------------------------------------------------------------------------------------

def _fake_cgroup(tmp_path, cid, lines, files):
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("\n".join(lines) + "\n")
    for rel, text in files.items():
        f = tmp_path / "sys" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return str(tmp_path / "proc"), str(tmp_path / "sys")


def test_cgroup_v1_memory_matches_what_docker_stats_computes(tmp_path):
    cid = "f" * 64
    proc, sysfs = _fake_cgroup(tmp_path, cid, [f"12:net_prio:/docker/{cid}", f"4:memory:/docker/{cid}"], {
        f"memory/docker/{cid}/memory.usage_in_bytes": "10485760\n",
        f"memory/docker/{cid}/memory.stat": "cache 4096\ntotal_inactive_file 2097152\n",
    })
    stats = sv.cgroup_stats(cid, 42, proc, sysfs)
    assert sv.memory_usage(stats) == 10485760 - 2097152


def test_cgroup_v2_memory(tmp_path):
    cid = "a" * 64
    proc, sysfs = _fake_cgroup(tmp_path, cid, [f"0::/system.slice/docker-{cid}.scope"], {
        f"system.slice/docker-{cid}.scope/memory.current": "8388608\n",
        f"system.slice/docker-{cid}.scope/memory.stat": "anon 100\ninactive_file 1048576\n",
    })
    assert sv.memory_usage(sv.cgroup_stats(cid, 42, proc, sysfs)) == 8388608 - 1048576


def test_cgroup_of_another_container_or_invisible_pid_falls_back(tmp_path):
    cid = "b" * 64
    proc, sysfs = _fake_cgroup(tmp_path, cid, ["0::/"], {})   # private cgroup namespace: not ours
    assert sv.cgroup_stats(cid, 42, proc, sysfs) is None
    assert sv.cgroup_stats(cid, 0, proc, sysfs) is None
    assert sv.cgroup_stats(cid, 4242, proc, sysfs) is None    # pid not visible from here
