"""What a service's mount is for: the host's, the project's configuration, or the project's data.

Pure core (no AnsibleModule), shared by data_dirs, secrets and validate:

    classify(project, svc, mount) -> "host" | "config" | "data" | "other"
    tracked_paths(project_dir) -> frozenset[str]     # absolute paths of git-tracked files (cached)
    file_readers(project, path) -> [(service, how)]   # who can open one host file (binds, secrets)

Classes, first match wins:

- ``other``: not a host path (named volumes, tmpfs, anything without a host path).
- ``host``: a read-only bind of a path outside the project directory (cAdvisor's ``/:/rootfs:ro``,
  ``/sys``, ``/var/run``, ``/var/lib/docker``, ``/etc/machine-id``): the host's, never managed.
- ``config``: the target is listed in the service's ``x-hyhome.config``.
- ``data``: the target is listed in ``x-hyhome.writable`` and the mount is writable.
- ``config``: a read-only bind; a file bind (an existing file, or a missing path named like a
  file or with a ``*.example`` next to it); a directory holding git-tracked files (placeholders
  such as ``.gitkeep`` do not count: an empty data directory is often committed that way).
- ``data``: every other writable bind (directories the containers write).
"""

from __future__ import annotations

import functools
import os

from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs
from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import SYSTEM_DIRS

# Basenames with these suffixes are files: a missing one is reported, never created as a directory
# (which is what Docker silently does).
CONFIG_FILE_SUFFIXES = (
    ".yml", ".yaml", ".json", ".conf", ".cfg", ".ini", ".toml", ".xml", ".pem", ".crt", ".key",
    ".txt", ".properties", ".sh", ".lua", ".js", ".hcl", ".rules", ".tmpl", ".env", ".cnf", ".sql",
    ".htpasswd", ".river", ".alloy",
)
# Committed only to make git keep an (empty) directory: they don't make it configuration.
PLACEHOLDER_NAMES = frozenset({".gitkeep", ".keep", ".gitignore", ".placeholder", ".empty"})
GIT_TIMEOUT = 30
CLASSES = ("host", "config", "data", "other")


def looks_like_file(path: str) -> bool:
    """True when the basename says file (a known config suffix or ``.env*``)."""
    base = os.path.basename(str(path)).lower()
    return base.endswith(CONFIG_FILE_SUFFIXES) or base.startswith(".env")


def example_for(path: str) -> str | None:
    """The ``*.example`` file next to ``path`` (``x.conf.example`` or ``x.example.conf``)."""
    stem, ext = os.path.splitext(path)
    for cand in (path + ".example", stem + ".example" + ext if ext else None):
        if cand and os.path.isfile(cand):
            return cand
    return None


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=32)
def _tracked(project_dir: str) -> tuple[frozenset[str], frozenset[str]]:
    """(tracked files, directories holding a tracked non-placeholder file) under ``project_dir``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CEILING_DIRECTORIES")}
    env.update(GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    # Read-only listing of names. safe.directory: the project is often cloned by another user than
    # the one running day0; fsmonitor off: ls-files must not start a program the repo configures.
    cmd = ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "ls-files", "-z"]
    try:
        proc = procs.run(cmd, cwd=project_dir, timeout=GIT_TIMEOUT, env=env, text=False)
    except (OSError, procs.CommandTimeout):
        return frozenset(), frozenset()
    if proc.returncode != 0:
        return frozenset(), frozenset()
    files = set()
    dirs = set()
    for rel in proc.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if not rel:
            continue
        path = os.path.normpath(os.path.join(project_dir, rel))
        files.add(path)
        if os.path.basename(path) in PLACEHOLDER_NAMES:
            continue
        parent = os.path.dirname(path)
        while _within(parent, project_dir) and parent not in dirs:
            dirs.add(parent)
            if parent == project_dir:
                break
            parent = os.path.dirname(parent)
    return frozenset(files), frozenset(dirs)


def tracked_paths(project_dir) -> frozenset[str]:
    """Absolute paths of the files git tracks under ``project_dir``.

    One ``git ls-files`` per directory, cached for the process. Not a git work tree, git missing
    or too slow: nothing is tracked (an empty set).
    """
    return _tracked(_norm(str(project_dir)))[0]


def clear_cache() -> None:
    """Forget cached ``git ls-files`` results (tests, or after the tree changed)."""
    _tracked.cache_clear()


def _declared(svc, key: str) -> set[str]:
    decl = (getattr(svc, "extensions", None) or {}).get("x-hyhome")
    if not isinstance(decl, dict):
        return set()
    value = decl.get(key)
    if not isinstance(value, list):
        return set()
    return {str(t).rstrip("/") or "/" for t in value if isinstance(t, str) and t.strip()}


def _is_file(host: str) -> bool:
    if os.path.isdir(host):
        return False
    return os.path.lexists(host) or looks_like_file(host) or example_for(host) is not None


def classify(project, svc, mount) -> str:
    """``"host"``, ``"config"``, ``"data"`` or ``"other"`` for one mount of ``svc`` (see module doc)."""
    host = getattr(mount, "host_path", None)
    if getattr(mount, "type", None) not in ("bind", "volume") or not host or not isinstance(host, str):
        return "other"
    project_dir = _norm(project.working_dir)
    host = _norm(host if os.path.isabs(host) else os.path.join(project_dir, host))
    target = str(getattr(mount, "target", "") or "").rstrip("/") or "/"
    read_only = bool(getattr(mount, "read_only", False))
    if read_only and not _within(host, project_dir):
        return "host"
    if target in _declared(svc, "config"):
        return "config"
    if not read_only and target in _declared(svc, "writable"):
        return "data"
    if read_only or _is_file(host):
        return "config"
    if _within(host, project_dir) and host in _tracked(project_dir)[1]:
        return "config"
    return "data"


def file_readers(project, path) -> list[tuple[str, str]]:
    """``(service, how)`` for every service that can open host file ``path``, sorted by service.

    A service reads it through a bind (or local ``o: bind`` volume) of the file or of a directory
    above it, or through a compose secret whose ``file:`` is it. Symlinks are followed on both
    sides, so a bind of a symlinked directory counts. A bind of the whole project or of a system
    directory (cAdvisor's ``/:/rootfs:ro``, ``/var``, ``/srv``) is a host-wide view, not a reader.
    """
    project_dir = _norm(project.working_dir)
    path = _norm(str(path))
    wanted = {path, os.path.realpath(path)}
    host_wide = set(SYSTEM_DIRS)
    out: list[tuple[str, str]] = []
    for name in sorted(project.services):
        svc = project.services[name]
        for m in svc.mounts:
            host = getattr(m, "host_path", None)
            if getattr(m, "type", None) not in ("bind", "volume") or not host or not isinstance(host, str):
                continue
            host = _norm(host if os.path.isabs(host) else os.path.join(project_dir, host))
            if host not in wanted and (host in host_wide or _within(project_dir, host)):
                continue
            if any(_within(w, h) for w in wanted for h in (host, os.path.realpath(host))):
                out.append((name, f"{'bind' if m.type == 'bind' else 'volume'} {host} -> {m.target}"))
        for ref in svc.secrets:
            secret = (project.secrets or {}).get(ref.source)
            sfile = getattr(secret, "file", None)
            if sfile and {_norm(sfile), os.path.realpath(sfile)} & wanted:
                out.append((name, f"secret {ref.source} -> {ref.target}"))
    return out
