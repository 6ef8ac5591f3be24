"""TLS files on disk: the leaf certificate, its key and the CA copy; the local CA directory; trust stores.

Pure core of the ``tls_certificate``, ``local_ca`` and ``tls_owner`` modules (no AnsibleModule here). The modules
hand in their options and get back an :class:`Outcome`; the certificate logic itself (profiles,
``leaf_reasons``, issuing) is in ``tls``. Commands (trust store refresh, ``certutil``) go through a
``run(argv) -> (rc, stdout, stderr)`` callable, so the adapter decides how they run. Every
``OSError`` becomes a HyHomeError naming the file and what was being done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import os
import shutil
import stat
import time
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import identity, mounts, tls
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    atomic_write,
    os_error_text,
    parse_mode,
    read_bytes,
    refuse_dangerous,
    remove_stale_temps,
    resolve_owner,
)


@dataclass
class Outcome:
    """What a module returns: ``changed``, the result keys, warnings to emit, the diff."""

    changed: bool = False
    result: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    diff: dict = field(default_factory=lambda: {"before": "", "after": ""})


def _os_errors(what: str):
    """Decorator: an OSError in the wrapped function becomes a HyHomeError saying what failed."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                raise HyHomeError(f"{what}: {os_error_text(exc)}") from None
        return inner
    return wrap


def _write(path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """atomic_write for every file these modules write (leaf key and certificate, CA copy, CA key and
    certificate), first removing the temp files a run killed while writing ``path`` left behind."""
    remove_stale_temps(os.path.dirname(path), os.path.basename(path))
    atomic_write(path, data, mode=mode, uid=uid, gid=gid)


def _within(parent: str, path: str) -> bool:
    parent = os.path.realpath(parent)
    path = os.path.realpath(path)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


# --------------------------------------------------------------------------------------------
# Key and certificate files: never through a link
#
# Every key and certificate file (leaf, CA copy, CA) must be a regular file with one name. A symlink
# would make us read, chown and chmod its target (the CA key, /etc/shadow); a hard link is the same
# inode under another name, possibly outside the project. Both are refused with a message. Owner and
# mode are changed with fchown/fchmod on a descriptor opened with O_NOFOLLOW and checked to be the
# inode that was inspected, so a file swapped for a link between the check and the change is not
# followed. New content goes through atomic_write (O_EXCL temp file, rename over the name).

MAX_PEM_BYTES = 1 << 20  # a key or certificate is a few KB: a larger file is refused unread
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_KEY_MODE_BITS = 0o640  # owner read/write, group read: nothing for others, no execute or special bits


def check_key_mode(mode: int, what: str = "mode") -> int:
    """Refuse a private-key mode with any bit outside 0640, or without owner read."""
    if mode & ~_KEY_MODE_BITS or not mode & 0o400:
        raise HyHomeError(
            f"refusing {what} {mode:04o} for a private key: it may grant the owner read (required) and write and "
            "the group read, nothing else (0400, 0440, 0600 or 0640)"
        )
    return mode


def check_cert_mode(mode: int, what: str = "cert_mode") -> int:
    """Refuse a certificate mode that lets group or others replace it, or sets special bits."""
    if mode & 0o7022 or not mode & 0o400:
        raise HyHomeError(
            f"refusing {what} {mode:04o} for a certificate: it must be readable by its owner, and neither group- "
            "nor world-writable nor setuid/setgid/sticky (for example 0644)"
        )
    return mode


def _lstat(path: str):
    """``os.lstat(path)``, or None when nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise HyHomeError(f"cannot use {path}: one of its parent directories is a file") from None


def _refuse_link(st, path: str, what: str) -> None:
    """Raise unless ``st`` (of ``path``) is a regular file with one name."""
    if stat.S_ISLNK(st.st_mode):
        raise HyHomeError(f"refusing {what} {path}: it is a symlink to {os.readlink(path)}; key and certificate "
                          "files must be regular files (remove the link, a new file is written)")
    if not stat.S_ISREG(st.st_mode):
        raise HyHomeError(f"refusing {what} {path}: it is not a regular file")
    if st.st_nlink > 1:
        raise HyHomeError(f"refusing {what} {path}: it has {st.st_nlink} hard links, so the same file has another "
                          "name, maybe outside the project; remove the other links (or this one) first")


def _refuse_linked_dirs(root: str | None, path: str, what: str) -> None:
    """Refuse a symlink (or non-directory) at any directory between ``root`` (not included) and ``path``.

    Without ``root``, or for a path outside it, the file's own directory is checked.
    """
    path = os.path.normpath(path)
    root = os.path.normpath(root) if root else None
    if root and path.startswith(root.rstrip("/") + "/"):
        parts = os.path.relpath(os.path.dirname(path), root).split(os.sep)
        dirs = [] if parts == ["."] else [os.path.join(root, *parts[:i + 1]) for i in range(len(parts))]
    else:
        dirs = [os.path.dirname(path)]
    for d in dirs:
        st = _lstat(d)
        if st is None:
            return                      # created later by us, as real directories
        if stat.S_ISLNK(st.st_mode):
            raise HyHomeError(f"refusing {what} {path}: its directory {d} is a symlink to {os.readlink(d)}; the "
                              "directories of key and certificate files must be real directories")
        if not stat.S_ISDIR(st.st_mode):
            raise HyHomeError(f"refusing {what} {path}: {d} is not a directory")


def _open_checked(path: str, st, what: str) -> int:
    """An O_NOFOLLOW descriptor of ``path``, checked to be the inode ``st`` describes."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HyHomeError(f"refusing {what} {path}: it became a symlink while it was checked") from None
        raise
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise HyHomeError(f"refusing {what} {path}: it was replaced while it was checked; run again")
    try:
        _refuse_link(fst, path, what)
    except HyHomeError:
        os.close(fd)
        raise
    return fd


def read_pem_file(path: str, what: str):
    """(content, lstat) of a key or certificate file, or (None, None) when absent. Never through a link."""
    st = _lstat(path)
    if st is None:
        return None, None
    _refuse_link(st, path, what)
    if st.st_size > MAX_PEM_BYTES:
        raise HyHomeError(f"refusing {what} {path}: {st.st_size} bytes, too large for a PEM key or certificate")
    fd = _open_checked(path, st, what)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise HyHomeError(f"refusing {what} {path}: too large for a PEM key or certificate")
    return data, st


def fix_attrs(path: str, what: str, mode: int, uid: int = -1, gid: int = -1,
              check: bool = False) -> list[tuple[str, str, str]]:
    """Give the file ``path`` its owner and mode through a no-follow descriptor.

    Returns what differed, as ``(attribute, before, after)``; nothing is changed in check mode.
    """
    st = _lstat(path)
    if st is None:
        return []
    _refuse_link(st, path, what)
    want_uid = st.st_uid if uid == -1 else uid
    want_gid = st.st_gid if gid == -1 else gid
    changes = []
    if (st.st_uid, st.st_gid) != (want_uid, want_gid):
        changes.append((f"owner of {path}", f"{st.st_uid}:{st.st_gid}", f"{want_uid}:{want_gid}"))
    if stat.S_IMODE(st.st_mode) != mode:
        changes.append((f"mode of {path}", f"{stat.S_IMODE(st.st_mode):04o}", f"{mode:04o}"))
    if changes and not check:
        fd = _open_checked(path, st, what)
        try:
            if (st.st_uid, st.st_gid) != (want_uid, want_gid):
                os.fchown(fd, want_uid, want_gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return changes


# --------------------------------------------------------------------------------------------
# Leaf certificate


@dataclass
class LeafRequest:
    """Where the leaf files go, with which owner and modes, and what the certificate must contain."""

    ca_dir: str
    cert_path: str
    key_path: str
    ca_copy_path: str | None
    key_mode: int
    cert_mode: int
    uid: int
    gid: int
    profile: object            # tls.LeafProfile
    regenerate: str = "auto"
    reuse_key: bool = True
    root: str | None = None    # no symlinked directory between it and the files (the project, else certs_dir)

    @classmethod
    def from_options(cls, p: dict) -> LeafRequest:
        """Resolve and check the ``tls_certificate`` options; raises HyHomeError on bad input."""
        ca_dir = os.path.abspath(os.path.expanduser(p.get("ca_path") or tls.default_ca_dir()))
        certs_dir = p.get("certs_dir")
        project_dir = p.get("project_dir")
        if not certs_dir and project_dir:
            certs_dir = os.path.join(project_dir, "secrets", "certs")
        if not certs_dir and not (p.get("cert_path") and p.get("key_path")):
            raise HyHomeError("give project_dir (or certs_dir, or both cert_path and key_path) to say where to write")
        cert_path = os.path.abspath(p.get("cert_path") or os.path.join(certs_dir, "cert.pem"))
        key_path = os.path.abspath(p.get("key_path") or os.path.join(certs_dir, "key.pem"))
        if p.get("ca_copy_path") == "":
            ca_copy_path = None
        else:
            ca_copy_path = os.path.abspath(p.get("ca_copy_path") or os.path.join(
                certs_dir or os.path.dirname(cert_path), tls.CA_CERT_FILE))
        for path, what in ((cert_path, "certificate path"), (key_path, "key path"), (ca_copy_path, "CA copy path")):
            if path:
                refuse_dangerous(path, what)
                refuse_dangerous(os.path.dirname(path), f"directory of the {what}")
        if project_dir and _within(project_dir, ca_dir):
            raise HyHomeError(
                f"the CA directory {ca_dir} is inside the project {project_dir}: keep the CA key outside "
                "the compose project so it can never be mounted into a container"
            )
        if key_path in (cert_path, ca_copy_path):
            raise HyHomeError("key_path must differ from cert_path and ca_copy_path")
        if p.get("regenerate", "auto") not in ("auto", "never", "fail", "always"):
            raise HyHomeError("regenerate must be one of auto, never, fail, always")
        uid, gid = resolve_owner(p.get("owner"), p.get("group"))
        profile = tls.LeafProfile.from_names(
            p.get("names"),
            key_type=p.get("key_type", "rsa"),
            rsa_bits=p.get("rsa_bits", tls.LEAF_RSA_BITS),
            validity_days=p.get("validity_days"),
            allow_long_validity=bool(p.get("allow_long_validity")),
            client_auth=bool(p.get("client_auth")),
            renew_before_days=p.get("renew_before_days", tls.DEFAULT_RENEW_BEFORE_DAYS),
            organization=p.get("organization") or tls.LEAF_ORGANIZATION,
            organizational_unit=p.get("organizational_unit") or "",
        )
        key_mode = check_key_mode(parse_mode(p.get("mode") or "0600", "mode"), "mode")
        cert_mode = check_cert_mode(parse_mode(p.get("cert_mode") or "0644", "cert_mode"), "cert_mode")
        root = os.path.abspath(project_dir) if project_dir else (os.path.abspath(certs_dir) if certs_dir else None)
        return cls(ca_dir, cert_path, key_path, ca_copy_path, key_mode, cert_mode,
                   uid, gid, profile, p.get("regenerate", "auto"), p.get("reuse_key", True) is not False, root)


def load_ca(ca_dir: str):
    """(certificate, key, certificate PEM) of the CA in ``ca_dir``.

    Checked: regular files with one name, key and certificate belong together, the CA is valid today.
    """
    cert_file = os.path.join(ca_dir, tls.CA_CERT_FILE)
    key_file = os.path.join(ca_dir, tls.CA_KEY_FILE)
    cert_pem, _ = read_pem_file(cert_file, "CA certificate")
    if cert_pem is None:
        raise HyHomeError(f"no CA certificate at {cert_file}: create the CA first (hyhome.bootstrap.local_ca)")
    key_pem, _ = read_pem_file(key_file, "CA key")
    if key_pem is None:
        raise HyHomeError(f"no CA key at {key_file}: the CA in {ca_dir} is incomplete")
    ca_cert = tls.load_cert(cert_pem, f"the CA certificate {cert_file}")
    ca_key = tls.load_key(key_pem, f"the CA key {key_file}", own_ca=True)
    tls.check_ca_pair(ca_cert, ca_key)
    problem = tls.ca_unusable(ca_cert, ca_dir)
    if problem:
        raise HyHomeError(problem)
    return ca_cert, ca_key, cert_pem


def _refuse_ca_key(req: LeafRequest, ca_key, key_pem: bytes | None) -> None:
    """A leaf must never be issued for the CA's own key.

    Compared by public key, which also catches the CA key file reached under another name (a bind
    mount, a copy); a symlink or hard link to it is already refused by ``read_pem_file``.
    """
    if key_pem is None:
        return
    try:
        leaf_key = tls.load_key(key_pem, "the private key")
    except HyHomeError:
        return                          # unparsable: leaf_reasons reports it and a new key is made
    if tls.public_key_fingerprint(leaf_key) == tls.public_key_fingerprint(ca_key):
        raise HyHomeError(f"refusing key_path {req.key_path}: it holds the CA's own private key; a leaf certificate "
                          "must have its own key. Remove that file (a new key is generated) and keep the CA key "
                          "only in the CA directory")


def _leaf_paths(req: LeafRequest):
    return [(p, w) for p, w in ((req.cert_path, "cert_path"), (req.key_path, "key_path"),
                                (req.ca_copy_path, "ca_copy_path")) if p]


def _refuse_paths_in_ca_dir(req: LeafRequest) -> None:
    """The leaf files never go into the CA directory, by name or through a link (checked after the
    link checks, whose messages say more)."""
    for path, what in _leaf_paths(req):
        if _within(req.ca_dir, path):
            raise HyHomeError(f"refusing {what} {path}: it is inside the CA directory {req.ca_dir}, where it could "
                              "replace or expose the CA's own files; write the leaf files elsewhere")


def _describe_leaf(summary, key_present: bool) -> str:
    if summary is None:
        return "(no certificate)\n" if not key_present else "(no valid certificate)\n"
    return "".join(f"{k}: {summary[k]}\n" for k in (
        "sans", "subject", "issuer", "serial", "not_before", "not_after", "key", "fingerprint_sha256",
        "public_key_fingerprint_sha256"))


class _Attrs:
    """Owner/mode drift, fixed apart from content drift (as community.crypto does), never through a link."""

    def __init__(self, uid: int, gid: int, check: bool):
        self.uid, self.gid, self.check = uid, gid, check
        self.changes: list[tuple[str, str, str]] = []

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def fix(self, path: str, mode: int, what: str) -> None:
        self.changes += fix_attrs(path, what, mode, self.uid, self.gid, self.check)


def _report_fixes(out: Outcome, fixes) -> None:
    """Owner/mode fixes ``(attribute, before, after)`` into the diff."""
    out.diff["before"] += "".join(f"{a}: {b}\n" for a, b, _ in fixes)
    out.diff["after"] += "".join(f"{a}: {c}\n" for a, _, c in fixes)


def _would_create_ca(req: LeafRequest) -> Outcome:
    """Check mode on a new machine: the CA task before this one only pretended to create the CA."""
    reason = tls.Reason("ca_missing", f"the CA in {req.ca_dir} does not exist yet; it would be created first")
    return Outcome(True, {
        "issued": True, "kept": False, "new_key": True, "reasons": [str(reason)], "reason_codes": [reason.code],
        "cert_path": req.cert_path, "key_path": req.key_path, "ca_copy_path": req.ca_copy_path,
        "ca_fingerprint_sha256": None, "ca_not_after": None,
    })


@_os_errors("leaf certificate")
def ensure_leaf(req: LeafRequest, check: bool = False, diff: bool = False) -> Outcome:
    """Issue, re-issue or keep the leaf per ``req``; write only what differs (nothing in check mode)."""
    for path, what in _leaf_paths(req):
        _refuse_linked_dirs(req.root, path, what)
    cert_pem, _ = read_pem_file(req.cert_path, "cert_path")
    key_pem, _ = read_pem_file(req.key_path, "key_path")
    ca_copy_pem = read_pem_file(req.ca_copy_path, "ca_copy_path")[0] if req.ca_copy_path else None
    _refuse_paths_in_ca_dir(req)
    if check and _lstat(os.path.join(req.ca_dir, tls.CA_CERT_FILE)) is None:
        return _would_create_ca(req)
    out = Outcome()
    ca_cert, ca_key, ca_pem = load_ca(req.ca_dir)
    _refuse_ca_key(req, ca_key, key_pem)
    tls.check_name_constraints(req.profile.sans, ca_cert)
    reasons = tls.leaf_reasons(req.profile, cert_pem, key_pem, ca_cert)
    if req.regenerate == "always" and not any(r.code == "cert_missing" for r in reasons):
        reasons.append(tls.Reason("always", "regenerate=always"))
    exists = cert_pem is not None or key_pem is not None
    issue = bool(reasons)
    kept = False
    if issue and exists and req.regenerate == "never":
        issue, kept = False, True
        out.warnings.append("certificate kept (regenerate=never) although: " + "; ".join(map(str, reasons)))
    if issue and exists and req.regenerate == "fail":
        raise HyHomeError("the certificate would be re-issued (regenerate=fail): " + "; ".join(map(str, reasons)))
    codes = {r.code for r in reasons}
    new_key = issue and (not req.reuse_key or bool(codes & tls.KEY_REASONS))
    out.result = {
        "issued": issue, "kept": kept, "new_key": new_key,
        "reasons": [str(r) for r in reasons], "reason_codes": [r.code for r in reasons],
        "cert_path": req.cert_path, "key_path": req.key_path, "ca_copy_path": req.ca_copy_path,
        "ca_fingerprint_sha256": tls.cert_fingerprint(ca_cert),
        "ca_not_after": ca_cert.not_valid_after_utc.isoformat(),
    }
    before = None
    if cert_pem is not None and "cert_unparsable" not in codes:
        before = tls.cert_summary(tls.load_cert(cert_pem))
    current = after = before
    attrs = _Attrs(req.uid, req.gid, check)
    if issue:
        key = tls.generate_key(req.profile.key_type, req.profile.rsa_bits) if new_key else None
        key = key or tls.load_key(key_pem)
        cert = tls.issue_leaf(req.profile, key, ca_cert, ca_key)
        after = tls.cert_summary(cert)
        out.changed = True
        if not check:
            _write_leaf(req, cert, key if new_key else None)
            current = after
    if req.ca_copy_path:
        if ca_copy_pem != ca_pem:
            out.changed = True
            if not check:
                os.makedirs(os.path.dirname(req.ca_copy_path), mode=0o755, exist_ok=True)
                _write(req.ca_copy_path, ca_pem, req.cert_mode, req.uid, req.gid)
        else:
            attrs.fix(req.ca_copy_path, req.cert_mode, "ca_copy_path")
    if not check or not issue:
        attrs.fix(req.key_path, req.key_mode, "key_path")
        attrs.fix(req.cert_path, req.cert_mode, "cert_path")
    out.changed = out.changed or attrs.changed
    if attrs.changes:
        out.result["attributes_fixed"] = [f"{a}: {b} -> {c}" for a, b, c in attrs.changes]
    if current is not None:
        for k in ("not_before", "not_after", "serial", "sans", "fingerprint_sha256", "public_key_fingerprint_sha256"):
            out.result[k] = current[k]
    if diff:
        out.diff = {"before": _describe_leaf(before, key_pem is not None), "after": _describe_leaf(after, True)}
        _report_fixes(out, attrs.changes)
    warning = tls.ca_warning(tls.ca_status(ca_cert))
    if warning:
        out.warnings.append(warning)
    if after is not None and ca_cert.not_valid_after_utc < dt.datetime.fromisoformat(after["not_after"]):
        out.warnings.append("the CA expires before this certificate: clients stop trusting it when the CA expires")
    return out


def _write_leaf(req: LeafRequest, cert, key) -> None:
    for path in (os.path.dirname(req.cert_path), os.path.dirname(req.key_path)):  # makedirs: a repeat is a no-op
        os.makedirs(path, mode=0o755, exist_ok=True)
    for path, what in _leaf_paths(req):     # again, now that every directory exists: no link slipped in
        _refuse_linked_dirs(req.root, path, what)
    # Key before certificate: a crash in between leaves a mismatch the next run repairs.
    if key is not None:
        _write(req.key_path, tls.key_to_pem(key), req.key_mode, req.uid, req.gid)
    _write(req.cert_path, tls.cert_to_pem(cert), req.cert_mode, req.uid, req.gid)


# --------------------------------------------------------------------------------------------
# Local CA


@dataclass
class CARequest:
    path: str
    profile: object            # tls.CAProfile
    regenerate: str = "never"
    expiry_warning_days: int = tls.DEFAULT_CA_WARNING_DAYS

    @property
    def cert_path(self) -> str:
        return os.path.join(self.path, tls.CA_CERT_FILE)

    @property
    def key_path(self) -> str:
        return os.path.join(self.path, tls.CA_KEY_FILE)

    @classmethod
    def from_options(cls, p: dict) -> CARequest:
        path = os.path.abspath(os.path.expanduser(p.get("path") or tls.default_ca_dir()))
        if p.get("regenerate", "never") not in ("never", "fail", "always"):
            raise HyHomeError("regenerate must be one of never, fail, always")
        profile = tls.CAProfile(
            organization=p.get("organization") or tls.CA_ORGANIZATION,
            organizational_unit=p.get("organizational_unit") or "",
            common_name=p.get("common_name") or "",
            key_type=p.get("key_type", "rsa"),
            rsa_bits=p.get("rsa_bits", tls.CA_RSA_BITS),
            validity_days=p.get("validity_days"),
            permitted_dns=tuple(p.get("permitted_dns_domains") or ()),
            permitted_ip=tuple(p.get("permitted_ip_ranges") or ()),
        )
        return cls(path, profile, p.get("regenerate", "never"), _warning_days(p))


def _check_ca_dir(path: str):
    """lstat of the CA directory (None when missing), refused unless a real directory of this user."""
    st = _lstat(path)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise HyHomeError(f"refusing CA directory {path}: it is a symlink to {os.readlink(path)}; give the real "
                          "directory as path (or $HYHOME_CAROOT)")
    if not stat.S_ISDIR(st.st_mode):
        raise HyHomeError(f"refusing CA directory {path}: it is not a directory")
    if st.st_uid != os.geteuid():
        raise HyHomeError(f"refusing CA directory {path}: it belongs to uid {st.st_uid}, not to the user running "
                          f"this (uid {os.geteuid()}); another user could replace the CA key. Use a directory of "
                          "your own, or run as its owner")
    return st


def _check_ca_file_owner(st, path: str) -> None:
    if st is not None and st.st_uid != os.geteuid():
        raise HyHomeError(f"refusing CA file {path}: it belongs to uid {st.st_uid}, not to the user running this "
                          f"(uid {os.geteuid()}), so someone else wrote or can rewrite it. If you trust it, chown "
                          "it; otherwise create a new CA (regenerate=always)")


def _fix_dir_mode(path: str, st, mode: int, check: bool) -> list[tuple[str, str, str]]:
    """chmod the directory ``path`` through a no-follow descriptor checked to be the inode ``st`` describes."""
    if stat.S_IMODE(st.st_mode) == mode:
        return []
    if not check:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise HyHomeError(f"refusing CA directory {path}: it was replaced while it was checked; run again")
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return [(f"mode of {path}", f"{stat.S_IMODE(st.st_mode):04o}", f"{mode:04o}")]


def _warning_days(p: dict) -> int:
    days = p.get("expiry_warning_days")
    days = tls.DEFAULT_CA_WARNING_DAYS if days is None else days
    return tls.check_days(days, "expiry_warning_days", 0, tls.MAX_CA_DAYS)


def _describe_ca(status: dict) -> str:
    return "".join(f"{k}: {status[k]}\n" for k in ("subject", "serial", "not_after", "key", "fingerprint_sha256"))


# Held while a CA is created: a second run waits, then finds the CA the first one made.
CA_LOCK_FILE = ".hyhome-ca.lock"
CA_LOCK_WAIT = 300.0     # seconds; creating a CA takes seconds, even an RSA 4096 one on a slow host


@contextlib.contextmanager
def _ca_lock(ca_dir: str, wait: float = CA_LOCK_WAIT):
    """An exclusive flock on CA_LOCK_FILE in ``ca_dir`` (a regular file of this user, never a link)."""
    path = os.path.join(ca_dir, CA_LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise HyHomeError(f"refusing CA lock file {path}: it is not a regular file of the user running this; "
                              "remove it")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HyHomeError(f"another run has been creating the CA in {ca_dir} for over {wait:.0f} s "
                                      f"(it holds {path}); run again when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


@_os_errors("local CA")
def ensure_ca(req: CARequest, check: bool = False):
    """Create the CA when missing, report drift, fix modes, never replace it unasked.

    Returns ``(Outcome, certificate or None)``; the certificate is None in check mode before creation.
    Creation is exclusive (:func:`_ca_lock`): of two runs on a new CA directory, one creates the CA and
    the other waits, then finds it and keeps it (changed=false), so one CA never silently replaces another.
    """
    refuse_dangerous(req.path, "CA directory")
    done = _ensure_ca(req, check, locked=False)
    if done is not None:
        return done
    if _check_ca_dir(req.path) is None:
        os.makedirs(req.path, mode=0o700, exist_ok=True)
        _fix_dir_mode(req.path, _check_ca_dir(req.path), 0o700, check)
    with _ca_lock(req.path):
        return _ensure_ca(req, check, locked=True)


def _ensure_ca(req: CARequest, check: bool, locked: bool):
    """ensure_ca's decision and work; None when the CA must be written and ``locked`` is false."""
    out = Outcome(result={"ca_dir": req.path, "certificate_path": req.cert_path, "key_path": req.key_path,
                          "created": False, "regenerated": False, "drift": []})
    dir_st = _check_ca_dir(req.path)
    cert_pem, cert_st = read_pem_file(req.cert_path, "CA certificate") if dir_st else (None, None)
    key_pem, key_st = read_pem_file(req.key_path, "CA key") if dir_st else (None, None)
    exists = cert_pem is not None or key_pem is not None
    if exists and req.regenerate != "always":
        if cert_pem is None or key_pem is None:
            missing = req.cert_path if cert_pem is None else req.key_path
            raise HyHomeError(
                f"the CA in {req.path} is incomplete: {missing} is missing. Restore it from a backup; "
                "creating a new CA (regenerate=always) would break trust on every host that trusts the old one"
            )
        cert = tls.load_cert(cert_pem, f"the CA certificate {req.cert_path}")
        key = tls.load_key(key_pem, f"the CA key {req.key_path}", own_ca=True)
        tls.check_ca_pair(cert, key)
        _check_ca_file_owner(key_st, req.key_path)
        _check_ca_file_owner(cert_st, req.cert_path)
        problem = tls.ca_unusable(cert, req.path)
        if problem:
            raise HyHomeError(problem)
        drift = tls.ca_drift(cert, req.profile)
        out.result["drift"] = drift
        status = tls.ca_status(cert, warning_days=req.expiry_warning_days)
        if req.regenerate == "fail" and (drift or status["expires_soon"]):
            problems = drift + ([tls.ca_warning(status)] if status["expires_soon"] else [])
            raise HyHomeError("the existing CA does not satisfy the request (regenerate=fail): " + "; ".join(problems))
        out.warnings.extend(f"existing CA in {req.path} kept although it differs from the request: {d}"
                            for d in drift)
        out.diff["before"] = out.diff["after"] = _describe_ca(status)
        fixes = _fix_dir_mode(req.path, dir_st, 0o700, check)
        fixes += fix_attrs(req.key_path, "CA key", 0o400, check=check)
        fixes += fix_attrs(req.cert_path, "CA certificate", 0o644, check=check)
        if fixes:
            out.changed = True
            out.result["modes_fixed"] = [a.removeprefix("mode of ") for a, _, _ in fixes]
            _report_fixes(out, fixes)
        return out, cert
    # Create (missing) or replace (regenerate=always): under the lock, deciding again once it is held.
    if not check and not locked:
        return None
    out.result["created"] = True
    out.result["regenerated"] = exists
    key = tls.generate_key(req.profile.key_type, req.profile.rsa_bits)
    cert = tls.build_ca(req.profile, key, tls.now_utc())
    if exists:
        old = tls.load_cert(cert_pem, "the old CA certificate") if cert_pem else None
        out.diff["before"] = _describe_ca(tls.ca_status(old)) if old else "(incomplete CA)\n"
    out.diff["after"] = _describe_ca(tls.ca_status(cert, warning_days=req.expiry_warning_days))
    out.changed = True
    if dir_st is not None:
        fixes = _fix_dir_mode(req.path, dir_st, 0o700, check)
        if fixes:
            out.result["modes_fixed"] = [req.path]
            _report_fixes(out, fixes)
    if check:
        return out, None
    if exists:
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        for path in (req.key_path, req.cert_path):
            if os.path.exists(path):
                os.replace(path, f"{path}.{stamp}.bak")
    # Key first: a crash leaves a key without a certificate, which the next run reports
    # instead of silently pairing a certificate with nothing.
    _write(req.key_path, tls.key_to_pem(key), 0o400)
    _write(req.cert_path, tls.cert_to_pem(cert), 0o644)
    return out, cert


# --------------------------------------------------------------------------------------------
# Trust stores (standard library only: hosts that merely trust the CA need no cryptography)


def _anchor_label(pem: bytes) -> str:
    ders = tls.pem_certificates_der(pem)
    return tls.der_fingerprint(ders[0]) if ders else "(not a certificate)"


class TrustStores:
    """Installs or removes one CA certificate (as DER) in the system store and NSS databases."""

    def __init__(self, name: str, run, check: bool = False, which=shutil.which, home: str | None = None):
        self.name = tls.check_trust_name(name)
        self.run_cmd = run
        self.check = check
        self.which = which
        self.home = home or os.path.expanduser("~")
        self.changed = False
        self.result: dict = {"system": None, "nss": []}
        self.diff_before: list[str] = []
        self.diff_after: list[str] = []
        self.warnings: list[str] = []

    def _run(self, argv: list[str]) -> str:
        rc, out, err = self.run_cmd(argv)
        if rc != 0:
            raise HyHomeError(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}")
        return out

    @_os_errors("system trust store")
    def system(self, der: bytes | None, present: bool) -> None:
        store = tls.detect_system_store(self.which)
        if store is None:
            self.warnings.append(
                "no system trust store tool found (update-ca-certificates or update-ca-trust); "
                "install the ca-certificates package to trust the local CA system-wide"
            )
            return
        anchor = store.anchor_path(self.name)
        current = read_bytes(anchor)
        in_bundle = der is not None and tls.bundle_contains(read_bytes(store.bundle) or b"", der)
        if present:
            pem = tls.der_to_pem(der)
            need_file = current != pem
            need_update = need_file or not in_bundle
        else:
            need_file = need_update = current is not None
        entry = {"family": store.family, "anchor": anchor, "changed": need_update, "in_bundle": in_bundle}
        self.result["system"] = entry
        if current is not None:
            self.diff_before.append(f"system anchor {anchor}: {_anchor_label(current)}")
        if present:
            self.diff_after.append(f"system anchor {anchor}: {tls.der_fingerprint(der)}")
        if not need_update:
            return
        self.changed = True
        if self.check:
            return
        if present:
            os.makedirs(store.anchor_dir, mode=0o755, exist_ok=True)
            if need_file:
                _write(anchor, pem, 0o644)
            self._run(list(store.update_cmd))
            entry["in_bundle"] = tls.bundle_contains(read_bytes(store.bundle) or b"", der)
            if not entry["in_bundle"]:
                raise HyHomeError(f"{' '.join(store.update_cmd)} ran but {store.bundle} does not contain the CA")
        else:
            os.unlink(anchor)
            self._run(list(store.remove_cmd or store.update_cmd))
            entry["in_bundle"] = False

    def nss(self, der: bytes | None, cert_path: str, present: bool, databases) -> None:
        certutil = self.which("certutil")
        if not certutil:
            return
        for db in databases or tls.nss_databases(self.home):
            spec = tls.nss_dbspec(db)
            rc, out, _err = self.run_cmd([certutil, "-L", "-d", spec, "-n", self.name, "-a"])
            have = tls.pem_certificates_der(out.encode()) if rc == 0 else []
            need = (der not in have) if present else bool(have) or rc == 0
            self.result["nss"].append({"database": db, "changed": need})
            if rc == 0:
                self.diff_before.append(f"nss {db}: {tls.der_fingerprint(have[0]) if have else 'present'}")
            if present:
                self.diff_after.append(f"nss {db}: {tls.der_fingerprint(der)}")
            if not need:
                continue
            self.changed = True
            if self.check:
                continue
            if rc == 0:
                self._run([certutil, "-D", "-d", spec, "-n", self.name])
            if present:
                self._run([certutil, "-A", "-d", spec, "-t", "C,,", "-n", self.name, "-i", cert_path])


def _ca_facts(der: bytes | None, warning_days: int, out: Outcome) -> None:
    """Expiry facts and the loud warning, when ``cryptography`` is there to read the certificate."""
    if not tls.HAS_CRYPTOGRAPHY or der is None:
        return
    cert = tls.load_cert(tls.der_to_pem(der), "the CA certificate")
    status = tls.ca_status(cert, warning_days=warning_days)
    out.result["ca"] = status
    warning = tls.ca_warning(status)
    if warning:
        out.warnings.append(warning)


@_os_errors("local CA")
def run_local_ca(p: dict, run, check: bool = False, which=shutil.which) -> Outcome:
    """The whole ``local_ca`` module: keep the CA (state=present) and/or manage trust in it."""
    state = p.get("state", "present")
    if state not in ("present", "trusted", "untrusted"):
        raise HyHomeError("state must be one of present, trusted, untrusted")
    warning_days = _warning_days(p)
    if state == "present":
        out, cert = ensure_ca(CARequest.from_options(p), check)
        der = tls.cert_to_der(cert) if cert is not None else None
        cert_path = out.result["certificate_path"]
    else:
        cert_path = os.path.abspath(os.path.expanduser(
            p.get("certificate_path") or os.path.join(p.get("path") or tls.default_ca_dir(), tls.CA_CERT_FILE)))
        out = Outcome(result={"certificate_path": cert_path})
        pem = read_bytes(cert_path)
        ders = tls.pem_certificates_der(pem) if pem is not None else []
        der = ders[0] if ders else None
        if state == "trusted" and der is None:
            if pem is not None:
                raise HyHomeError(f"cannot install trust: {cert_path} holds no PEM certificate")
            if not check:
                raise HyHomeError(f"cannot install trust: the CA certificate {cert_path} does not exist")
            # Check mode before the copy exists (a first run): report that trust would be installed.
            out.changed = True
            out.result["trust"] = {"system": {"changed": True}, "nss": []}
            out.result["msg"] = f"{cert_path} does not exist yet: trust would be installed"
            return out
    if der is not None:
        out.result["certificate"] = tls.der_to_pem(der).decode()
        out.result["fingerprint_sha256"] = tls.der_fingerprint(der)
    _ca_facts(der, warning_days, out)
    if state in ("trusted", "untrusted") or p.get("trust"):
        present = state != "untrusted"
        trust = TrustStores(p.get("trust_name") or "hyhome-local-ca", run, check, which)
        if present and der is None:
            # Check mode before the CA exists: everything would be installed.
            trust.changed = True
            trust.result["system"] = {"changed": True}
        else:
            stores = p.get("trust_stores") or ["system", "nss"]
            if "system" in stores:
                trust.system(der, present)
            if "nss" in stores:
                trust.nss(der, cert_path, present, p.get("nss_databases") or [])
        out.result["trust"] = trust.result
        out.warnings.extend(trust.warnings)
        out.changed = out.changed or trust.changed
        out.diff["before"] += "".join(f"{x}\n" for x in trust.diff_before)
        out.diff["after"] += "".join(f"{x}\n" for x in trust.diff_after)
    return out


# --------------------------------------------------------------------------------------------
# Owner of the key and certificate, from the services that mount them


def _reader_entries(readers, idents) -> list[dict]:
    return [{"service": svc, "via": via, "uid": idents[svc].uid, "gid": idents[svc].gid,
             "source": idents[svc].source, "detail": idents[svc].detail} for svc, via in readers]


def derive_owner(project, key_path: str, cert_path: str, resolver) -> Outcome:
    """Owner, group and key mode for the leaf files, from the services that read them.

    The readers are the services that bind-mount the key (or a directory above it) or declare it
    as a compose secret; with no key reader, those of the certificate. Each reader's uid:gid comes
    from ``resolver`` (an identity.IdentityResolver). One reader uid: that uid, key 0400; several:
    root and a shared group, key 0440 (see identity.file_access). Never changes anything.
    """
    key_readers = mounts.file_readers(project, key_path)
    cert_readers = mounts.file_readers(project, cert_path)
    basis = key_readers or cert_readers
    idents = {svc: resolver.service(project.services[svc]) for svc, _ in key_readers + cert_readers}
    access = identity.file_access({svc: idents[svc] for svc, _ in basis})
    out = Outcome(result={
        "owner": access.uid, "group": access.gid, "key_mode": f"{access.mode:04o}", "shared": access.shared,
        "hint": access.hint if basis else None,
        "key_readers": _reader_entries(key_readers, idents),
        "cert_readers": _reader_entries(cert_readers, idents),
    })
    if not basis:
        out.warnings.append(f"no service mounts {key_path} or {cert_path} (as a bind of the file or its "
                            "directory, or as a compose secret): the files stay root-owned, key 0400; mount "
                            "them where the TLS server reads them, or set the owner explicitly (tls_key_owner)")
    elif access.hint:
        out.warnings.append(f"{key_path} is read by services with different users: {access.hint}")
    out.warnings.extend(resolver.warnings)
    return out
