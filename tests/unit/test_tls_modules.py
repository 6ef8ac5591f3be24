"""The local_ca and tls_certificate modules, run as Ansible runs them (args file, JSON result).

Checks what only the adapters do: check mode writes nothing, files and modes, idempotence,
re-issue through the module, owner/mode drift, bad input fails cleanly with nothing written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "plugins" / "modules"
NAMES = ["home.arpa", "*.home.arpa", "localhost", "127.0.0.1", "::1"]


def run(module, args, tmp_path, check=False, diff=False, env=None):
    argfile = tmp_path / f"args-{module}-{os.urandom(4).hex()}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check,
                                                           "_ansible_diff": diff}}))
    proc = subprocess.run([sys.executable, str(MODULES / f"{module}.py"), str(argfile)],
                          capture_output=True, text=True, check=False, cwd=tmp_path, env=env)
    argfile.unlink()
    out = proc.stdout.strip()
    assert out, proc.stderr
    result = json.loads(out)
    result["_stdout"] = out
    # ansible-core 2.19 reports warnings as structured events.
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return result


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


@pytest.fixture
def ca_dir(tmp_path):
    d = tmp_path / "ca"
    res = run("local_ca", {"path": str(d), "key_type": "ecdsa"}, tmp_path)
    assert res["changed"] and res["created"], res
    return d


def leaf_args(tmp_path, ca_dir, **kw):
    return {"project_dir": str(tmp_path / "proj"), "ca_path": str(ca_dir), "names": NAMES, **kw}


# ------------------------------------------------------------------------------------------
# local_ca


def test_ca_check_mode_writes_nothing_then_creates_then_keeps(tmp_path):
    d = tmp_path / "ca"
    res = run("local_ca", {"path": str(d)}, tmp_path, check=True, diff=True)
    assert res["changed"] and res["created"] and not d.exists()
    assert "rsa-3072" in res["diff"]["after"]
    res = run("local_ca", {"path": str(d)}, tmp_path, diff=True)
    assert res["changed"] and res["created"] and not res["regenerated"]
    assert mode(d) == 0o700
    assert mode(d / "rootCA-key.pem") == 0o400
    assert mode(d / "rootCA.pem") == 0o644
    assert res["ca"]["key"] == "rsa-3072" and res["ca"]["days_left"] >= 3652
    assert "PRIVATE KEY" not in res["_stdout"]
    again = run("local_ca", {"path": str(d)}, tmp_path, diff=True)
    assert not again["changed"] and not again["created"]
    assert again["ca"]["fingerprint_sha256"] == res["ca"]["fingerprint_sha256"]
    assert again["diff"]["before"] == again["diff"]["after"]


def test_ca_is_kept_with_drift_reported(ca_dir, tmp_path):
    before = (ca_dir / "rootCA.pem").read_bytes()
    res = run("local_ca", {"path": str(ca_dir), "key_type": "rsa", "organization": "Other"}, tmp_path)
    assert not res["changed"]
    assert len(res["drift"]) == 2
    assert any("differs from the request" in w for w in res["warnings"])
    assert (ca_dir / "rootCA.pem").read_bytes() == before


def test_ca_regenerate_fail_and_always(ca_dir, tmp_path):
    res = run("local_ca", {"path": str(ca_dir), "regenerate": "fail"}, tmp_path)
    assert res["failed"] and "regenerate=fail" in res["msg"]
    old = (ca_dir / "rootCA.pem").read_bytes()
    res = run("local_ca", {"path": str(ca_dir), "regenerate": "always"}, tmp_path)
    assert res["changed"] and res["regenerated"]
    assert (ca_dir / "rootCA.pem").read_bytes() != old
    backups = sorted(p.name for p in ca_dir.glob("*.bak"))
    assert len(backups) == 2 and backups[0].startswith("rootCA-key.pem.")
    assert mode(ca_dir / "rootCA-key.pem") == 0o400


def test_ca_warning_when_it_expires_soon(tmp_path):
    d = tmp_path / "ca"
    res = run("local_ca", {"path": str(d), "key_type": "ecdsa", "validity_days": 100}, tmp_path)
    assert res["ca"]["expires_soon"]
    assert any("THE LOCAL CA EXPIRES in 99 days" in w or "THE LOCAL CA EXPIRES in 100 days" in w
               for w in res["warnings"])
    res = run("local_ca", {"path": str(d), "key_type": "ecdsa", "validity_days": 100, "regenerate": "fail"},
              tmp_path)
    assert res["failed"] and "EXPIRES" in res["msg"]


def test_incomplete_or_mismatched_ca_fails_and_writes_nothing(ca_dir, tmp_path):
    key = ca_dir / "rootCA-key.pem"
    key.chmod(0o600)
    key.write_bytes(tls.key_to_pem(tls.generate_key("ecdsa")))
    before = listing(ca_dir)
    res = run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path)
    assert res["failed"] and "does not belong to the CA certificate" in res["msg"]
    key.unlink()
    res = run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path)
    assert res["failed"] and "incomplete" in res["msg"] and "rootCA-key.pem is missing" in res["msg"]
    assert listing(ca_dir) == [p for p in before if p != "rootCA-key.pem"]


def test_ca_mode_drift_is_fixed(ca_dir, tmp_path):
    (ca_dir / "rootCA-key.pem").chmod(0o644)
    res = run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path, check=True)
    assert res["changed"] and mode(ca_dir / "rootCA-key.pem") == 0o644
    res = run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path)
    assert res["changed"] and not res["created"] and mode(ca_dir / "rootCA-key.pem") == 0o400


def test_ca_refuses_system_dirs(tmp_path):
    res = run("local_ca", {"path": "/etc"}, tmp_path, check=True)
    assert res["failed"] and "refusing CA directory" in res["msg"]


def test_ca_name_constraints_option(tmp_path):
    d = tmp_path / "ca"
    res = run("local_ca", {"path": str(d), "key_type": "ecdsa", "permitted_dns_domains": ["home.arpa"],
                           "permitted_ip_ranges": ["127.0.0.0/8"]}, tmp_path)
    assert res["changed"]
    out = run("tls_certificate", leaf_args(tmp_path, d, names=["evil.test"]), tmp_path)
    assert out["failed"] and "name constraints do not permit DNS:evil.test" in out["msg"]
    assert not (tmp_path / "proj").exists()


def test_trusted_needs_the_certificate(tmp_path):
    args = {"state": "trusted", "certificate_path": str(tmp_path / "none.pem")}
    res = run("local_ca", args, tmp_path, check=True)  # first run in check mode: the copy is not there yet
    assert res["changed"] and "would be installed" in res["msg"]
    res = run("local_ca", args, tmp_path)
    assert res["failed"] and "does not exist" in res["msg"]
    (tmp_path / "junk.pem").write_text("junk")
    res = run("local_ca", {**args, "certificate_path": str(tmp_path / "junk.pem")}, tmp_path, check=True)
    assert res["failed"] and "holds no PEM certificate" in res["msg"]


def test_trust_check_mode_plans_the_system_store(ca_dir, tmp_path):
    """Read-only on this host: check mode inspects the store and the bundle, changes nothing."""
    res = run("local_ca", {"state": "trusted", "path": str(ca_dir), "trust_name": "hyhome-unit-test-never-installed"},
              tmp_path, check=True, diff=True)
    system = res["trust"]["system"]
    assert res["changed"] and system["changed"] and not system["in_bundle"]
    assert system["anchor"].endswith("/hyhome-unit-test-never-installed.crt")
    assert res["fingerprint_sha256"] in res["diff"]["after"]
    assert not os.path.exists(system["anchor"])
    res = run("local_ca", {"state": "untrusted", "trust_name": "hyhome-unit-test-never-installed"}, tmp_path,
              check=True)
    assert not res["changed"]


def test_trust_needs_no_cryptography(ca_dir, tmp_path):
    """Hosts that only trust the CA may lack the cryptography package."""
    fake = tmp_path / "nocrypto" / "cryptography"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('cryptography hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = run("local_ca", {"state": "trusted", "path": str(ca_dir), "trust_name": "hyhome-unit-test-x"}, tmp_path,
              check=True, env=env)
    assert res["changed"] and res["trust"]["system"]["changed"] and "ca" not in res
    res = run("local_ca", {"path": str(ca_dir)}, tmp_path, check=True, env=env)
    assert res["failed"] and "cryptography" in res["msg"]


# ------------------------------------------------------------------------------------------
# tls_certificate


def test_leaf_check_mode_then_issue_then_idempotent(ca_dir, tmp_path):
    args = leaf_args(tmp_path, ca_dir)
    res = run("tls_certificate", args, tmp_path, check=True, diff=True)
    assert res["changed"] and res["issued"]
    assert res["reason_codes"] == ["key_missing", "cert_missing"]
    assert not (tmp_path / "proj").exists()
    res = run("tls_certificate", args, tmp_path, diff=True)
    certs = tmp_path / "proj" / "secrets" / "certs"
    assert res["changed"] and res["issued"] and res["new_key"]
    assert listing(certs) == ["cert.pem", "key.pem", "rootCA.pem"]
    assert mode(certs / "key.pem") == 0o600
    assert mode(certs / "cert.pem") == 0o644 and mode(certs / "rootCA.pem") == 0o644
    assert (certs / "rootCA.pem").read_bytes() == (ca_dir / "rootCA.pem").read_bytes()
    cert = tls.load_cert((certs / "cert.pem").read_bytes())
    assert res["fingerprint_sha256"] == tls.cert_fingerprint(cert)
    assert res["not_after"] == cert.not_valid_after_utc.isoformat()
    assert res["ca_fingerprint_sha256"] == tls.cert_fingerprint(tls.load_cert((ca_dir / "rootCA.pem").read_bytes()))
    key_text = (certs / "key.pem").read_text()
    assert key_text.splitlines()[1] not in res["_stdout"]
    assert "PRIVATE" not in res["_stdout"]
    again = run("tls_certificate", args, tmp_path, check=True)
    assert not again["changed"] and again["reasons"] == []
    again = run("tls_certificate", args, tmp_path)
    assert not again["changed"] and not again["issued"]
    assert again["fingerprint_sha256"] == res["fingerprint_sha256"]


def test_leaf_reissued_for_new_names_reusing_the_key(ca_dir, tmp_path):
    first = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir, names=[*NAMES, "gw.home.arpa"]), tmp_path, diff=True)
    assert res["changed"] and res["reason_codes"] == ["sans"] and not res["new_key"]
    assert res["public_key_fingerprint_sha256"] == first["public_key_fingerprint_sha256"]
    assert "DNS:gw.home.arpa" in res["diff"]["after"] and "DNS:gw.home.arpa" not in res["diff"]["before"]
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir, names=NAMES, reuse_key=False), tmp_path)
    assert res["new_key"] and res["public_key_fingerprint_sha256"] != first["public_key_fingerprint_sha256"]


def test_leaf_check_mode_reports_reasons_and_keeps_files(ca_dir, tmp_path):
    run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    certs = tmp_path / "proj" / "secrets" / "certs"
    before = {p: (certs / p).read_bytes() for p in listing(certs)}
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir, key_type="ecdsa", names=["x.home.arpa"]),
              tmp_path, check=True)
    assert res["changed"] and set(res["reason_codes"]) == {"key_type", "sans", "profile"}
    assert {p: (certs / p).read_bytes() for p in listing(certs)} == before


def test_leaf_renewed_when_expiring(ca_dir, tmp_path):
    ca_cert = tls.load_cert((ca_dir / "rootCA.pem").read_bytes())
    ca_key = tls.load_key((ca_dir / "rootCA-key.pem").read_bytes())
    prof = tls.LeafProfile.from_names(NAMES, validity_days=30, renew_before_days=5)
    key = tls.generate_key("rsa", 2048)
    old = tls.issue_leaf(prof, key, ca_cert, ca_key, tls.now_utc() - dt.timedelta(days=20))
    certs = tmp_path / "proj" / "secrets" / "certs"
    certs.mkdir(parents=True)
    (certs / "cert.pem").write_bytes(tls.cert_to_pem(old))
    (certs / "key.pem").write_bytes(tls.key_to_pem(key))
    (certs / "key.pem").chmod(0o600)
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert res["changed"] and res["reason_codes"][0] == "expiring" and "renew_before_days=30" in res["reasons"][0]
    assert dt.datetime.fromisoformat(res["not_after"]) > tls.now_utc() + dt.timedelta(days=800)


def test_leaf_reissued_when_the_ca_changes(ca_dir, tmp_path):
    run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa", "regenerate": "always"}, tmp_path)
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert res["changed"] and res["reason_codes"] == ["issuer"]
    certs = tmp_path / "proj" / "secrets" / "certs"
    assert (certs / "rootCA.pem").read_bytes() == (ca_dir / "rootCA.pem").read_bytes()


def test_leaf_regenerate_values(ca_dir, tmp_path):
    run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    changed_names = leaf_args(tmp_path, ca_dir, names=["other.home.arpa"])
    res = run("tls_certificate", {**changed_names, "regenerate": "never"}, tmp_path)
    assert not res["changed"] and res["kept"] and res["reason_codes"] == ["sans"]
    res = run("tls_certificate", {**changed_names, "regenerate": "fail"}, tmp_path)
    assert res["failed"] and "would be re-issued" in res["msg"]
    res = run("tls_certificate", {**leaf_args(tmp_path, ca_dir), "regenerate": "always"}, tmp_path)
    assert res["changed"] and res["reason_codes"] == ["always"]


def test_leaf_owner_group_mode_and_drift(ca_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test chowns files: run the unit tests as root (CI does)")
    args = leaf_args(tmp_path, ca_dir, owner="1000", group="1000", mode="0400")
    res = run("tls_certificate", args, tmp_path)
    assert res["changed"]
    key = tmp_path / "proj" / "secrets" / "certs" / "key.pem"
    st = os.stat(key)
    assert (st.st_uid, st.st_gid, mode(key)) == (1000, 1000, 0o400)
    os.chown(key, 0, 0)
    key.chmod(0o644)
    res = run("tls_certificate", args, tmp_path)
    assert res["changed"] and not res["issued"]
    st = os.stat(key)
    assert (st.st_uid, st.st_gid, mode(key)) == (1000, 1000, 0o400)
    assert not run("tls_certificate", args, tmp_path)["changed"]


def test_no_temp_files_left(ca_dir, tmp_path):
    run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert not [p for p in (tmp_path / "proj").rglob(".*tmp*")]
    assert not [p for p in ca_dir.rglob(".*tmp*")]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"names": ["bad..name"]}, "invalid certificate name 'bad..name'"),
        ({"names": ["home.*.arpa"]}, "wildcard must be the whole left-most label"),
        ({"names": ["*.arpa"]}, "at least two labels"),
        ({"names": []}, "no certificate names"),
        ({"validity_days": 900}, "over the 825-day limit"),
        ({"mode": "rw"}, "invalid mode"),
        ({"owner": "no-such-user-hyhome"}, "unknown owner"),
        ({"project_dir": None}, "give project_dir"),
        ({"cert_path": "/etc/cert.pem"}, "refusing"),
    ],
)
def test_leaf_bad_input_fails_and_writes_nothing(ca_dir, tmp_path, override, fragment):
    args = {k: v for k, v in {**leaf_args(tmp_path, ca_dir), **override}.items() if v is not None}
    res = run("tls_certificate", args, tmp_path)
    assert res.get("failed"), res
    assert fragment in res["msg"]
    assert "Traceback" not in res["_stdout"]
    assert not (tmp_path / "proj").exists()


def test_leaf_long_validity_with_override(ca_dir, tmp_path):
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir, validity_days=900, allow_long_validity=True), tmp_path)
    assert res["changed"]
    assert (dt.datetime.fromisoformat(res["not_after"]) - dt.datetime.fromisoformat(res["not_before"])).days == 900


def test_leaf_fails_on_unreadable_or_mismatched_ca(ca_dir, tmp_path):
    key = ca_dir / "rootCA-key.pem"
    key.chmod(0o600)
    original = key.read_bytes()
    key.write_bytes(b"not a key")
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert res["failed"] and "cannot read the CA key" in res["msg"]
    key.write_bytes(tls.key_to_pem(tls.generate_key("ecdsa")))
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert res["failed"] and "does not belong to the CA certificate" in res["msg"]
    key.write_bytes(original)
    (ca_dir / "rootCA.pem").unlink()
    res = run("tls_certificate", leaf_args(tmp_path, ca_dir), tmp_path)
    assert res["failed"] and "create the CA first" in res["msg"]
    assert not (tmp_path / "proj").exists()


def test_leaf_refuses_a_ca_inside_the_project(tmp_path):
    proj = tmp_path / "proj"
    res = run("local_ca", {"path": str(proj / "ca"), "key_type": "ecdsa"}, tmp_path)
    assert res["changed"]
    res = run("tls_certificate", {"project_dir": str(proj), "ca_path": str(proj / "ca"), "names": NAMES}, tmp_path)
    assert res["failed"] and "inside the project" in res["msg"]
    assert not (proj / "secrets").exists()


def test_explicit_paths_and_no_ca_copy(ca_dir, tmp_path):
    out = tmp_path / "out"
    res = run("tls_certificate", {"ca_path": str(ca_dir), "names": ["gw.home.arpa"], "cert_path": str(out / "a.crt"),
                                  "key_path": str(out / "a.key"), "ca_copy_path": "", "key_type": "ecdsa"}, tmp_path)
    assert res["changed"] and res["ca_copy_path"] is None
    assert listing(out) == ["a.crt", "a.key"]


FAKE_CERTUTIL = r"""#!/bin/sh
# Minimal stand-in for NSS certutil: one file per nickname in the database directory.
db= nick= in= op=
while [ $# -gt 0 ]; do
  case "$1" in
    -L|-A|-D) op=$1 ;;
    -d) db=${2#sql:}; db=${db#dbm:}; shift ;;
    -n) nick=$2; shift ;;
    -i) in=$2; shift ;;
  esac
  shift
done
echo "$op $nick" >> "$db/calls.log"
case "$op" in
  -L) [ -f "$db/$nick.pem" ] || { echo "certutil: Could not find cert: $nick" >&2; exit 255; }; cat "$db/$nick.pem" ;;
  -A) cp "$in" "$db/$nick.pem" ;;
  -D) rm "$db/$nick.pem" ;;
esac
"""


def test_nss_install_and_uninstall_with_certutil(ca_dir, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "certutil").write_text(FAKE_CERTUTIL)
    (bindir / "certutil").chmod(0o755)
    db = tmp_path / "nssdb"
    db.mkdir()
    (db / "cert9.db").write_bytes(b"")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    args = {"state": "trusted", "path": str(ca_dir), "trust_stores": ["nss"], "nss_databases": [str(db)]}
    res = run("local_ca", args, tmp_path, check=True, env=env)
    assert res["changed"] and res["trust"]["nss"] == [{"database": str(db), "changed": True}]
    assert not (db / "hyhome-local-ca.pem").exists()
    res = run("local_ca", args, tmp_path, env=env)
    assert res["changed"]
    assert (db / "hyhome-local-ca.pem").read_bytes() == (ca_dir / "rootCA.pem").read_bytes()
    assert "-A hyhome-local-ca" in (db / "calls.log").read_text()
    assert not run("local_ca", args, tmp_path, env=env)["changed"]
    # A different CA under the same nickname is replaced.
    run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa", "regenerate": "always"}, tmp_path)
    res = run("local_ca", args, tmp_path, env=env)
    assert res["changed"] and (db / "hyhome-local-ca.pem").read_bytes() == (ca_dir / "rootCA.pem").read_bytes()
    res = run("local_ca", {**args, "state": "untrusted"}, tmp_path, env=env)
    assert res["changed"] and not (db / "hyhome-local-ca.pem").exists()
    assert not run("local_ca", {**args, "state": "untrusted"}, tmp_path, env=env)["changed"]


def test_check_mode_before_the_ca_exists(tmp_path):
    """`--check` on a new machine: the CA task only pretended, the leaf task must not fail."""
    res = run("tls_certificate", leaf_args(tmp_path, tmp_path / "no-ca"), tmp_path, check=True)
    assert res["changed"] and res["reason_codes"] == ["ca_missing"]
    assert not (tmp_path / "proj").exists() and not (tmp_path / "no-ca").exists()
    res = run("tls_certificate", leaf_args(tmp_path, tmp_path / "no-ca"), tmp_path)
    assert res["failed"] and "create the CA first" in res["msg"]
