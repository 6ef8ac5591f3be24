"""Backup archives of a Compose project: build, verify and restore them, treating every archive as hostile.

Pure core (no AnsibleModule). An archive is a gzip'd tar (PAX) holding:

    files/<root>/...        every saved tree or file, one *root* each (secrets, env, ca, data-<service>-<target>)
    dumps/<service>.sql     logical database dumps (pg_dumpall), standing in for the database's data directory
    manifest.json           format, project, roots, and one entry per member: path, type, size, sha256, mode,
                            uid, gid (symlinks: their target)

It holds secret values: the archive file is 0600 in a 0700 directory, and its name carries only the
project name and a UTC time stamp.

Verification (:func:`verify`) reads the whole archive once, streaming, and refuses, before anything
is written anywhere: a truncated or corrupt gzip/tar stream, a missing or malformed manifest, a member
the manifest does not list or a listed one that is missing, a size or SHA-256 mismatch, absolute
names, ``..`` or empty components, duplicates, hard links, device files, FIFOs, a symlink whose target
leaves its root or a member reached through a symlink, modes with setuid/setgid on files, ids out of
range. The destination of each root is never taken from the archive: the caller maps root names to
paths of the project being restored (:class:`RestoreTarget`).

Restore (:func:`restore`) extracts each root into a fresh staging directory next to its destination
(same filesystem), re-checking every checksum while writing, applies the manifest's modes and
owners, and only when every root is staged renames each into place; an existing destination is kept
as ``<dest>.pre-restore-<stamp>``. A failure before the swap removes the staging and touches nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import re
import secrets as _secrets
import stat
import tarfile
import zlib
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import (
    TEMP_MARK,
    check_id,
    fsync_dir,
    refuse_dangerous,
)

FORMAT = "hyhome-backup"
VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_MAX = 32 * 1024 * 1024          # a manifest larger than this is not ours
ROOT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
DUMP_NAME = re.compile(r"dumps/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.sql")
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ARCHIVE_SUFFIX = ".tar.gz"
CHUNK = 1024 * 1024
TYPES = ("file", "dir", "symlink")


class ArchiveRefused(HyHomeError):
    """The archive is damaged, truncated, tampered with or hostile; nothing was touched."""


def _refuse(path: str, reason: str) -> ArchiveRefused:
    return ArchiveRefused(f"refusing archive {path}: {reason}; nothing was restored")


# ------------------------------------------------------------------------------------------------
# Names and manifest
# ------------------------------------------------------------------------------------------------

def check_member_name(name: str) -> str:
    """``name`` if it is a safe relative member name, else raise a plain HyHomeError (the reason)."""
    if not isinstance(name, str) or not name:
        raise HyHomeError("a member has an empty name")
    if "\0" in name or "\\" in name:
        raise HyHomeError(f"member {name!r} has a NUL or backslash in its name")
    if name.startswith("/"):
        raise HyHomeError(f"member {name!r} has an absolute name")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise HyHomeError(f"member {name!r} has an empty, '.' or '..' component")
    if name == MANIFEST or DUMP_NAME.fullmatch(name):
        return name
    if parts[0] != "files" or len(parts) < 2 or not ROOT_NAME.fullmatch(parts[1]):
        raise HyHomeError(f"member {name!r} is outside files/<root>/, dumps/ and manifest.json")
    return name


def root_of(name: str) -> str | None:
    """The root a ``files/<root>/...`` member belongs to (None for dumps and the manifest)."""
    parts = name.split("/")
    return parts[1] if parts[0] == "files" and len(parts) >= 2 else None


def _check_entry(e) -> dict:
    if not isinstance(e, dict):
        raise HyHomeError("an entry is not a mapping")
    path = check_member_name(e.get("path"))
    if path == MANIFEST:
        raise HyHomeError("the manifest lists itself")
    kind = e.get("type")
    if kind not in TYPES:
        raise HyHomeError(f"entry {path!r} has type {kind!r} (expected one of {', '.join(TYPES)})")
    mode = e.get("mode")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise HyHomeError(f"entry {path!r} has an invalid mode")
    if kind == "file" and mode & 0o6000:
        raise HyHomeError(f"entry {path!r} is setuid/setgid")
    if mode & 0o4000:
        raise HyHomeError(f"entry {path!r} is setuid")
    for key in ("uid", "gid"):
        check_id(e.get(key), f"entry {path!r} {key}")
    if kind == "file":
        size, digest = e.get("size"), e.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise HyHomeError(f"entry {path!r} has an invalid size")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise HyHomeError(f"entry {path!r} has an invalid sha256")
    if kind == "symlink":
        check_link(path, e.get("target"))
    elif path.startswith("dumps/") and kind != "file":
        raise HyHomeError(f"entry {path!r} must be a file")
    return e


def check_link(path: str, target) -> str:
    """A symlink member's target: relative, and resolving inside the member's own root."""
    root = root_of(path)
    if root is None:
        raise HyHomeError(f"symlink {path!r} is not inside a files/<root>/ tree")
    if not isinstance(target, str) or not target or "\0" in target:
        raise HyHomeError(f"symlink {path!r} has an empty target")
    if target.startswith("/"):
        raise HyHomeError(f"symlink {path!r} points to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    prefix = f"files/{root}/"
    if not resolved.startswith(prefix) and resolved != prefix.rstrip("/"):
        raise HyHomeError(f"symlink {path!r} points outside its root ({target!r})")
    return target


def check_manifest(doc) -> dict:
    """Validate a parsed manifest's structure; returns it. Raises HyHomeError naming the first defect."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HyHomeError(f"manifest.json is not a {FORMAT} manifest")
    if doc.get("version") != VERSION:
        raise HyHomeError(f"manifest version {doc.get('version')!r} is not supported (this code reads {VERSION})")
    project = doc.get("project")
    if not isinstance(project, str) or not PROJECT_NAME.fullmatch(project):
        raise HyHomeError("manifest names no valid project")
    roots = doc.get("roots")
    if not isinstance(roots, list):
        raise HyHomeError("manifest has no list of roots")
    seen_roots = set()
    for r in roots:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not ROOT_NAME.fullmatch(r["name"]):
            raise HyHomeError("manifest has a root without a valid name")
        if r["name"] in seen_roots:
            raise HyHomeError(f"manifest lists root {r['name']!r} twice")
        if r.get("kind") not in ("dir", "file"):
            raise HyHomeError(f"root {r['name']!r} has kind {r.get('kind')!r} (expected dir or file)")
        seen_roots.add(r["name"])
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise HyHomeError("manifest has no list of entries")
    by_path = {}
    for e in entries:
        _check_entry(e)
        if e["path"] in by_path:
            raise HyHomeError(f"manifest lists {e['path']!r} twice")
        root = root_of(e["path"])
        if root is not None and root not in seen_roots:
            raise HyHomeError(f"entry {e['path']!r} belongs to no declared root")
        by_path[e["path"]] = e
    for r in roots:
        top = by_path.get(f"files/{r['name']}")
        want = "dir" if r["kind"] == "dir" else "file"
        if top is None or top["type"] != want:
            raise HyHomeError(f"root {r['name']!r} has no top-level {want} entry")
    for path in by_path:      # every parent is a listed directory: nothing is written through a symlink
        parent = posixpath.dirname(path)
        if parent.count("/") >= 1 and (parent not in by_path or by_path[parent]["type"] != "dir"):
            raise HyHomeError(f"entry {path!r} is below {parent!r}, which is not a directory in the manifest")
    return doc


# ------------------------------------------------------------------------------------------------
# Reading an archive (verification)
# ------------------------------------------------------------------------------------------------

@dataclass
class Verified:
    """What :func:`verify` found: the manifest and totals."""

    path: str
    manifest: dict
    members: int
    bytes: int
    sha256: str                 # of the archive file itself

    @property
    def entries(self) -> dict[str, dict]:
        return {e["path"]: e for e in self.manifest["entries"]}

    def summary(self) -> dict:
        return {
            "archive": self.path, "sha256": self.sha256, "project": self.manifest["project"],
            "created": self.manifest.get("created"), "members": self.members, "bytes": self.bytes,
            "roots": [r["name"] for r in self.manifest["roots"]],
            "dumps": [e["path"] for e in self.manifest["entries"] if e["path"].startswith("dumps/")],
        }


class _HashingFile(io.RawIOBase):
    """A read-only file object that hashes what is read through it."""

    def __init__(self, fh):
        self._fh = fh
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        if n:
            self.digest.update(memoryview(b)[:n])
            self.count += n
        return n


def _member_type(ti: tarfile.TarInfo) -> str:
    if ti.isreg():
        return "file"
    if ti.isdir():
        return "dir"
    if ti.issym():
        return "symlink"
    if ti.islnk():
        raise HyHomeError(f"member {ti.name!r} is a hard link")
    if ti.ischr() or ti.isblk():
        raise HyHomeError(f"member {ti.name!r} is a device file")
    if ti.isfifo():
        raise HyHomeError(f"member {ti.name!r} is a FIFO")
    raise HyHomeError(f"member {ti.name!r} has an unsupported type")


def _open_archive(path: str):
    """(file object, stat) of the archive: a regular file, opened without following a final symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise HyHomeError(f"archive {path} does not exist; nothing was restored") from None
    except OSError as exc:
        raise HyHomeError(f"cannot read archive {path}: {exc.strerror}; nothing was restored") from None
    if stat.S_ISLNK(st.st_mode):
        path_real = os.path.realpath(path)
        st = os.stat(path_real)
        path = path_real
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "it is not a regular file")
    return open(path, "rb"), st


def iter_members(path: str, visit):
    """Stream the archive's members: ``visit(tarinfo, kind, fileobj or None)`` for each, in order.

    Raises ArchiveRefused for any stream or naming defect. Returns the archive file's SHA-256.
    """
    fh, _st = _open_archive(path)
    outer = _HashingFile(fh)
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BufferedReader(outer, CHUNK), mode="r|gz") as tar:
            for ti in tar:
                try:
                    name = check_member_name(ti.name)
                    if name in seen:
                        raise HyHomeError(f"member {name!r} appears twice")
                    seen.add(name)
                    kind = _member_type(ti)
                    if kind == "symlink":
                        check_link(name, ti.linkname)
                except ArchiveRefused:
                    raise
                except HyHomeError as exc:
                    raise _refuse(path, exc.msg) from None
                visit(ti, kind, tar.extractfile(ti) if kind == "file" else None)
            # Drain what follows the end-of-archive blocks so the outer checksum covers the whole file.
            while outer.read(CHUNK):
                pass
    except ArchiveRefused:
        raise
    except HyHomeError as exc:
        raise _refuse(path, exc.msg) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise _refuse(path, f"it is damaged or truncated ({reason})") from None
    finally:
        fh.close()
    return outer.digest.hexdigest()


def _read_capped(fobj, cap: int) -> bytes:
    data = fobj.read(cap + 1)
    if len(data) > cap:
        raise HyHomeError(f"manifest.json is larger than {cap} bytes")
    return data


def _hash_stream(fobj, sink=None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = fobj.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        if sink is not None:
            sink(chunk)
    return h.hexdigest(), n


def verify(path: str) -> Verified:
    """Check the archive end to end (see the module doc); nothing is written anywhere."""
    found: dict[str, dict] = {}
    manifest_raw: list[bytes] = []
    total = [0]

    def visit(ti, kind, fobj):
        if ti.name == MANIFEST:
            if kind != "file":
                raise HyHomeError("manifest.json is not a regular file")
            manifest_raw.append(_read_capped(fobj, MANIFEST_MAX))
            return
        rec = {"type": kind}
        if kind == "file":
            rec["sha256"], rec["size"] = _hash_stream(fobj)
            total[0] += rec["size"]
            if rec["size"] != ti.size:
                raise HyHomeError(f"member {ti.name!r} is shorter than its header says")
        elif kind == "symlink":
            rec["target"] = ti.linkname
        found[ti.name] = rec

    digest = iter_members(path, visit)
    if not manifest_raw:
        raise _refuse(path, "it has no manifest.json (not a hyhome backup, or truncated)")
    try:
        manifest = check_manifest(json.loads(manifest_raw[0].decode("utf-8")))
    except (ValueError, UnicodeDecodeError):
        raise _refuse(path, "manifest.json is not valid JSON") from None
    except HyHomeError as exc:
        raise _refuse(path, exc.msg) from None
    listed = {e["path"]: e for e in manifest["entries"]}
    missing = sorted(set(listed) - set(found))
    extra = sorted(set(found) - set(listed))
    if missing:
        raise _refuse(path, f"{len(missing)} member(s) the manifest lists are missing, first {missing[0]!r}")
    if extra:
        raise _refuse(path, f"{len(extra)} member(s) are not in the manifest, first {extra[0]!r}")
    for name, e in sorted(listed.items()):
        got = found[name]
        if got["type"] != e["type"]:
            raise _refuse(path, f"member {name!r} is a {got['type']}, the manifest says {e['type']}")
        if e["type"] == "file" and (got["size"] != e["size"] or got["sha256"] != e["sha256"]):
            raise _refuse(path, f"member {name!r} does not match its checksum in the manifest")
        if e["type"] == "symlink" and got["target"] != e["target"]:
            raise _refuse(path, f"symlink {name!r} does not match the manifest")
    return Verified(path=path, manifest=manifest, members=len(found), bytes=total[0], sha256=digest)


def read_member(path: str, verified: Verified, member: str) -> bytes:
    """The content of file ``member`` (a dump, ``.env``), read again and checked against the manifest."""
    want = verified.entries.get(member)
    if want is None or want["type"] != "file":
        raise HyHomeError(f"archive {path} has no file {member}")
    out: list[bytes] = []

    def visit(ti, kind, fobj):
        if ti.name == member:
            buf = bytearray()
            digest, size = _hash_stream(fobj, buf.extend)
            if digest != want["sha256"] or size != want["size"]:
                raise HyHomeError(f"member {member!r} changed since it was verified")
            out.append(bytes(buf))

    iter_members(path, visit)
    if not out:
        raise _refuse(path, f"member {member} vanished since it was verified")
    return out[0]


# ------------------------------------------------------------------------------------------------
# Writing an archive (backup)
# ------------------------------------------------------------------------------------------------

@dataclass
class Root:
    """One tree or file to save: ``name`` in the archive, ``path`` on this host, and what it is."""

    name: str
    path: str
    what: str                                   # secrets | env | ca | data
    kind: str = "dir"                           # dir | file
    service: str | None = None                  # data: the service that writes it
    target: str | None = None                   # data: where it is mounted in that service
    optional: bool = False                      # a missing path is skipped instead of failing

    def describe(self) -> dict:
        out = {"name": self.name, "what": self.what, "kind": self.kind, "source": self.path}
        if self.service:
            out.update(service=self.service, target=self.target)
        return out


@dataclass
class BuildResult:
    manifest: dict
    skipped: list[str] = field(default_factory=list)     # paths not saved, with the reason
    bytes: int = 0


def root_name_for(service: str, target: str) -> str:
    """``data-<service>-<target slug>``, a valid root name for a data mount."""
    slug = re.sub(r"[^a-z0-9]+", "_", target.lower()).strip("_") or "root"
    name = re.sub(r"[^a-z0-9_.-]+", "_", f"data-{service.lower()}-{slug}")
    return name[:128]


def _tarinfo(name: str, st, kind: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.mtime = int(st.st_mtime)
    ti.uname = ti.gname = ""
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[kind]
    return ti


def _entry(name: str, st, kind: str) -> dict:
    return {"path": name, "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


class _Writer:
    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar
        self.entries: list[dict] = []
        self.skipped: list[str] = []
        self.bytes = 0

    def add_file(self, name: str, host_path: str, st) -> None:
        fd = os.open(host_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            now = os.fstat(fh.fileno())
            if not stat.S_ISREG(now.st_mode):
                raise HyHomeError(f"{host_path} changed type while being saved")
            ti = _tarinfo(name, now, "file")
            ti.size = now.st_size
            reader = _HashingFile(fh)
            self.tar.addfile(ti, io.BufferedReader(reader, CHUNK))
            if reader.count != now.st_size:
                raise HyHomeError(f"{host_path} changed size while being saved: stop the service writing it")
        entry = _entry(name, now, "file")
        entry.update(size=now.st_size, sha256=reader.digest.hexdigest())
        self.entries.append(entry)
        self.bytes += now.st_size

    def add_bytes(self, name: str, data: bytes, mode: int = 0o600, listed: bool = True) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), mode, int(dt.datetime.now(dt.UTC).timestamp())
        self.tar.addfile(ti, io.BytesIO(data))
        if not listed:
            return
        self.entries.append({"path": name, "type": "file", "mode": mode, "uid": 0, "gid": 0,
                             "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self.bytes += len(data)

    def add_dir(self, name: str, st) -> None:
        self.tar.addfile(_tarinfo(name, st, "dir"))
        self.entries.append(_entry(name, st, "dir"))

    def add_link(self, name: str, host_path: str, st) -> None:
        target = os.readlink(host_path)
        try:
            check_link(name, target)
        except HyHomeError as exc:
            self.skipped.append(f"{host_path}: not saved ({exc.msg})")
            return
        ti = _tarinfo(name, st, "symlink")
        ti.linkname = target
        self.tar.addfile(ti)
        entry = _entry(name, st, "symlink")
        entry["target"] = target
        self.entries.append(entry)

    def add_root(self, root: Root) -> bool:
        top = f"files/{root.name}"
        try:
            st = os.lstat(root.path)
        except FileNotFoundError:
            if root.optional:
                self.skipped.append(f"{root.path}: not saved (missing)")
                return False
            raise HyHomeError(f"{root.what} {root.path} does not exist: nothing to back up there") from None
        want = stat.S_ISDIR if root.kind == "dir" else stat.S_ISREG
        if not want(st.st_mode):
            raise HyHomeError(f"{root.what} {root.path} is not a {'directory' if root.kind == 'dir' else 'file'}"
                              " (a symlink is not followed)")
        if root.kind == "file":
            self.add_file(top, root.path, st)
            return True
        self.add_dir(top, st)
        self._walk(root.path, top)
        return True

    def _walk(self, directory: str, prefix: str) -> None:
        for name in sorted(os.listdir(directory)):
            host = os.path.join(directory, name)
            member = f"{prefix}/{name}"
            try:
                check_member_name(member)
            except HyHomeError as exc:
                self.skipped.append(f"{host}: not saved ({exc.msg})")
                continue
            if TEMP_MARK in name:
                continue                      # a crashed atomic write's leftover
            st = os.lstat(host)
            if stat.S_ISDIR(st.st_mode):
                self.add_dir(member, st)
                self._walk(host, member)
            elif stat.S_ISREG(st.st_mode):
                self.add_file(member, host, st)
            elif stat.S_ISLNK(st.st_mode):
                self.add_link(member, host, st)
            else:
                self.skipped.append(f"{host}: not saved (not a file, directory or symlink)")


def write_archive(fileobj, project: str, roots: list[Root], dumps: dict[str, bytes], now: dt.datetime,
                  extra: dict | None = None) -> BuildResult:
    """Write the archive to ``fileobj``: every root, every dump (``{member name: SQL}``), the manifest last."""
    if not PROJECT_NAME.fullmatch(project or ""):
        raise HyHomeError(f"project name {project!r} cannot name a backup")
    names = [r.name for r in roots]
    for r in roots:
        if not ROOT_NAME.fullmatch(r.name):
            raise HyHomeError(f"root name {r.name!r} is not valid")
    if len(set(names)) != len(names):
        raise HyHomeError("two roots have the same name")
    with tarfile.open(fileobj=fileobj, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
        w = _Writer(tar)
        saved = [r for r in roots if w.add_root(r)]
        for member, data in sorted(dumps.items()):
            check_member_name(member)
            if not DUMP_NAME.fullmatch(member):
                raise HyHomeError(f"dump name {member!r} is not valid")
            w.add_bytes(member, data)
        manifest = {
            "format": FORMAT, "version": VERSION, "project": project,
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "roots": [r.describe() for r in saved],
            "entries": w.entries,
            **(extra or {}),
        }
        check_manifest(manifest)
        w.add_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), listed=False)
    return BuildResult(manifest=manifest, skipped=w.skipped, bytes=w.bytes)


def archive_name(project: str, now: dt.datetime) -> str:
    """``<project>-<YYYYmmddTHHMMSSZ>.tar.gz``: no value, only the project's name and the time."""
    return f"{project}-{now.strftime('%Y%m%dT%H%M%SZ')}{ARCHIVE_SUFFIX}"


def ensure_private_dir(path: str, check: bool = False) -> list[str]:
    """Create ``path`` 0700 (parents too), or tighten an existing one to 0700; returns what changed."""
    refuse_dangerous(path, "backup directory")
    changes = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check:
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)
        return [f"created {path} (0700)"]
    if not stat.S_ISDIR(st.st_mode):
        raise HyHomeError(f"backup directory {path} is not a directory (a symlink is not followed)")
    if stat.S_IMODE(st.st_mode) != 0o700:
        if not check:
            os.chmod(path, 0o700)
        changes.append(f"mode of {path} set to 0700")
    return changes


def create(directory: str, project: str, roots: list[Root], dumps: dict[str, bytes],
           now: dt.datetime, extra: dict | None = None) -> tuple[str, BuildResult]:
    """Write a new archive into ``directory`` (0600, temp file then a no-clobber link); returns (path, result)."""
    ensure_private_dir(directory)
    base = archive_name(project, now)
    tmp = os.path.join(directory, f".{base}{TEMP_MARK}{_secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write_archive(fh, project, roots, dumps, now, extra)
            fh.flush()
            os.fsync(fh.fileno())
        final = os.path.join(directory, base)
        for n in range(2, 100):
            try:
                os.link(tmp, final)             # never replaces an existing archive
                break
            except FileExistsError:
                final = os.path.join(directory, base[: -len(ARCHIVE_SUFFIX)] + f"-{n}{ARCHIVE_SUFFIX}")
        else:
            raise HyHomeError(f"too many archives named {base} in {directory}")
        fsync_dir(directory)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return final, result


# ------------------------------------------------------------------------------------------------
# Restore
# ------------------------------------------------------------------------------------------------

@dataclass
class RestoreTarget:
    """Where root ``name`` goes on this host (chosen by the caller from the project, never the archive)."""

    name: str
    dest: str


def _check_dest(dest: str) -> None:
    refuse_dangerous(dest, "restore destination")
    parent = os.path.dirname(os.path.abspath(dest))
    if os.path.islink(dest):
        raise HyHomeError(f"restore destination {dest} is a symlink: remove it first")
    if os.path.lexists(dest) and os.path.realpath(parent) != parent:
        raise HyHomeError(f"restore destination {dest} is below a symlink")


def plan_restore(verified: Verified, targets: dict[str, str]) -> list[RestoreTarget]:
    """Map every root of the archive to a destination; an unmapped root is refused (nothing touched)."""
    out = []
    for r in verified.manifest["roots"]:
        dest = targets.get(r["name"])
        if not dest:
            raise HyHomeError(f"the archive holds {r['what'] if isinstance(r.get('what'), str) else 'root'} "
                              f"{r['name']!r}, which this project has no place for (a different project, or a "
                              "data mount that was removed); nothing was restored")
        dest = os.path.abspath(dest)
        _check_dest(dest)
        out.append(RestoreTarget(r["name"], dest))
    return out


class _Stager:
    """Extracts members into per-root staging paths, next to each destination."""

    def __init__(self, verified: Verified, plan: list[RestoreTarget], can_chown: bool):
        self.entries = verified.entries
        self.kinds = {r["name"]: r["kind"] for r in verified.manifest["roots"]}
        self.dest = {t.name: t.dest for t in plan}
        self.stage: dict[str, str] = {}
        self.can_chown = can_chown
        tag = _secrets.token_hex(6)
        for name, dest in self.dest.items():
            parent = os.path.dirname(dest)
            os.makedirs(parent, mode=0o755, exist_ok=True)    # like mkdir -p; each root keeps its own mode
            self.stage[name] = os.path.join(parent, f".{os.path.basename(dest)}.restore-{tag}")

    def local(self, member: str) -> str:
        root = root_of(member)
        rel = member[len(f"files/{root}"):].lstrip("/")
        return os.path.join(self.stage[root], *rel.split("/")) if rel else self.stage[root]

    def visit(self, ti, kind, fobj) -> None:
        if root_of(ti.name) not in self.stage:
            return                  # the manifest, dumps, and roots left out of this restore are not placed
        e = self.entries[ti.name]
        path = self.local(ti.name)
        if kind == "dir":
            os.mkdir(path, 0o700)
        elif kind == "symlink":
            os.symlink(e["target"], path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as out:
                digest, size = _hash_stream(fobj, out.write)
                out.flush()
                os.fsync(out.fileno())
            if digest != e["sha256"] or size != e["size"]:
                raise HyHomeError(f"member {ti.name!r} changed since it was verified")

    def apply_attrs(self) -> None:
        """Owners and modes from the manifest, deepest first (a 0500 directory is set after its content)."""
        for member in sorted(self.entries, key=lambda m: -m.count("/")):
            if root_of(member) not in self.stage:
                continue
            e, path = self.entries[member], self.local(member)
            if self.can_chown:
                os.lchown(path, e["uid"], e["gid"])
            if e["type"] != "symlink":
                os.chmod(path, e["mode"])

    def cleanup(self) -> None:
        import shutil

        for path in self.stage.values():
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)


def restore(path: str, verified: Verified, plan: list[RestoreTarget], now: dt.datetime,
            check: bool = False, can_chown: bool | None = None) -> list[dict]:
    """Put every root of a verified archive in place (see the module doc); returns one record per root."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    records = [{"root": t.name, "dest": t.dest, "replaced": os.path.lexists(t.dest),
                "kept_as": f"{t.dest}.pre-restore-{stamp}" if os.path.lexists(t.dest) else None} for t in plan]
    if check:
        return records
    if can_chown is None:
        can_chown = os.geteuid() == 0
    stager = _Stager(verified, plan, can_chown)
    try:
        iter_members(path, stager.visit)
        stager.apply_attrs()
    except ArchiveRefused:
        stager.cleanup()
        raise
    except HyHomeError as exc:
        stager.cleanup()
        raise _refuse(path, exc.msg) from None
    except OSError as exc:
        stager.cleanup()
        raise HyHomeError(f"restore stopped before anything was replaced: {exc.filename or ''}: "
                          f"{exc.strerror}") from None
    # Every root is staged and checked: swap them in.
    for rec in records:
        dest, staged = rec["dest"], stager.stage[rec["root"]]
        if rec["kept_as"]:
            os.rename(dest, rec["kept_as"])
        os.rename(staged, dest)
        fsync_dir(os.path.dirname(dest))
    return records
