"""Filesystem primitives shared by every module that writes: atomic writes and path safety.

Atomic write: temp file in the same directory, fsync, chmod/chown on the temp file, rename over
the target, fsync the directory. A crash at any point leaves the old complete file or the new
complete file, never a partial one, and the new file never exists with a looser mode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets as _secrets
import stat

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

# Paths a bootstrap tool must never write into or chown, even when told to.
SYSTEM_DIRS = (
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/usr", "/var", "/var/lib", "/var/lib/docker", "/var/lib/containerd",
    "/var/run", "/home", "/opt", "/srv", "/mnt", "/media", "/tmp", "/var/tmp", "/var/log",  # noqa: S108
)
# Trees that are refused as a whole, including everything beneath them.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
    "/usr", "/var/lib/docker", "/var/lib/containerd", "/run/docker.sock", "/var/run/docker.sock",
)


# Our temp files are named ``.<base>.tmp.hyhome-<12 hex>`` (created O_EXCL, never followed): only
# names of exactly that shape are ever removed as leftovers, never a user's ``.<base>.tmp-old``.
TEMP_MARK = ".tmp.hyhome-"
_TEMP_RE = re.compile(r"\.(?P<base>.+)\.tmp\.hyhome-[0-9a-f]{12}")


def temp_name(base: str) -> str:
    """A fresh, unmistakable temp file name for ``base`` (see TEMP_MARK)."""
    return f".{base}{TEMP_MARK}{_secrets.token_hex(6)}"


def own_temps(directory: str, base: str | None = None) -> list[str]:
    """Names of temp files our atomic_write left in ``directory`` (for ``base`` only, when given)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        m = _TEMP_RE.fullmatch(name)
        if m and (base is None or m.group("base") == base):
            out.append(name)
    return sorted(out)


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:      # fsync names no file: name the directory
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    finally:
        os.close(fd)


def os_error_text(exc: OSError, path: str | None = None) -> str:
    """``<file>: <reason>`` for an OSError, the one-line form every module reports: the file the error
    names, else ``path``; just the reason when neither is known. Never a value, only a path."""
    name = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc)
    if name is None:
        return reason
    return f"{os.fsdecode(name) if isinstance(name, str | bytes) else name}: {reason}"


def atomic_write(path: str, data: bytes, mode: int = 0o600, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to ``path`` atomically with the given mode and owner (-1 keeps the default).

    The temp file is created 0600 before any byte is written, so the content is never exposed
    with a looser mode, even briefly. An OSError names ``path`` (never the temp file, and never
    nothing, as a full disk failing ``write`` would): see :func:`os_error_text`.
    """
    try:
        _atomic_write(path, data, mode, uid, gid)
    except OSError as exc:
        ours = f".{os.path.basename(path)}{TEMP_MARK}"
        named = exc.filename
        if named is not None and not (isinstance(named, str | bytes)
                                      and os.path.basename(os.fsdecode(named)).startswith(ours)):
            raise       # names a file already (the directory, say): keep it
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None


def _atomic_write(path: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    base = os.path.basename(path)
    tmp = None
    for _attempt in range(100):
        candidate = os.path.join(directory, temp_name(base))
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            continue
        tmp = candidate
        break
    if tmp is None:
        raise HyHomeError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(directory)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_bytes(path: str, what: str = "file") -> bytes | None:
    """The content of ``path``, or None when it does not exist; other errors become HyHomeError."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HyHomeError(f"cannot read {what} {path}: {exc.strerror}") from None


def remove_stale_temps(directory: str, base: str | None = None) -> int:
    """Remove the temp files a crashed atomic_write left next to ``base`` (every one of ours in
    ``directory`` when ``base`` is None); returns how many. Other files are never touched."""
    removed = 0
    for name in own_temps(directory, base):
        try:
            os.unlink(os.path.join(directory, name))
            removed += 1
        except OSError:
            pass
    return removed


def _normal(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def refuse_dangerous(path: str, what: str = "path") -> None:
    """Raise for ``/``, system directories and trees, and the Docker socket."""
    p = _normal(path)
    real = os.path.realpath(p)
    for candidate in (p, real):
        if candidate in SYSTEM_DIRS:
            raise HyHomeError(f"refusing {what} {path}: it is a system directory")
        for tree in SYSTEM_TREES:
            if tree != "/" and (candidate == tree or candidate.startswith(tree + "/")):
                raise HyHomeError(f"refusing {what} {path}: it is inside the system tree {tree}")


def ensure_within(root: str, path: str, what: str = "path") -> str:
    """Return the absolute form of ``path`` after checking it stays inside ``root``.

    Checks the lexical path (no ``../`` escape) and every existing component with symlinks
    resolved (a symlinked component pointing outside ``root`` is refused).
    """
    root_n = _normal(root)
    p = _normal(path if os.path.isabs(path) else os.path.join(root_n, path))
    if p != root_n and not p.startswith(root_n.rstrip("/") + "/"):
        raise HyHomeError(f"refusing {what} {path}: it is outside {root_n}")
    root_real = os.path.realpath(root_n)
    real = os.path.realpath(p)
    if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
        raise HyHomeError(f"refusing {what} {path}: a symlink makes it resolve to {real}, outside {root_n}")
    return p


def is_symlink(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise


# uid_t/gid_t are 32-bit and (uid_t)-1 tells chown "leave unchanged": the largest real id is 2**32 - 2.
MAX_ID = 2**32 - 2
_SIGNED_INT = re.compile(r"[+-]?[0-9]+")


def check_id(value, what: str) -> int:
    """``value`` (an int or a string of digits) as a valid uid/gid, else one clear HyHomeError.

    Called while planning, so a bad id fails before anything is created."""
    if isinstance(value, bool) or not isinstance(value, int | str) or (
            isinstance(value, str) and not _SIGNED_INT.fullmatch(value.strip())):
        raise HyHomeError(f"{what} {value!r} is not a number")
    n = int(value)
    if n < 0:
        raise HyHomeError(f"{what} {value!r} must not be negative")
    if n > MAX_ID:
        raise HyHomeError(f"{what} {value!r} is too large: ids go up to {MAX_ID}")
    return n


def resolve_owner(owner, group=None) -> tuple[int, int]:
    """Turn user/group names or numbers into (uid, gid); -1 where not given. Unknown names and
    numbers out of range (negative, or beyond 32 bits) raise."""
    import grp
    import pwd

    def _id(value, lookup, what, unit):
        if value is None or value == "":
            return -1
        if isinstance(value, int) or _SIGNED_INT.fullmatch(str(value).strip()):
            return check_id(value, what)
        try:
            return lookup(str(value))[2]
        except KeyError:
            raise HyHomeError(
                f"unknown {what} {value!r}: no such {unit[0]} on this host (use a numeric {unit[1]})") from None

    return _id(owner, pwd.getpwnam, "owner", ("user", "uid")), _id(group, grp.getgrnam, "group", ("group", "gid"))


def parse_mode(value, what: str = "mode") -> int | None:
    """An octal string ("0750", "2770") or an int to an int; None and "" stay None."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value).strip(), 8)
        except ValueError:
            raise HyHomeError(f"invalid {what} {value!r}: not an octal mode such as '0750'") from None
    if not 0 <= mode <= 0o7777:
        raise HyHomeError(f"invalid {what} {value!r}: out of range")
    return mode
