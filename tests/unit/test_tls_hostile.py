"""Hostile file-system states and bad input for the TLS modules (issue 13).

Each refusal must be one clear line, a failed result, no traceback, and an unchanged file tree
(contents, modes, owners and link targets hashed before and after), CA directory included.
Sweeps run against the pure core (``core_refuses``); each kind of refusal also runs once through
the module as Ansible runs it (``run`` + ``refused``): a module start costs about half a second.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import fstree
import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls, tls_files
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "plugins" / "modules"
NAMES = ["home.arpa", "localhost"]
OTHER_UID = 1000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to another uid: run as root (CI does)")


def run(module, args, tmp_path, check=False, diff=False):
    argfile = tmp_path.parent / f"args-{tmp_path.name}-{os.urandom(4).hex()}.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check,
                                                           "_ansible_diff": diff}}))
    proc = subprocess.run([sys.executable, str(MODULES / f"{module}.py"), str(argfile)],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    argfile.unlink()
    out = proc.stdout.strip()
    assert out, proc.stderr
    result = json.loads(out)
    result["_rc"], result["_stdout"], result["_stderr"] = proc.returncode, out, proc.stderr
    return result


tree = fstree.snapshot   # everything observable: content hash, mode, owner, link target, link count


def refused(res, fragment):
    """A clean failure: failed, non-zero exit, one line naming the problem, no traceback."""
    assert res.get("failed"), res
    assert res["_rc"] != 0
    assert fragment in res["msg"], res["msg"]
    assert "\n" not in res["msg"]
    assert "Traceback" not in res["_stdout"] and "Traceback" not in res["_stderr"]


def core_refuses(fn, fragment):
    """``fn()`` raises one HyHomeError line containing ``fragment`` (the message fail_json gets)."""
    with pytest.raises(HyHomeError) as err:
        fn()
    assert fragment in err.value.msg, err.value.msg
    assert "\n" not in err.value.msg


def ensure_leaf(args, check=False):
    return tls_files.ensure_leaf(tls_files.LeafRequest.from_options(args), check=check)


def ensure_ca(path, check=False, **kw):
    return tls_files.ensure_ca(tls_files.CARequest.from_options({"path": str(path), "key_type": "ecdsa", **kw}),
                               check=check)


@pytest.fixture
def ca_dir(tmp_path):
    d = tmp_path / "ca"
    write_ca(d, tls.now_utc() - dt.timedelta(minutes=1), 365)
    assert not ensure_ca(d)[0].changed        # what local_ca keeps as it is
    return d


@pytest.fixture
def proj(tmp_path):
    p = tmp_path / "proj"
    (p / "secrets" / "certs").mkdir(parents=True)
    return p


def leaf(proj, ca_dir, **kw):
    return {"project_dir": str(proj), "ca_path": str(ca_dir), "names": NAMES, "key_type": "ecdsa", **kw}


def write_ca(d: Path, not_before: dt.datetime, days: int) -> None:
    """A CA valid from ``not_before`` for ``days`` days, written as local_ca would."""
    key = tls.generate_key("ecdsa")
    cert = tls.build_ca(tls.CAProfile(key_type="ecdsa", organizational_unit="t@h", validity_days=days), key,
                        not_before)
    d.mkdir(mode=0o700)
    (d / tls.CA_KEY_FILE).write_bytes(tls.key_to_pem(key))
    (d / tls.CA_KEY_FILE).chmod(0o400)
    (d / tls.CA_CERT_FILE).write_bytes(tls.cert_to_pem(cert))


# ------------------------------------------------------------------------------------------
# 1. Symlinks at the key, the certificate, the CA copy and their directories


def test_symlinked_key_pointing_at_the_ca_key_is_refused_by_the_module(tmp_path, ca_dir, proj):
    os.symlink(ca_dir / tls.CA_KEY_FILE, proj / "secrets" / "certs" / "key.pem")
    before = tree(tmp_path)
    res = run("tls_certificate", leaf(proj, ca_dir, owner=str(OTHER_UID), mode="0440"), tmp_path)
    refused(res, f"refusing key_path {proj}/secrets/certs/key.pem: it is a symlink to {ca_dir}/rootCA-key.pem")
    assert tree(tmp_path) == before          # the CA key kept its owner (root) and mode (0400)


@pytest.mark.parametrize(("name", "option"), [("key.pem", "key_path"), ("cert.pem", "cert_path"),
                                              ("rootCA.pem", "ca_copy_path")])
@pytest.mark.parametrize("target", ["ca key", "outside file", "dangling"])
def test_symlinked_leaf_files_are_refused(tmp_path, ca_dir, proj, name, option, target):
    outside = tmp_path / "outside.pem"
    outside.write_bytes(b"precious\n")
    dest = {"ca key": ca_dir / tls.CA_KEY_FILE, "outside file": outside, "dangling": tmp_path / "nowhere"}[target]
    os.symlink(dest, proj / "secrets" / "certs" / name)
    before = tree(tmp_path)
    for check in (True, False):
        core_refuses(lambda c=check: ensure_leaf(leaf(proj, ca_dir, owner=str(OTHER_UID)), check=c),
                     f"refusing {option} {proj}/secrets/certs/{name}: it is a symlink to {dest}")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("linked", ["secrets", "secrets/certs"])
def test_symlinked_directory_inside_the_project_is_refused(tmp_path, ca_dir, linked):
    proj = tmp_path / "proj"
    outside = tmp_path / "outside"
    outside.mkdir()
    (proj / linked).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, proj / linked)
    before = tree(tmp_path)
    if linked == "secrets":
        refused(run("tls_certificate", leaf(proj, ca_dir), tmp_path),
                f"its directory {proj / linked} is a symlink to {outside}")
    for check in (True, False):
        core_refuses(lambda c=check: ensure_leaf(leaf(proj, ca_dir), check=c),
                     f"its directory {proj / linked} is a symlink to {outside}")
    assert tree(tmp_path) == before


def test_explicit_paths_without_a_project_check_their_own_directory(tmp_path, ca_dir):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "via")
    args = {"ca_path": str(ca_dir), "names": NAMES, "key_type": "ecdsa", "ca_copy_path": "",
            "cert_path": str(tmp_path / "via" / "c.pem"), "key_path": str(tmp_path / "via" / "k.pem")}
    core_refuses(lambda: ensure_leaf(args), f"its directory {tmp_path / 'via'} is a symlink")
    assert os.listdir(real) == []


def test_leaf_files_inside_the_ca_directory_are_refused(tmp_path, ca_dir, proj):
    before = tree(tmp_path)
    refused(run("tls_certificate", leaf(proj, ca_dir, cert_path=str(ca_dir / tls.CA_CERT_FILE)), tmp_path),
            f"refusing cert_path {ca_dir}/rootCA.pem: it is inside the CA directory {ca_dir}")
    for override in ({"key_path": str(ca_dir / "leaf.pem")}, {"ca_copy_path": str(ca_dir / "copy.pem")},
                     {"certs_dir": str(ca_dir / "hosts"), "project_dir": None}):
        args = {k: v for k, v in leaf(proj, ca_dir, **override).items() if v is not None}
        core_refuses(lambda a=args: ensure_leaf(a), f"inside the CA directory {ca_dir}")
    assert tree(tmp_path) == before


def test_a_certs_dir_linked_into_the_ca_directory_is_refused(tmp_path, ca_dir):
    os.symlink(ca_dir, tmp_path / "hosts")
    before = tree(tmp_path)
    core_refuses(lambda: ensure_leaf({"ca_path": str(ca_dir), "certs_dir": str(tmp_path / "hosts"), "names": NAMES}),
                 "inside the CA directory")
    assert tree(tmp_path) == before


def test_owner_and_mode_are_fixed_through_the_file_never_a_link(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"x")
    target.chmod(0o600)
    os.symlink(target, tmp_path / "link")
    with pytest.raises(HyHomeError, match="is a symlink to"):
        tls_files.fix_attrs(str(tmp_path / "link"), "key_path", 0o400, OTHER_UID, OTHER_UID)
    st = os.stat(target)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
    assert tls_files.fix_attrs(str(target), "key_path", 0o400, OTHER_UID, OTHER_UID, check=True) == [
        (f"owner of {target}", "0:0", f"{OTHER_UID}:{OTHER_UID}"), (f"mode of {target}", "0600", "0400")]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600          # check mode changed nothing
    tls_files.fix_attrs(str(target), "key_path", 0o400, OTHER_UID, OTHER_UID)
    st = os.stat(target)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, OTHER_UID, OTHER_UID)


# ------------------------------------------------------------------------------------------
# 2. A leaf key equal to the CA key


def test_a_copy_of_the_ca_key_as_leaf_key_is_refused(tmp_path, ca_dir, proj):
    key = proj / "secrets" / "certs" / "key.pem"
    key.write_bytes((ca_dir / tls.CA_KEY_FILE).read_bytes())
    key.chmod(0o600)
    before = tree(tmp_path)
    refused(run("tls_certificate", leaf(proj, ca_dir), tmp_path),
            f"refusing key_path {key}: it holds the CA's own private key")
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir), check=True), "the CA's own private key")
    assert tree(tmp_path) == before


def test_the_same_key_in_another_format_is_still_the_ca_key(tmp_path, ca_dir, proj):
    ca_key = tls.load_key((ca_dir / tls.CA_KEY_FILE).read_bytes())
    sec1 = ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    (proj / "secrets" / "certs" / "key.pem").write_bytes(sec1)
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir)), "the CA's own private key")


# ------------------------------------------------------------------------------------------
# 6. Hard links, and files that are not small regular files


@pytest.mark.parametrize(("name", "option"), [("key.pem", "key_path"), ("cert.pem", "cert_path"),
                                              ("rootCA.pem", "ca_copy_path")])
def test_hard_linked_leaf_file_is_refused_and_the_outside_inode_keeps_its_owner(tmp_path, ca_dir, proj, name,
                                                                                 option):
    outside = tmp_path / "outside.pem"
    outside.write_bytes(b"precious\n")
    outside.chmod(0o600)
    os.link(outside, proj / "secrets" / "certs" / name)
    before = tree(tmp_path)
    if name == "key.pem":
        refused(run("tls_certificate", leaf(proj, ca_dir, owner=str(OTHER_UID)), tmp_path),
                f"refusing key_path {proj}/secrets/certs/key.pem: it has 2 hard links")
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir, owner=str(OTHER_UID))),
                 f"refusing {option} {proj}/secrets/certs/{name}: it has 2 hard links")
    assert tree(tmp_path) == before and os.stat(outside).st_uid == 0


def test_hard_link_to_the_ca_key_is_refused(tmp_path, ca_dir, proj):
    os.link(ca_dir / tls.CA_KEY_FILE, proj / "secrets" / "certs" / "key.pem")
    before = tree(tmp_path)
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir, owner=str(OTHER_UID))), "hard links")
    refused(run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path),
            f"refusing CA key {ca_dir}/rootCA-key.pem: it has 2 hard links")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge"])
def test_key_that_is_not_a_small_regular_file_is_refused(tmp_path, ca_dir, proj, kind):
    key = proj / "secrets" / "certs" / "key.pem"
    if kind == "fifo":
        os.mkfifo(key)                      # reading it would block forever
    elif kind == "directory":
        key.mkdir()
    else:
        key.write_bytes(b"A" * (tls_files.MAX_PEM_BYTES + 1))
    before = tree(tmp_path)
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir)),
                 "too large for a PEM" if kind == "huge" else "it is not a regular file")
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------
# 4. Modes


@pytest.mark.parametrize("mode", ["0666", "0644", "0604", "0660", "0620", "0700", "0601", "4600", "0200", "0040"])
def test_private_key_modes_that_open_it_up_are_refused(tmp_path, ca_dir, proj, mode):
    if mode == "0666":
        refused(run("tls_certificate", leaf(proj, ca_dir, mode=mode), tmp_path),
                "refusing mode 0666 for a private key")
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir, mode=mode)), f"refusing mode {mode} for a private key")
    assert os.listdir(proj / "secrets" / "certs") == []


@pytest.mark.parametrize("mode", ["0400", "0440", "0600", "0640"])
def test_private_key_modes_allowed(mode):
    assert tls_files.check_key_mode(int(mode, 8)) == int(mode, 8)


@pytest.mark.parametrize("mode", ["0666", "0646", "0664", "2644", "0044"])
def test_certificate_modes_that_let_others_replace_it_are_refused(tmp_path, ca_dir, proj, mode):
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir, cert_mode=mode)),
                 f"refusing cert_mode {mode} for a certificate")
    assert os.listdir(proj / "secrets" / "certs") == []


def test_an_existing_world_readable_key_is_tightened_and_reported(tmp_path, ca_dir, proj):
    args = leaf(proj, ca_dir, mode="0400")
    assert ensure_leaf(args).result["issued"]
    key = proj / "secrets" / "certs" / "key.pem"
    key.chmod(0o666)
    res = run("tls_certificate", args, tmp_path, diff=True)
    assert res["changed"] and not res["issued"]
    assert res["attributes_fixed"] == [f"mode of {key}: 0666 -> 0400"]
    assert f"mode of {key}: 0666" in res["diff"]["before"] and f"mode of {key}: 0400" in res["diff"]["after"]
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o400


# ------------------------------------------------------------------------------------------
# 3. The CA directory and its files


def test_world_writable_ca_directory_is_tightened_and_reported(tmp_path, ca_dir):
    ca_dir.chmod(0o777)
    out, _ = ensure_ca(ca_dir, check=True)
    assert out.changed and out.result["modes_fixed"] == [str(ca_dir)]
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o777          # check mode changed nothing
    res = run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path, diff=True)
    assert res["changed"] and not res["created"] and res["modes_fixed"] == [str(ca_dir)]
    assert f"mode of {ca_dir}: 0777" in res["diff"]["before"]
    assert f"mode of {ca_dir}: 0700" in res["diff"]["after"]
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert not ensure_ca(ca_dir)[0].changed


def test_ca_file_modes_are_fixed_through_the_file(tmp_path, ca_dir):
    (ca_dir / tls.CA_KEY_FILE).chmod(0o644)
    (ca_dir / tls.CA_CERT_FILE).chmod(0o666)
    out, _ = ensure_ca(ca_dir)
    assert sorted(out.result["modes_fixed"]) == sorted([str(ca_dir / tls.CA_KEY_FILE), str(ca_dir / tls.CA_CERT_FILE)])
    assert stat.S_IMODE(os.stat(ca_dir / tls.CA_KEY_FILE).st_mode) == 0o400
    assert stat.S_IMODE(os.stat(ca_dir / tls.CA_CERT_FILE).st_mode) == 0o644


def test_an_empty_existing_ca_directory_is_tightened_when_the_ca_is_created(tmp_path):
    d = tmp_path / "ca"
    d.mkdir()
    d.chmod(0o777)
    out, _ = ensure_ca(d)
    assert out.result["created"] and out.result["modes_fixed"] == [str(d)]
    assert f"mode of {d}: 0777" in out.diff["before"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


@pytest.mark.parametrize("what", ["directory", "key", "certificate"])
def test_ca_owned_by_another_user_is_refused(tmp_path, ca_dir, what):
    target = {"directory": ca_dir, "key": ca_dir / tls.CA_KEY_FILE, "certificate": ca_dir / tls.CA_CERT_FILE}[what]
    os.chown(target, OTHER_UID, OTHER_UID)
    before = tree(tmp_path)
    fragment = f"{target}: it belongs to uid {OTHER_UID}, not to the user running this (uid 0)"
    if what == "key":
        refused(run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path), fragment)
    for check in (True, False):
        core_refuses(lambda c=check: ensure_ca(ca_dir, check=c), fragment)
    assert tree(tmp_path) == before


def test_symlinked_ca_directory_or_key_is_refused(tmp_path, ca_dir):
    os.symlink(ca_dir, tmp_path / "ca-link")
    before = tree(tmp_path)
    refused(run("local_ca", {"path": str(tmp_path / "ca-link")}, tmp_path),
            f"refusing CA directory {tmp_path / 'ca-link'}: it is a symlink to {ca_dir}")
    other = tmp_path / "other-ca"
    other.mkdir(mode=0o700)
    secret = tmp_path / "secret.pem"
    secret.write_bytes(tls.key_to_pem(tls.generate_key("ecdsa")))
    secret.chmod(0o644)
    os.symlink(secret, other / tls.CA_KEY_FILE)
    (other / tls.CA_CERT_FILE).write_bytes((ca_dir / tls.CA_CERT_FILE).read_bytes())
    core_refuses(lambda: ensure_ca(other), f"refusing CA key {other}/rootCA-key.pem: it is a symlink")
    core_refuses(lambda: ensure_leaf({"ca_path": str(other), "certs_dir": str(tmp_path / "out"), "names": NAMES}),
                 f"refusing CA key {other}/rootCA-key.pem: it is a symlink")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o644          # not chmodded through the link
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith(("other-ca", "secret.pem"))} == before


# ------------------------------------------------------------------------------------------
# Expired, not yet valid and mismatched CA


def test_expired_ca_is_a_clear_error_for_both_modules(tmp_path, proj):
    ca_dir = tmp_path / "ca"
    write_ca(ca_dir, tls.now_utc() - dt.timedelta(days=40), 30)
    before = tree(tmp_path)
    res = run("tls_certificate", leaf(proj, ca_dir), tmp_path)
    refused(res, f"the local CA in {ca_dir} expired on")
    assert "regenerate=always" in res["msg"]
    refused(run("local_ca", {"path": str(ca_dir), "key_type": "ecdsa"}, tmp_path), "expired on")
    for check in (True, False):
        core_refuses(lambda c=check: ensure_leaf(leaf(proj, ca_dir), check=c), "expired on")
        core_refuses(lambda c=check: ensure_ca(ca_dir, check=c), "expired on")
    assert tree(tmp_path) == before
    out, cert = ensure_ca(ca_dir, regenerate="always")
    assert out.result["regenerated"] and cert.not_valid_after_utc > tls.now_utc()
    assert ensure_leaf(leaf(proj, ca_dir)).result["issued"]


def test_ca_not_valid_yet_is_a_clear_error(tmp_path, proj):
    ca_dir = tmp_path / "ca"
    write_ca(ca_dir, tls.now_utc() + dt.timedelta(days=2), 30)
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir)), f"the local CA in {ca_dir} is not valid before")
    assert os.listdir(proj / "secrets" / "certs") == []


def test_ca_certificate_and_key_mismatch_is_a_clear_error(tmp_path, ca_dir, proj):
    key = ca_dir / tls.CA_KEY_FILE
    key.chmod(0o600)
    key.write_bytes(tls.key_to_pem(tls.generate_key("ecdsa")))
    key.chmod(0o400)
    before = tree(tmp_path)
    refused(run("tls_certificate", leaf(proj, ca_dir), tmp_path), "the CA private key does not belong to the CA")
    core_refuses(lambda: ensure_ca(ca_dir), "the CA private key does not belong to the CA certificate")
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------
# 5. Bounds


@pytest.mark.parametrize(
    ("module", "args", "fragment"),
    [
        ("local_ca", {"rsa_bits": 8192, "key_type": "rsa"}, "rsa_bits must be one of: 2048, 3072, 4096"),
        ("tls_certificate", {"rsa_bits": 100000000}, "rsa_bits must be one of: 2048, 3072, 4096"),
        ("local_ca", {"validity_days": 10**9}, "must be between 1 and 7305 days"),
    ],
)
def test_module_bounds(tmp_path, ca_dir, module, args, fragment):
    args = leaf(tmp_path / "proj", ca_dir, **args) if module == "tls_certificate" else {"path": str(ca_dir), **args}
    before = tree(tmp_path)
    refused(run(module, args, tmp_path), fragment)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"validity_days": -1}, "must be between 1 and 7305 days"),
        ({"expiry_warning_days": -5}, "expiry_warning_days must be between 0 and 7305"),
        ({"expiry_warning_days": 10**12}, "expiry_warning_days must be between 0 and 7305"),
        ({"rsa_bits": 8192, "key_type": "rsa"}, "unsupported CA RSA key size 8192"),
    ],
)
def test_ca_bounds(tmp_path, args, fragment):
    core_refuses(lambda: ensure_ca(tmp_path / "ca", **args), fragment)
    for state in ("present", "trusted") if "expiry_warning_days" in args else ("present",):
        core_refuses(lambda s=state: tls_files.run_local_ca({"state": s, "path": str(tmp_path / "ca"), "key_type":
                                                             "ecdsa", **args}, run=None), fragment)
    assert not (tmp_path / "ca").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"validity_days": 10**9, "allow_long_validity": True}, "between 1 and 3650 days"),
        ({"renew_before_days": 10**12}, "renew_before_days must be between 0 and 3650"),
        ({"names": [f"h{i}.home.arpa" for i in range(101)]}, "at most 100 are allowed"),
        ({"rsa_bits": 8192, "key_type": "rsa"}, "unsupported certificate RSA key size 8192"),
    ],
)
def test_leaf_bounds(tmp_path, ca_dir, proj, args, fragment):
    core_refuses(lambda: ensure_leaf(leaf(proj, ca_dir, **args)), fragment)
    assert os.listdir(proj / "secrets" / "certs") == []
