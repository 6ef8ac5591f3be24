"""One project context per run: ``docker compose config`` computed once, reused by every step.

Every step of a run (preflight, secrets, data dirs, validate, compose, verify) reads the project
through :func:`compose_model.load_project`. The expensive part is the ``docker compose config
--format json`` call, which only depends on what this module puts in the key:

- the content of every compose file the raw walk reached (root files, included files, ``extends``
  bases) and the walk's errors (a missing include);
- the content of every env file that can feed interpolation or ``environment:``: the project's
  ``.env`` (or ``--env-file``), each included project's ``.env`` / ``env_file``, each service's
  ``env_file:`` (present or absent);
- the compose argv (project dir, ``-f`` files, ``--env-file``, ``--profile``s);
- the values of the environment variables the files (and ``.env``) reference, plus every
  ``COMPOSE_*`` and ``DOCKER_*`` variable and ``HOME``: day0's check mode hands values through the
  environment, and they win over ``.env``;
- the docker CLI and Compose plugin binaries (path, size, mtime).

Values only enter the key through a SHA-256, so the key reveals nothing. The cached entry (compose's
stdout and stderr, so warnings are kept) lives in ``<project>/.hyhome/project-context.json``: a
0700 directory and a 0600 file, written atomically. A cache that is not a regular file owned by
this user with no group/other access, is a symlink, is too large, does not parse, or does not have
the expected structure is ignored and recomputed. Check mode reads it but never writes it.

API:

    context_key(raw, argv, environ) -> str                  # hex SHA-256
    read(project_dir, key) -> dict | None                   # {"returncode", "stdout", "stderr"}
    write(project_dir, key, returncode, stdout, stderr)     # best effort, never raises
    memo(project, name, compute, valid) -> value            # more output derived from the same project
    CACHE_MODES = ("off", "read", "write")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

STATE_DIR = ".hyhome"
CACHE_FILE = "project-context.json"
CACHE_VERSION = 1
CACHE_MODES = ("off", "read", "write")
MAX_BYTES = 64 * 1024 * 1024
# Where the Compose v2 CLI plugin may live (docker's own search order, plus $DOCKER_CONFIG).
PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")
_ENV_PREFIXES = ("COMPOSE_", "DOCKER_")


def cache_path(project_dir: str) -> str:
    return os.path.join(project_dir, STATE_DIR, CACHE_FILE)


def _digest_file(path: str) -> str:
    """Content digest of a file, or a marker saying why there is none (absent, unreadable)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"unreadable:{exc.errno}"


def _binary_stamp(path: str | None) -> list:
    if not path:
        return []
    try:
        st = os.stat(path)
    except OSError:
        return [path, "absent"]
    return [path, st.st_size, st.st_mtime_ns, st.st_ino]


def _compose_plugin_stamps(environ: dict) -> list:
    dirs = [os.path.join(environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "cli-plugins"),
            *PLUGIN_DIRS]
    stamps = []
    for d in dirs:
        candidate = os.path.join(d, "docker-compose")
        if os.path.exists(candidate):
            stamps.append(_binary_stamp(candidate))
    return stamps


def _env_file_paths(raw) -> list[str]:
    """Every env file that can change the config: the project's, includes' and services' ones."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
        _abspath,
        _expand_defaults,
        _include_entries,
    )

    paths: list[str] = []
    if raw.env_file:
        paths.append(raw.env_file)
    for rf in raw.files:
        data = rf.data or {}
        here = os.path.dirname(rf.path)
        for entry in data.get("include") or []:
            if not isinstance(entry, dict):
                continue
            env_files = entry.get("env_file")
            env_files = [env_files] if isinstance(env_files, str) else list(env_files or [])
            paths += [_abspath(_expand_defaults(str(p), raw.env), here) for p in env_files]
        for inc_paths, pdir in _include_entries(data, raw.env):
            for p in inc_paths:
                inc_dir = _abspath(pdir, here) if pdir else os.path.dirname(_abspath(p, here))
                paths.append(os.path.join(inc_dir, ".env"))
        services = data.get("services")
        for svc in (services.values() if isinstance(services, dict) else []):
            if not isinstance(svc, dict):
                continue
            env_files = svc.get("env_file")
            env_files = [env_files] if isinstance(env_files, str | dict) else list(env_files or [])
            for ef in env_files:
                p = ef.get("path") if isinstance(ef, dict) else ef
                if p:
                    paths.append(_abspath(_expand_defaults(str(p), raw.env), rf.base_dir))
    seen: set[str] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _referenced_names(raw, env_texts: list[bytes]) -> set[str]:
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import (
        raw_env_refs,
        scan_interpolations,
    )

    names = {ref.name for ref in raw_env_refs(raw)}
    for text in env_texts:
        names.update(name for name, _, _, _ in scan_interpolations(text.decode("utf-8", "replace")))
    return names


def context_key(raw, argv: list[str], environ: dict) -> str:
    """The cache key (hex SHA-256) of ``docker compose config`` for this raw walk and argv."""
    env_files = []
    env_texts = []
    for path in _env_file_paths(raw):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            env_texts.append(data)
            env_files.append([path, hashlib.sha256(data).hexdigest()])
        except FileNotFoundError:
            env_files.append([path, "absent"])
        except OSError as exc:
            env_files.append([path, f"unreadable:{exc.errno}"])
    names = _referenced_names(raw, env_texts)
    names.update(k for k in environ if k.startswith(_ENV_PREFIXES))
    names.add("HOME")
    values = {}
    for name in sorted(names):
        value = environ.get(name)
        values[name] = None if value is None else hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    doc = {
        "v": CACHE_VERSION,
        "uid": os.geteuid(),
        "argv": list(argv),
        "docker": _binary_stamp(argv[0] if argv else None),
        "plugins": _compose_plugin_stamps(environ),
        "files": [[rf.path, rf.role, getattr(rf, "digest", None) or _digest_file(rf.path)] for rf in raw.files],
        "errors": sorted(f"{e.location.file}:{e.location.line}:{e.message}" for e in raw.errors),
        "env_files": env_files,
        "environ": values,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _safe_dir(directory: str) -> bool:
    """The state directory is ours: a real directory (no symlink), owned by this user."""
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def read(project_dir: str, key: str) -> dict | None:
    """The cached entry for ``key``, or None when absent, foreign, unsafe, corrupt or for another key."""
    doc = _read_doc(project_dir, key)
    return None if doc is None else {k: doc[k] for k in ("returncode", "stdout", "stderr")}


def _read_doc(project_dir: str, key: str) -> dict | None:
    directory = os.path.join(project_dir, STATE_DIR)
    if not _safe_dir(directory):
        return None
    try:
        fd = os.open(cache_path(project_dir), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:   # absent, or a symlink (ELOOP)
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077
                or st.st_size > MAX_BYTES):
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = None
            doc = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        if fd is not None:
            os.close(fd)
    return _valid_entry(doc, key)


def _valid_entry(doc, key: str) -> dict | None:
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or doc.get("key") != key:
        return None
    rc, out, err = doc.get("returncode"), doc.get("stdout"), doc.get("stderr")
    if not isinstance(rc, int) or isinstance(rc, bool) or not isinstance(out, str) or not isinstance(err, str):
        return None
    if rc == 0:
        try:
            config = json.loads(out)
        except ValueError:
            return None
        if not isinstance(config, dict) or not isinstance(config.get("services", {}), dict):
            return None
    extra = doc.get("extra", {})
    return {"returncode": rc, "stdout": out, "stderr": err, "extra": extra if isinstance(extra, dict) else {}}


GITIGNORE = b"# Hy-Home Bootstrap's state for this project (caches, fingerprints): not part of the project.\n*\n"


def ensure_state_dir(project_dir: str) -> str:
    """``<project>/.hyhome``: created 0700 when missing, with a ``.gitignore`` so the state never
    shows in the project's ``git status``; refused when it is a symlink or another user's."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    directory = os.path.join(project_dir, STATE_DIR)
    with contextlib.suppress(FileExistsError):      # made already (maybe by a concurrent step): checked next
        os.mkdir(directory, 0o700)
    if not _safe_dir(directory):
        raise HyHomeError(f"{directory} is not a directory of this user (a symlink, a file or another "
                          "user's); remove it so it can be recreated")
    if stat.S_IMODE(os.lstat(directory).st_mode) & 0o077:
        os.chmod(directory, 0o700)
    ignore = os.path.join(directory, ".gitignore")
    if not os.path.lexists(ignore):
        atomic_write(ignore, GITIGNORE, mode=0o644)
    return directory


def write(project_dir: str, key: str, returncode: int, stdout: str, stderr: str, extra: dict | None = None) -> bool:
    """Store the entry atomically (0600 file in a 0700 directory). A cache that cannot be written
    is no error: the next step recomputes. Returns whether it was written."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    try:
        ensure_state_dir(project_dir)
        doc = {"version": CACHE_VERSION, "key": key, "returncode": returncode, "stdout": stdout, "stderr": stderr,
               "extra": extra or {}}
        atomic_write(cache_path(project_dir), json.dumps(doc).encode(), mode=0o600)
    except (OSError, HyHomeError):   # a cache is an optimisation, never a failure
        return False
    return True


def memo(project, name: str, compute, valid=lambda value: True):
    """A value derived from the project alone (same key), computed once per context and kept with it.

    For results of other ``docker compose`` calls on the same project, such as ``config --hash``.
    ``valid`` checks a stored value before it is trusted; an invalid one is recomputed.
    """
    context = getattr(project, "context", None) or {}
    key, mode = context.get("full_key"), context.get("mode")
    if not key or mode not in ("read", "write"):
        return compute()
    doc = _read_doc(project.working_dir, key)
    extra = doc["extra"] if doc else {}
    if name in extra and valid(extra[name]):
        return extra[name]
    value = compute()
    if mode == "write" and doc is not None:
        write(project.working_dir, key, doc["returncode"], doc["stdout"], doc["stderr"], {**extra, name: value})
    return value
