"""tls_files: the TLS key owner from the services that mount it, and the modules' file work (errors included)."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import fileops, identity, mounts, tls, tls_files
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
    Mount,
    Project,
    Secret,
    SecretRef,
    Service,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "plugins" / "modules"
BUSYBOX = "hyhome/busybox:local"


class NoImages:
    """No image is on the engine: only user:, overrides and the table answer."""

    def config_user(self, image):
        raise identity.ImageMissing(image)

    def accounts(self, image):
        raise identity.ImageMissing(image)


def resolver(**kwargs):
    return identity.IdentityResolver(images=NoImages(), **kwargs)


def project(tmp_path, services, secrets=None):
    return Project("p", str(tmp_path), [], services={s.name: s for s in services}, secrets=secrets or {})


def certs(tmp_path):
    d = tmp_path / "secrets" / "certs"
    return str(d / "key.pem"), str(d / "cert.pem"), str(d)


# ---------------------------------------------------------------------------------------------
# Readers of a file


def test_file_readers_by_file_bind_directory_bind_and_secret(tmp_path):
    key, cert, d = certs(tmp_path)
    services = [
        Service("gateway", "nginx", None, "101:101", mounts=[Mount("bind", "/tls/key.pem", True, key)]),
        Service("traefik", "traefik:v3.0", None, None, mounts=[Mount("bind", "/certs", True, d)]),
        Service("app", "img", None, "1000", secrets=[SecretRef("tls_key", "/run/secrets/tls_key")]),
        Service("other", "img", None, "1000", mounts=[Mount("bind", "/c", True, str(tmp_path / "conf")),
                                                       Mount("volume", "/v", False, None, volume="v")]),
    ]
    p = project(tmp_path, services, {"tls_key": Secret("tls_key", key)})
    assert mounts.file_readers(p, key) == [
        ("app", "secret tls_key -> /run/secrets/tls_key"),
        ("gateway", f"bind {key} -> /tls/key.pem"),
        ("traefik", f"bind {d} -> /certs"),
    ]
    assert [s for s, _ in mounts.file_readers(p, cert)] == ["traefik"]


def test_host_wide_binds_are_not_readers(tmp_path):
    key, _, d = certs(tmp_path)
    p = project(tmp_path, [
        Service("cadvisor", "gcr.io/cadvisor/cadvisor", None, None, mounts=[Mount("bind", "/rootfs", True, "/")]),
        Service("backup", "img", None, "0", mounts=[Mount("bind", "/project", True, str(tmp_path))]),
        Service("gw", "img", None, "101", mounts=[Mount("bind", "/certs", True, d)]),
    ])
    assert [s for s, _ in mounts.file_readers(p, key)] == ["gw"]


def test_file_readers_follow_a_symlinked_directory(tmp_path):
    real = tmp_path / "real-certs"
    real.mkdir()
    (tmp_path / "secrets").mkdir()
    os.symlink(real, tmp_path / "secrets" / "certs")
    p = project(tmp_path, [Service("gw", "img", None, "5", mounts=[Mount("bind", "/c", True, str(real))])])
    assert [s for s, _ in mounts.file_readers(p, str(tmp_path / "secrets/certs/key.pem"))] == ["gw"]


def test_file_readers_ignore_bad_input(tmp_path):
    p = project(tmp_path, [Service("s", "img", None, None, mounts=[Mount("bind", "/x", True, None),
                                                                   Mount("tmpfs", "/t", False, None)],
                                   secrets=[SecretRef("undeclared", "/run/secrets/undeclared")])])
    assert mounts.file_readers(p, str(tmp_path / "key.pem")) == []


# ---------------------------------------------------------------------------------------------
# Owner and mode from the readers


def ident(uid, gid, groups=()):
    return identity.Identity(uid, gid, "user", "", tuple(groups))


def test_file_access_single_reader_or_same_uid():
    a = identity.file_access({"gw": ident(101, 101)})
    assert (a.uid, a.gid, a.mode, a.shared) == (101, 101, 0o400, False)
    a = identity.file_access({"a": ident(1000, 1000), "b": ident(1000, 0)})
    assert (a.uid, a.gid, a.mode, a.shared) == (1000, 1000, 0o400, False)


def test_file_access_shared_group():
    # Same primary gid.
    a = identity.file_access({"a": ident(1000, 0), "b": ident(472, 0)})
    assert (a.uid, a.gid, a.mode, a.shared, a.hint) == (0, 0, 0o440, True, "")
    # Through group_add.
    a = identity.file_access({"a": ident(1000, 1000), "b": ident(472, 472, [1000])})
    assert (a.uid, a.gid) == (0, 1000) and a.hint == ""
    # A root reader reads through the owner bits: it needs no group.
    a = identity.file_access({"a": ident(0, 0), "b": ident(101, 101)})
    assert (a.uid, a.gid, a.mode) == (0, 101, 0o440) and a.hint == ""


def test_file_access_without_a_common_group_names_who_needs_group_add():
    a = identity.file_access({"b": ident(2000, 2000), "a": ident(1000, 1000), "c": ident(3000, 3000)})
    assert (a.uid, a.gid, a.mode) == (0, 1000, 0o440)
    assert "group_add: ['1000'] to b, c" in a.hint


def test_file_access_no_reader():
    a = identity.file_access({})
    assert (a.uid, a.gid, a.mode, a.readers) == (0, 0, 0o400, ())


def test_derive_owner_single_reader_through_the_table(tmp_path):
    key, cert, d = certs(tmp_path)
    p = project(tmp_path, [
        Service("traefik", "traefik:v3.0", None, None, mounts=[Mount("bind", "/certs", True, d)]),
        Service("kc", "quay.io/keycloak/keycloak:25.0", None, None, mounts=[
            Mount("bind", "/opt/keycloak/conf/tls.crt", True, cert)]),
    ])
    out = tls_files.derive_owner(p, key, cert, resolver())
    assert (out.result["owner"], out.result["group"], out.result["key_mode"]) == (0, 0, "0400")
    assert [r["service"] for r in out.result["key_readers"]] == ["traefik"]
    assert [(r["service"], r["uid"], r["source"]) for r in out.result["cert_readers"]] == [
        ("kc", 1000, "image-table"), ("traefik", 0, "image-table")]
    assert out.warnings == [] and not out.changed


def test_derive_owner_several_readers_share_a_group(tmp_path):
    key, cert, d = certs(tmp_path)
    p = project(tmp_path, [
        Service("gw", "nginx", None, "101:101", mounts=[Mount("bind", "/k", True, key)]),
        Service("kc", "quay.io/keycloak/keycloak:25.0", None, None, group_add=["101"],
                mounts=[Mount("bind", "/certs", True, d)]),
    ])
    out = tls_files.derive_owner(p, key, cert, resolver())
    r = out.result
    assert (r["owner"], r["group"], r["key_mode"], r["shared"], r["hint"]) == (0, 101, "0440", True, "")
    assert out.warnings == []


def test_derive_owner_warns_without_common_group_and_for_unresolved_readers(tmp_path):
    key, cert, d = certs(tmp_path)
    p = project(tmp_path, [
        Service("gw", "nginx", None, "101:101", mounts=[Mount("bind", "/k", True, key)]),
        Service("custom", "myorg/proxy:1", None, None, mounts=[Mount("bind", "/certs", True, d)]),
        Service("grafana", "grafana/grafana:11", None, None, mounts=[Mount("bind", "/certs", True, d)]),
    ])
    out = tls_files.derive_owner(p, key, cert, resolver())
    # custom is unresolved (root, reads through the owner bits); grafana 472:0 and gw 101:101 share no
    # group: the first non-root reader's gid is used and gw is told to add it.
    assert (out.result["owner"], out.result["group"], out.result["key_mode"]) == (0, 0, "0440")
    assert any("group_add: ['0'] to gw" in w for w in out.warnings)
    assert any("service custom: nothing says which user it runs as" in w for w in out.warnings)
    # An override settles the unknown image.
    out = tls_files.derive_owner(p, key, cert, resolver(overrides={"custom": "101:101"}))
    assert not any("custom" in w for w in out.warnings)


def test_derive_owner_without_readers_warns(tmp_path):
    key, cert, _ = certs(tmp_path)
    out = tls_files.derive_owner(project(tmp_path, [Service("s", "img", None, "1")]), key, cert, resolver())
    assert (out.result["owner"], out.result["group"], out.result["key_mode"]) == (0, 0, "0400")
    assert "no service mounts" in out.warnings[0] and "tls_key_owner" in out.warnings[0]


# ---------------------------------------------------------------------------------------------
# File work: requests, OSError turned into clear messages


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca") / "ca"
    out, cert = tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(d), "key_type": "ecdsa"}))
    assert out.changed and cert is not None
    return d


def test_ensure_ca_keeps_an_existing_ca(ca_dir):
    out, cert = tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(ca_dir), "key_type": "ecdsa"}))
    assert not out.changed and not out.result["created"] and cert is not None


def test_leaf_request_defaults_and_bad_values(tmp_path, ca_dir):
    req = tls_files.LeafRequest.from_options({"project_dir": str(tmp_path), "ca_path": str(ca_dir),
                                              "names": ["a.home.arpa"]})
    assert req.key_path == str(tmp_path / "secrets/certs/key.pem") and req.key_mode == 0o600
    assert (req.uid, req.gid) == (-1, -1)
    with pytest.raises(HyHomeError, match="regenerate"):
        tls_files.LeafRequest.from_options({"project_dir": str(tmp_path), "names": ["a.home.arpa"],
                                            "regenerate": "sometimes"})
    with pytest.raises(HyHomeError, match="state must be"):
        tls_files.run_local_ca({"state": "maybe"}, run=None)


LONG = "x" * 300     # a path component over NAME_MAX: every file call fails with ENAMETOOLONG


def test_leaf_oserror_is_a_clear_error(tmp_path, ca_dir):
    proj = tmp_path / "proj"
    proj.mkdir()
    req = tls_files.LeafRequest.from_options({"project_dir": str(proj), "ca_path": str(ca_dir),
                                              "certs_dir": str(proj / LONG), "names": ["a.home.arpa"],
                                              "key_type": "ecdsa"})
    for check in (False, True):
        with pytest.raises(HyHomeError, match=r"^leaf certificate: /.*xxx: File name too long$"):
            tls_files.ensure_leaf(req, check=check)
    assert os.listdir(proj) == []


def test_ca_oserror_is_a_clear_error(tmp_path):
    with pytest.raises(HyHomeError, match=r"^local CA: /.*xxx: File name too long$"):
        tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(tmp_path / LONG), "key_type": "ecdsa"}))


def test_stale_temps_of_every_written_file_are_removed_and_only_ours(tmp_path, ca_dir):
    """A run killed inside atomic_write leaves ``.<name>.tmp.hyhome-<hex>``: the next write of that file
    removes it, for the key, the certificate and the CA copy alike; a user's look-alike stays."""
    certs = tmp_path / "proj" / "secrets" / "certs"
    certs.mkdir(parents=True)
    ours = [f".{n}{fileops.TEMP_MARK}0123456789ab" for n in ("key.pem", "cert.pem", tls.CA_CERT_FILE)]
    theirs = [f".{tls.CA_CERT_FILE}.tmp-old", f".{tls.CA_CERT_FILE}{fileops.TEMP_MARK}notours"]
    for name in ours + theirs:
        (certs / name).write_bytes(b"partial")
    req = tls_files.LeafRequest.from_options({"project_dir": str(tmp_path / "proj"), "ca_path": str(ca_dir),
                                              "names": ["a.home.arpa"], "key_type": "ecdsa"})
    assert tls_files.ensure_leaf(req).changed
    assert sorted(os.listdir(certs)) == sorted(["cert.pem", "key.pem", tls.CA_CERT_FILE, *theirs])


def test_stale_ca_temps_are_removed_when_the_ca_is_created(tmp_path):
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)
    for name in (tls.CA_KEY_FILE, tls.CA_CERT_FILE):
        (d / f".{name}{fileops.TEMP_MARK}0123456789ab").write_bytes(b"partial")
    assert tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(d), "key_type": "ecdsa"}))[0].changed
    assert sorted(os.listdir(d)) == sorted([tls.CA_KEY_FILE, tls.CA_CERT_FILE, tls_files.CA_LOCK_FILE])


def _create_ca(path, barrier, results):
    barrier.wait()
    out, cert = tls_files.ensure_ca(tls_files.CARequest.from_options({"path": path, "key_type": "ecdsa"}))
    results.put((out.changed, out.result["created"], tls.cert_fingerprint(cert)))


def test_two_concurrent_runs_on_a_new_ca_directory_make_one_ca(tmp_path, monkeypatch):
    """Both runs see no CA; one creates it, the other waits for the lock, then keeps that CA."""
    real = tls.generate_key

    def slow_key(*args, **kw):     # widen the window in which both runs would write (no timing asserted)
        time.sleep(0.5)
        return real(*args, **kw)

    monkeypatch.setattr(tls, "generate_key", slow_key)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    path = str(tmp_path / "ca")
    procs = [ctx.Process(target=_create_ca, args=(path, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = sorted(results.get(timeout=5) for _ in procs)
    assert [(changed, created) for changed, created, _ in got] == [(False, False), (True, True)]
    on_disk = tls.load_cert((tmp_path / "ca" / tls.CA_CERT_FILE).read_bytes())
    assert {fp for _, _, fp in got} == {tls.cert_fingerprint(on_disk)}
    assert not [n for n in os.listdir(path) if n.endswith(".bak")]


def test_a_ca_lock_file_that_is_a_link_is_refused(tmp_path):
    d = tmp_path / "ca"
    d.mkdir(mode=0o700)
    (d / tls_files.CA_LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HyHomeError, match=r"^local CA: .*hyhome-ca.lock: Too many levels of symbolic links$"):
        tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(d), "key_type": "ecdsa"}))
    assert not (tmp_path / "elsewhere").exists() and os.listdir(d) == [tls_files.CA_LOCK_FILE]


def test_a_full_disk_names_the_file(tmp_path, ca_dir, monkeypatch):
    """write/fsync fail with ENOSPC and no file name; the message names the file being written."""
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileops.os, "fsync", full)
    certs = tmp_path / "proj" / "secrets" / "certs"
    req = tls_files.LeafRequest.from_options({"project_dir": str(tmp_path / "proj"), "ca_path": str(ca_dir),
                                              "names": ["a.home.arpa"], "key_type": "ecdsa"})
    with pytest.raises(HyHomeError) as err:
        tls_files.ensure_leaf(req)
    assert err.value.msg == f"leaf certificate: {certs / 'key.pem'}: No space left on device"
    assert os.listdir(certs) == []
    with pytest.raises(HyHomeError) as err:
        tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(tmp_path / "new"), "key_type": "ecdsa"}))
    assert err.value.msg == f"local CA: {tmp_path / 'new' / tls.CA_KEY_FILE}: No space left on device"


def test_trust_commands_go_through_the_runner(tmp_path, ca_dir):
    calls = []

    def run(argv):
        calls.append(argv)
        return 1, "", "boom"

    store = tls.SYSTEM_TRUST_STORES[0]
    trust = tls_files.TrustStores("hyhome-unit", run, check=False,
                                  which=lambda c: "/bin/" + c if c == store.update_cmd[0] else None)
    # Redirect the anchor into tmp_path: the runner fails, which must be a clear error, not a traceback.
    fake = tls.TrustStore(store.family, str(tmp_path / "anchors"), store.suffix, store.update_cmd,
                          str(tmp_path / "bundle.crt"))
    der = tls.pem_certificates_der((ca_dir / "rootCA.pem").read_bytes())[0]
    orig = tls.detect_system_store
    tls.detect_system_store = lambda which: fake
    try:
        with pytest.raises(HyHomeError, match=r"update-ca-certificates failed \(rc=1\): boom"):
            trust.system(der, True)
    finally:
        tls.detect_system_store = orig
    assert calls == [list(store.update_cmd)] and (tmp_path / "anchors/hyhome-unit.crt").exists()


# ---------------------------------------------------------------------------------------------
# Modules as Ansible runs them


def run_module(module, args, tmp_path, check=False):
    argfile = tmp_path / f"args-{module}-{os.urandom(4).hex()}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    proc = subprocess.run([sys.executable, str(MODULES / f"{module}.py"), str(argfile)],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    out = proc.stdout.strip()
    assert out, proc.stderr
    result = json.loads(out)
    result["_stdout"] = out
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return result


def test_tls_certificate_module_oserror_is_a_clean_failure(tmp_path, ca_dir):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run_module("tls_certificate", {"project_dir": str(proj), "ca_path": str(ca_dir),
                                         "certs_dir": str(proj / LONG), "names": ["a.home.arpa"], "key_type": "ecdsa"},
                     tmp_path)
    assert res["failed"] and res["msg"].startswith("leaf certificate: /") and "too long" in res["msg"]
    assert "Traceback" not in res["_stdout"] and "\n" not in res["msg"]


def test_local_ca_module_oserror_is_a_clean_failure(tmp_path):
    res = run_module("local_ca", {"path": str(tmp_path / LONG), "key_type": "ecdsa"}, tmp_path)
    assert res["failed"] and res["msg"].startswith("local CA: /")
    assert "Traceback" not in res["_stdout"] and "\n" not in res["msg"]


COMPOSE = """
services:
  gateway:
    image: {busybox}
    user: "101:101"
    volumes:
      - ./secrets/certs/cert.pem:/tls/cert.pem:ro
      - ./secrets/certs/key.pem:/tls/key.pem:ro
  proxy:
    image: {busybox}
    user: app
    group_add: ["101"]
    volumes:
      - ./secrets/certs:/certs:ro
  web:
    image: {busybox}
    user: "1000"
"""


@pytest.mark.docker
def test_tls_owner_module_on_a_compose_project(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "compose.yaml").write_text(COMPOSE.format(busybox=BUSYBOX))
    res = run_module("tls_owner", {"project_dir": str(proj)}, tmp_path, check=True)
    assert not res.get("failed"), res
    assert not res["changed"]
    assert (res["owner"], res["group"], res["key_mode"], res["shared"]) == (0, 101, "0440", True)
    assert [(r["service"], r["uid"], r["gid"], r["source"]) for r in res["key_readers"]] == [
        ("gateway", 101, 101, "user"), ("proxy", 1000, 1000, "user")]
    # Without the shared reader, the gateway alone owns it.
    (proj / "compose.yaml").write_text(COMPOSE.format(busybox=BUSYBOX).split("  proxy:")[0])
    res = run_module("tls_owner", {"project_dir": str(proj)}, tmp_path)
    assert (res["owner"], res["group"], res["key_mode"], res["shared"]) == (101, 101, "0400", False)


def test_tls_owner_module_bad_project_is_a_clean_failure(tmp_path):
    res = run_module("tls_owner", {"project_dir": str(tmp_path / "missing")}, tmp_path)
    assert res["failed"] and "tls_key_owner" in res["msg"] and "Traceback" not in res["_stdout"]
