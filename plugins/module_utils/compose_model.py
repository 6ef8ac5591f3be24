"""One typed model of a Compose project, computed once and read by every role.

Built from ``docker compose config --format json`` (include-resolved, interpolated: the canonical
form) plus the raw files where the raw text matters (``$VAR`` traps, env references, line numbers).
When ``docker compose config`` fails, the model is built from the raw files as far as possible and
``Project.config_error`` says why.

API (stable; other module_utils depend on it):

    load_project(project_dir, files=None, env_file=None, profiles=None, docker="docker",
                 cache="off", raw=None) -> Project   # cache: the run's project context (project_context);
                                                    # raw: a load_raw result the caller already has
    project_from_config(config: dict, project_dir, raw=None) -> Project   # pure, for unit tests

Helpers added on top of the agreed API (all optional for callers):

    load_raw(project_dir, files=None, env_file=None) -> RawProject      # raw YAML walk only
    project_from_raw(raw, project_dir, config_error=None) -> Project    # best-effort fallback
    find_compose_file(project_dir) -> str
    parse_bytes("256m") -> 268435456
    scan_interpolations(text) -> list[(name, operator, offset)]
    split_compose_stderr(stderr) -> (error lines, warning messages)   # the one parser of compose's stderr
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field, replace

import yaml
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

try:  # libyaml keeps marks (line numbers) and is several times faster
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-Python fallback
    _Loader = yaml.SafeLoader

# Limits of the one YAML loader (``parse_yaml``), so a small hostile file cannot take minutes or
# gigabytes. Real compose files are < 10 levels deep and their anchors add a few nodes per service.
MAX_YAML_BYTES = 64 * 1024 * 1024
MAX_YAML_DEPTH = 100              # nested collections; libyaml slows down per level, then crashes
MAX_ALIAS_NODES = 1_000_000       # nodes aliases may add to those written (or 10x those written)

# Compose's own lookup order when no -f is given.
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILE_NAMES = ("compose.override.yaml", "compose.override.yml",
                       "docker-compose.override.yaml", "docker-compose.override.yml")
SECRETS_DIR = "/run/secrets/"
_SECRET_PATH_RE = re.compile(r"/run/secrets/([A-Za-z0-9][A-Za-z0-9._-]*)")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONFIG_TIMEOUT = 120

# A resource name (a compose secret, a registry entry) that becomes a file name on the host and on
# the controller: one path component in Compose's own charset, bounded, never ``.``/``..``.
RESOURCE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESOURCE_NAME_MAX = 200


def check_resource_name(kind: str, name, where: str = "") -> str:
    """``name`` if it is a safe resource name, else HyHomeError naming the ``kind`` and ``where``
    it was found (a file, an option). Letters, digits, ``.``, ``_`` and ``-``, starting with a letter
    or digit, at most RESOURCE_NAME_MAX characters, no ``..``: never a path, never hidden."""
    text = name if isinstance(name, str) else ""
    if not RESOURCE_NAME_RE.fullmatch(text) or ".." in text or len(text) > RESOURCE_NAME_MAX:
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise HyHomeError(f"{kind} name {shown}{f' ({where})' if where else ''} is not allowed: it is used as a "
                          f"file name, so it must be 1-{RESOURCE_NAME_MAX} letters, digits, '.', '_' or '-', start "
                          f"with a letter or digit, and contain no '/' and no '..'; rename the {kind}")
    return text


@dataclass(frozen=True)
class Location:
    file: str          # absolute path of the compose file
    line: int | None   # 1-based, None when unknown


@dataclass(frozen=True)
class Mount:
    type: str                   # "bind" | "volume" | "tmpfs" | ...
    target: str                 # path inside the container
    read_only: bool
    host_path: str | None       # absolute host path: bind mounts and local-driver bind volumes
    volume: str | None = None   # named volume key (type "volume")
    create_host_path: bool = True
    source: str | None = None   # as compose gives it (bind: absolute host path; volume: key)
    # where the ``volumes:`` entry is written (raw walk; an ``extends:`` base's line when inherited)
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SecretRef:
    source: str                 # key in the top-level ``secrets:`` registry
    target: str                 # absolute in-container path, e.g. /run/secrets/db_password
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@dataclass(frozen=True)
class Port:
    target: int
    published: int | None
    host_ip: str | None
    protocol: str = "tcp"


@dataclass(frozen=True)
class EnvRef:
    name: str
    has_default: bool           # ${X:-d} / ${X-d}
    required: bool              # ${X:?msg} / ${X?msg}
    location: Location
    path: str | None = None     # dotted key path of the scalar, e.g. "services.web.command[2]"
    service: str | None = None  # service whose key holds the scalar (merge keys followed)
    text: str | None = None     # the reference as written, e.g. "${X:-d}" or "$X"


@dataclass
class Service:
    name: str
    image: str | None
    build: dict | None
    user: str | None                       # as declared (``user:``), None when not declared
    mounts: list[Mount] = field(default_factory=list)
    secrets: list[SecretRef] = field(default_factory=list)
    secret_paths_read: set[str] = field(default_factory=set)   # /run/secrets/... paths in command,
    # entrypoint, healthcheck test and *_FILE environment values
    healthcheck: dict | None = None        # None when absent; {"disable": True} when disabled
    ports: list[Port] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    network_mode: str | None = None
    restart: str | None = None
    security_opt: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)   # supplementary groups (names or gids)
    privileged: bool = False
    pid: str | None = None
    ipc: str | None = None
    read_only: bool = False
    mem_limit: int | None = None           # bytes; mem_limit or deploy.resources.limits.memory
    environment: dict[str, str | None] = field(default_factory=dict)
    depends_on: dict[str, dict] = field(default_factory=dict)
    command: list[str] | str | None = None
    entrypoint: list[str] | str | None = None
    profiles: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    extensions: dict = field(default_factory=dict)   # ``x-hyhome`` and other ``x-*`` keys
    location: Location | None = None
    env_files: list[str] = field(default_factory=list)       # absolute paths of ``env_file:``
    # Interpolations written in the raw command / entrypoint / healthcheck (before compose
    # substituted them): the ``$VAR``-meant-``$$VAR`` traps. ``$$`` escapes are not listed.
    raw_interpolations: list[EnvRef] = field(default_factory=list)


@dataclass(frozen=True)
class Secret:
    name: str
    file: str | None            # absolute host path for file-based secrets
    external: bool = False
    environment: str | None = None
    location: Location | None = None   # where the registry entry is written, when known


@dataclass(frozen=True)
class Network:
    key: str
    name: str                   # the engine-side name
    external: bool


@dataclass(frozen=True)
class FileError:
    """A compose file that could not be read or parsed (YAML syntax, missing include)."""

    location: Location
    message: str


@dataclass
class Project:
    name: str
    working_dir: str
    files: list[str]                         # every compose file, root first, then included ones
    services: dict[str, Service] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    volumes: dict[str, dict] = field(default_factory=dict)
    env_refs: list[EnvRef] = field(default_factory=list)
    config_error: str | None = None          # set when `docker compose config` failed
    source: str = "config"                   # "config" | "raw"
    # Registry entries written in the files but pruned by compose because no (active) service
    # uses them. Kept apart so consumers of ``secrets`` only see what the stack needs.
    unused_secrets: dict[str, Secret] = field(default_factory=dict)
    file_errors: list[FileError] = field(default_factory=list)
    config_warnings: list[str] = field(default_factory=list)  # compose's level=warning lines
    env_file: str | None = None              # the .env file used for interpolation (may not exist)
    env_file_vars: list[str] = field(default_factory=list)    # names defined there (no values)
    extensions: dict = field(default_factory=dict)            # top-level ``x-*`` keys
    # section (services, networks, volumes, secrets, configs) -> key -> where it is first declared
    declarations: dict[str, dict[str, Location]] = field(default_factory=dict)
    context: dict = field(default_factory=dict)   # {"cache": "hit"|"miss"|"off", "key": short key, ...}


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "t": 1024**4, "tb": 1024**4}


def parse_bytes(value) -> int | None:
    """Compose/Docker size ("256m", "1g", "1073741824", 512) -> bytes; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise HyHomeError(f"invalid memory size: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise HyHomeError(f"invalid memory size: {value!r} (use e.g. 512m or 1g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def scan_interpolations(text: str) -> list[tuple[str, str, int, str]]:
    """Find compose interpolations in ``text``.

    Returns ``(name, operator, offset, written)`` for every ``$VAR`` / ``${VAR}`` /
    ``${VAR<op>arg}`` (op one of ``:-``, ``-``, ``:?``, ``?``, ``:+``, ``+``; ``""`` for none),
    including references nested in a default (``${A:-${B}}``). ``$$`` is an escape.
    """
    out: list[tuple[str, str, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$":
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            i += 2
            continue
        if nxt == "{":
            depth, j = 1, i + 2
            while j < n and depth:
                if text[j] == "$" and j + 1 < n and text[j + 1] == "$":
                    j += 2
                    continue
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            if depth:  # unterminated: compose rejects it; nothing to report as a reference
                i += 2
                continue
            body = text[i + 2:j - 1]
            m = _VAR_NAME_RE.match(body)
            if m:
                rest = body[m.end():]
                op = ""
                for candidate in (":-", ":?", ":+", "-", "?", "+"):
                    if rest.startswith(candidate):
                        op = candidate
                        break
                out.append((m.group(0), op, i, text[i:j]))
                if op:
                    arg_offset = i + 2 + m.end() + len(op)
                    for name, nop, off, written in scan_interpolations(rest[len(op):]):
                        out.append((name, nop, arg_offset + off, written))
            i = j
            continue
        m = _VAR_NAME_RE.match(text, i + 1)
        if m:
            out.append((m.group(0), "", i, text[i:m.end()]))
            i = m.end()
            continue
        i += 1
    return out


def _expand_defaults(text: str, env: dict[str, str]) -> str:
    """Best-effort interpolation for the raw fallback: values from ``env`` else defaults."""

    def repl(name: str, op: str, arg: str) -> str | None:
        val = env.get(name)
        if op in (":-", ":?"):
            return val if val else (arg if op == ":-" else None)
        if op in ("-", "?"):
            return val if val is not None else (arg if op == "-" else None)
        if op == ":+":
            return arg if val else ""
        if op == "+":
            return arg if val is not None else ""
        return val

    result, last = [], 0
    for name, op, off, written in scan_interpolations(text):
        if off < last:  # nested in a default already handled
            continue
        arg = ""
        if op:
            arg = _expand_defaults(written[2 + len(name) + len(op):-1], env)
        value = repl(name, op, arg)
        result.append(text[last:off])
        result.append(written if value is None else value)
        last = off + len(written)
    result.append(text[last:])
    return "".join(result).replace("$$", "$")


def _secret_paths(service: Service) -> set[str]:
    texts: list[str] = []
    for value in (service.command, service.entrypoint):
        if isinstance(value, list):
            texts.extend(str(v) for v in value)
        elif isinstance(value, str):
            texts.append(value)
    if service.healthcheck and not service.healthcheck.get("disable"):
        test = service.healthcheck.get("test")
        if isinstance(test, list):
            texts.extend(str(v) for v in test)
        elif isinstance(test, str):
            texts.append(test)
    for key, value in service.environment.items():
        if key.endswith("_FILE") and isinstance(value, str):
            texts.append(value)
    found = set()
    for text in texts:
        for m in _SECRET_PATH_RE.finditer(text):
            found.add(SECRETS_DIR + m.group(1).rstrip("."))
    return found


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


def _as_int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).split("-", maxsplit=1)[0])
    except ValueError:
        return None


def _mode(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):  # raw YAML 1.1 reads 0o440 as a string; compose reads "0440" as decimal
        value = value.strip().lower()
        return int(value[2:], 8) if value.startswith("0o") else int(value)
    return int(value)


def _str_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _norm_healthcheck(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return None
    test = value.get("test")
    if _as_bool(value.get("disable")) or test == ["NONE"] or test == "NONE":
        return {"disable": True}
    return dict(value)


def _norm_env(value) -> dict[str, str | None]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    env: dict[str, str | None] = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        env[key] = val if sep else None
    return env


def _norm_depends(value) -> dict[str, dict]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): dict(v or {}) for k, v in value.items()}
    return {str(k): {"condition": "service_started"} for k in value}


def _norm_labels(value) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    out = {}
    for item in value:
        key, _, val = str(item).partition("=")
        out[key] = val
    return out


def _mem_limit(svc: dict) -> int | None:
    value = svc.get("mem_limit")
    if value in (None, "", 0, "0"):
        value = (((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
    return parse_bytes(value) or None


def _bind_volume_path(volume: dict | None) -> str | None:
    """Host path of a named volume on the local driver with ``o: bind`` + ``device:``."""
    if not volume or volume.get("external"):
        return None
    if (volume.get("driver") or "local") != "local":
        return None
    opts = volume.get("driver_opts") or {}
    options = [o.strip() for o in str(opts.get("o", "")).split(",")]
    if ("bind" in options or "rbind" in options) and opts.get("device"):
        return str(opts["device"])
    return None


def _mount_from_long(vol: dict, volumes: dict, base_dir: str) -> Mount:
    mtype = vol.get("type") or "volume"
    source = vol.get("source")
    target = str(vol.get("target", ""))
    read_only = _as_bool(vol.get("read_only", False))
    if mtype == "bind":
        host = _abspath(str(source), base_dir) if source else None
        create = _as_bool((vol.get("bind") or {}).get("create_host_path", False))
        return Mount("bind", target, read_only, host, None, create, host)
    if mtype == "volume":
        name = str(source) if source else None
        host = _bind_volume_path(volumes.get(name)) if name else None
        if host:
            host = _abspath(host, base_dir)
        return Mount("volume", target, read_only, host, name, False, name)
    return Mount(str(mtype), target, read_only, None, None, False, None if source is None else str(source))


def _abspath(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir, path))


def _parse_short_volume(spec: str) -> dict:
    """Compose short syntax ``[SRC:]TARGET[:MODE]`` -> long syntax dict (POSIX paths only)."""
    parts = spec.split(":")
    mode = ""
    if len(parts) >= 3:
        source, target, mode = parts[0], parts[1], ":".join(parts[2:])
    elif len(parts) == 2:
        if parts[1].startswith("/") or not parts[0]:
            source, target = parts
        else:  # "/target:ro"
            source, target, mode = "", parts[0], parts[1]
    else:
        source, target = "", parts[0]
    options = {o for o in mode.split(",") if o}
    long: dict = {"target": target, "read_only": "ro" in options}
    if not source:
        long["type"] = "volume"
    elif source.startswith((".", "/", "~")):
        long.update(type="bind", source=source, bind={"create_host_path": True})
    else:
        long.update(type="volume", source=source)
    return long


def _ports(value) -> list[Port]:
    ports: list[Port] = []
    for p in value or []:
        if isinstance(p, dict):
            target = _as_int(p.get("target"))
            if target is None:
                continue
            ports.append(Port(target, _as_int(p.get("published")), p.get("host_ip") or None,
                              str(p.get("protocol") or "tcp")))
            continue
        spec = str(p)
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.rsplit("/", 1)
        parts = spec.rsplit(":", 2) if not spec.startswith("[") else [spec]
        host_ip, published = None, None
        if len(parts) == 3:
            host_ip, published, target_s = parts
        elif len(parts) == 2:
            published, target_s = parts
        else:
            target_s = parts[0]
        target = _as_int(target_s)
        if target is not None:
            ports.append(Port(target, _as_int(published), host_ip or None, proto))
    return ports


def _secret_refs(value) -> list[SecretRef]:
    refs = []
    for s in value or []:
        if isinstance(s, str):
            refs.append(SecretRef(s, SECRETS_DIR + s))
            continue
        source = str(s.get("source"))
        target = str(s.get("target") or source)
        if not target.startswith("/"):
            target = SECRETS_DIR + target
        uid = s.get("uid")
        gid = s.get("gid")
        refs.append(SecretRef(source, target, None if uid is None else str(uid),
                              None if gid is None else str(gid), _mode(s.get("mode"))))
    return refs


def _service_from_dict(name: str, svc: dict, volumes: dict, base_dir: str) -> Service:
    """Build a Service from one compose service mapping (canonical or raw)."""
    mounts: list[Mount] = []
    for vol in svc.get("volumes") or []:
        long = _parse_short_volume(vol) if isinstance(vol, str) else vol
        mounts.append(_mount_from_long(long, volumes, base_dir))
    tmpfs = svc.get("tmpfs")
    for path in _str_list(tmpfs):
        mounts.append(Mount("tmpfs", path.split(":")[0], False, None, None, False, None))
    networks = svc.get("networks") or []
    networks = list(networks) if isinstance(networks, dict) else [str(n) for n in networks]
    network_mode = svc.get("network_mode") or None
    command = svc.get("command")
    entrypoint = svc.get("entrypoint")
    extensions = {k: v for k, v in svc.items() if isinstance(k, str) and k.startswith("x-")}
    env_files = []
    for ef in svc.get("env_file") or []:
        path = ef.get("path") if isinstance(ef, dict) else ef
        if path:
            env_files.append(_abspath(str(path), base_dir))
    if isinstance(svc.get("env_file"), str):
        env_files = [_abspath(svc["env_file"], base_dir)]
    service = Service(
        name=name,
        image=svc.get("image"),
        build=svc.get("build") if isinstance(svc.get("build"), dict)
        else ({"context": svc["build"]} if svc.get("build") else None),
        user=None if svc.get("user") in (None, "") else str(svc.get("user")),
        mounts=mounts,
        secrets=_secret_refs(svc.get("secrets")),
        healthcheck=_norm_healthcheck(svc.get("healthcheck")),
        ports=_ports(svc.get("ports")),
        networks=networks,
        network_mode=None if network_mode is None else str(network_mode),
        restart=svc.get("restart"),
        security_opt=_str_list(svc.get("security_opt")),
        cap_add=_str_list(svc.get("cap_add")),
        cap_drop=_str_list(svc.get("cap_drop")),
        group_add=_str_list(svc.get("group_add")),
        privileged=_as_bool(svc.get("privileged", False)),
        pid=svc.get("pid") or None,
        ipc=svc.get("ipc") or None,
        read_only=_as_bool(svc.get("read_only", False)),
        mem_limit=_mem_limit(svc),
        environment=_norm_env(svc.get("environment")),
        depends_on=_norm_depends(svc.get("depends_on")),
        command=command if command is None or isinstance(command, str) else [str(c) for c in command],
        entrypoint=entrypoint if entrypoint is None or isinstance(entrypoint, str)
        else [str(c) for c in entrypoint],
        profiles=_str_list(svc.get("profiles")),
        labels=_norm_labels(svc.get("labels")),
        extensions=extensions,
        env_files=env_files,
    )
    service.secret_paths_read = _secret_paths(service)
    return service


# --------------------------------------------------------------------------------------------
# The one YAML loader: every project YAML file (compose files, registries) is read through it
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_gc():
    """No cyclic garbage collection inside: for building the model and checking it, which allocate
    millions of small objects in no reference cycle (a recursive alias is refused). Each automatic
    full collection walks the whole heap (the YAML nodes included): on a 10,000-service project
    they were 60-75% of the time. Cycles made inside are collected after it, as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class UnusableFile(HyHomeError):
    """A project file that cannot be used at all: missing, a directory, not UTF-8 text, NUL bytes,
    too large or too deep, an alias bomb, an empty compose file, a top level that is not a mapping.

    Bad input, not a finding: scripts exit 2, modules fail with this one-line message (it starts
    with the file's path). YAML syntax errors are not this: they are findings with a line number.
    ``path`` and ``reason`` are the two parts of the message.
    """

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_text(path: str, what: str = "file") -> str:
    """The content of a project file as text; UnusableFile (naming the file) when it is not a
    regular UTF-8 text file of at most MAX_YAML_BYTES. Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        reason = "is a directory, not a file" if isinstance(e, IsADirectoryError) else \
            f"cannot be read: {e.strerror}"
        raise UnusableFile(path, f"{what} {reason}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UnusableFile(path, f"{what} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise UnusableFile(path, f"{what} is not a regular file")
        chunks, size = [], 0
        while size <= MAX_YAML_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise UnusableFile(path, f"{what} cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_YAML_BYTES:
        raise UnusableFile(path, f"{what} is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    nul = data.find(b"\0")
    if nul >= 0:
        raise UnusableFile(path, f"{what} contains a NUL byte (offset {nul}): a binary file, not YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UnusableFile(path, f"{what} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                           "save it as UTF-8") from None


def _compose_node(text: str, path: str):
    """``yaml.compose`` with limits: (root node or None, nodes written, nodes with aliases expanded).

    Composes from libyaml's events without recursion, so depth is checked before libyaml (whose
    cost grows with depth, and which crashes the process past ~50,000 levels) goes deep, and counts
    the size of every anchored node once, so an alias bomb is detected in linear time.
    """
    loader = _Loader(text)
    get, resolve = loader.get_event, loader.resolve
    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    seq_start, map_start = yaml.SequenceStartEvent, yaml.MappingStartEvent
    seq_end, map_end = yaml.SequenceEndEvent, yaml.MappingEndEvent
    try:
        get()                                           # StreamStart
        first = get()
        if isinstance(first, yaml.StreamEndEvent):
            return None, 0, 0
        anchors: dict[str, yaml.Node] = {}
        sizes: dict[int, int] = {}                      # id(anchored node) -> expanded size
        stack: list[list] = []                          # [node, expanded size, pending key node, anchor]
        root, written, expanded = None, 0, 0
        while True:
            ev = get()
            cls = ev.__class__
            if cls is scalar_event:
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolve(yaml.ScalarNode, ev.value, ev.implicit)
                mark = _Mark(ev.start_mark)
                node = yaml.ScalarNode(tag, ev.value, mark, mark, style=ev.style)
                size = 1
                written += 1
                if ev.anchor is not None:
                    _anchor(anchors, ev, node)
                    sizes[id(node)] = 1
            elif cls is alias_event:
                node = anchors.get(ev.anchor)
                if node is None:
                    raise yaml.composer.ComposerError(None, None, f"found undefined alias {ev.anchor!r}",
                                                      ev.start_mark)
                size = sizes.get(id(node))
                if size is None:
                    raise UnusableFile(path, f"line {ev.start_mark.line + 1}: alias *{ev.anchor} is inside "
                                       f"its own anchor &{ev.anchor} (a recursive structure)")
            elif cls is seq_start or cls is map_start:
                kind = yaml.SequenceNode if cls is seq_start else yaml.MappingNode
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolve(kind, None, ev.implicit)
                mark = _Mark(ev.start_mark)
                node = kind(tag, [], mark, mark, flow_style=ev.flow_style)
                written += 1
                if ev.anchor is not None:
                    _anchor(anchors, ev, node)
                if len(stack) >= MAX_YAML_DEPTH:
                    raise UnusableFile(path, f"line {ev.start_mark.line + 1}: YAML nested deeper than "
                                       f"{MAX_YAML_DEPTH} levels")
                stack.append([node, 1, None, ev.anchor])
                continue
            elif cls is seq_end or cls is map_end:
                node, size, _, anchor = stack.pop()
                if anchor is not None:
                    sizes[id(node)] = size
            else:                                       # DocumentEnd
                break
            if not stack:
                root, expanded = node, size
                continue
            top = stack[-1]
            top[1] += size
            parent = top[0]
            if parent.__class__ is yaml.SequenceNode:
                parent.value.append(node)
            elif top[2] is None:
                top[2] = node
            else:
                parent.value.append((top[2], node))
                top[2] = None
        ev = get()
        if not isinstance(ev, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError("expected a single document in the stream", first.start_mark,
                                              "but found another document", ev.start_mark)
        return root, written, expanded
    finally:
        loader.dispose()


class _Mark:
    """Where a node starts: the line (0-based, as yaml.Mark) is all the walks read. A yaml.Mark per
    node start and end was a third of the memory of a large project."""

    __slots__ = ("column", "line")
    name = "<compose file>"

    def __init__(self, mark):
        self.line = mark.line
        self.column = mark.column

    def __str__(self):
        return f'  in "{self.name}", line {self.line + 1}, column {self.column + 1}'


def _anchor(anchors: dict, ev, node) -> None:
    if ev.anchor in anchors:
        raise yaml.composer.ComposerError(
            f"found duplicate anchor {ev.anchor!r}; first occurrence", anchors[ev.anchor].start_mark,
            "second occurrence", ev.start_mark)
    anchors[ev.anchor] = node


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor that applies merge keys (``<<``) without rewriting the nodes: the raw walks
    read the nodes as written (merge keys included) after the data is built."""

    def __init__(self):
        super().__init__()
        self._flat: dict[int, list] = {}

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            node = yaml.MappingNode(node.tag, self._pairs(node), node.start_mark, node.end_mark)
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep=deep)

    def _pairs(self, node) -> list:
        """The (key, value) node pairs of a mapping, merged ones first (as SafeConstructor does)."""
        known = self._flat.get(id(node))
        if known is not None:
            return known
        merge: list = []
        own: list = []
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                if isinstance(value, yaml.MappingNode):
                    merge.extend(self._pairs(value))
                elif isinstance(value, yaml.SequenceNode):
                    for sub in reversed(value.value):
                        if not isinstance(sub, yaml.MappingNode):
                            raise yaml.constructor.ConstructorError(
                                "while constructing a mapping", node.start_mark,
                                f"expected a mapping for merging, but found {sub.id}", sub.start_mark)
                        merge.extend(self._pairs(sub))
                else:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {value.id}",
                        value.start_mark)
            elif key.tag == "tag:yaml.org,2002:value":
                own.append((yaml.ScalarNode("tag:yaml.org,2002:str", key.value, key.start_mark, key.end_mark),
                            value))
            else:
                own.append((key, value))
        pairs = merge + own if merge else own
        self._flat[id(node)] = pairs
        return pairs


def parse_yaml(text: str, path: str):
    """``(root node, data)`` of one YAML document, with the loader's limits (depth, alias
    expansion). Raises yaml.YAMLError for a syntax error (the caller reports it with its line) and
    UnusableFile, naming ``path``, for a file no limit allows. An empty document: ``(None, None)``.
    """
    with quiet_gc():
        node, written, expanded = _compose_node(text, path)
        if node is None:
            return None, None
        limit = written + max(MAX_ALIAS_NODES, 10 * written)
        if expanded > limit:
            raise UnusableFile(path, f"YAML aliases expand to more than {limit:,} nodes (alias bomb?)")
        return node, _Constructor().construct_document(node)


def _yaml_problem(e: yaml.YAMLError) -> tuple[str, int | None]:
    """(one-line message, 1-based line) of a YAML error."""
    problem_mark = getattr(e, "problem_mark", None)
    context_mark = getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    # An unclosed bracket or quote is detected where the file ends; the line it was opened on
    # is the one to fix.
    opened = bool(context and context_mark is not None
                  and context.startswith(("while parsing a flow", "while scanning a quoted")))
    mark = context_mark if opened else (problem_mark or context_mark)
    line = mark.line + 1 if mark is not None else None
    if opened:
        msg = f"{problem} ({context} opened on line {line})"
    else:
        msg = f"{problem} ({context})" if context else str(problem)
    return msg, line


def load_yaml_file(path: str, what: str = "YAML file"):
    """The data of a project YAML file (None when empty), through the one loader; every problem,
    YAML syntax included, is an UnusableFile whose one-line message names the file."""
    text = read_text(path, what)
    try:
        return parse_yaml(text, path)[1]
    except yaml.YAMLError as e:
        msg, line = _yaml_problem(e)
        raise UnusableFile(path, f"{what} is not valid YAML" + (f" (line {line})" if line else "")
                           + f": {msg}") from None


# --------------------------------------------------------------------------------------------
# Raw files: YAML node walk for line numbers, env references, extensions, registry entries
# --------------------------------------------------------------------------------------------

@dataclass
class RawFile:
    path: str                      # absolute
    data: dict | None              # plain data (merge keys applied), None when unreadable
    node: yaml.Node | None         # the document's root node, for marks
    base_dir: str                  # relative paths in this file resolve against it
    role: str = "compose"          # "compose" (root, -f, include:) | "extends" (only an extends: base)
    digest: str | None = None      # SHA-256 of the content as read (the project context's key)


@dataclass
class RawProject:
    """The compose files as written: root file(s) first, then included files depth-first."""

    project_dir: str
    files: list[RawFile] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    env_file: str | None = None
    env: dict[str, str] = field(default_factory=dict)   # .env values (never returned by modules)
    roots: list[str] = field(default_factory=list)      # the root files (-f or Compose's lookup); the
    # others are included (or extends-only bases)
    env_refs_cache: list | None = field(default=None, repr=False, compare=False)   # raw_env_refs, once

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def compose_files(self) -> list[RawFile]:
        """Files that define the project (extends-only bases excluded)."""
        return [f for f in self.files if f.role == "compose"]

    def base_service(self, service: dict, file: RawFile) -> dict | None:
        """The raw mapping an ``extends:`` points at (same file when no ``file:``), else None."""
        ext = service.get("extends")
        if isinstance(ext, str):
            ext = {"service": ext}
        if not isinstance(ext, dict) or not ext.get("service"):
            return None
        target = file
        if ext.get("file"):
            path = _abspath(_expand_defaults(str(ext["file"]), self.env), os.path.dirname(file.path))
            target = next((f for f in self.files if f.path == path), None)
        base = ((target.data or {}).get("services") or {}).get(ext["service"]) if target else None
        return base if isinstance(base, dict) else None

    def resolved_service(self, service: dict, file: RawFile, depth: int = 0) -> dict:
        """``service`` with its ``extends:`` chain merged in (shallow, best effort)."""
        base = self.base_service(service, file) if depth < 10 else None
        if base is None:
            return {k: v for k, v in service.items() if k != "extends"}
        ext = service["extends"]
        base_file = file
        if isinstance(ext, dict) and ext.get("file"):
            path = _abspath(_expand_defaults(str(ext["file"]), self.env), os.path.dirname(file.path))
            base_file = next((f for f in self.files if f.path == path), file)
        merged = self.resolved_service(base, base_file, depth + 1)
        return merge_extends(merged, {k: v for k, v in service.items() if k != "extends"})


_EXTENDS_UNION = ("security_opt", "cap_add", "cap_drop", "group_add", "ports", "expose", "dns", "secrets",
                  "configs", "env_file", "tmpfs", "profiles")
_EXTENDS_MAPPINGS = ("environment", "labels", "depends_on", "sysctls", "extra_hosts")


def _volume_target(entry) -> str | None:
    if isinstance(entry, dict):
        return str(entry.get("target")) if entry.get("target") is not None else None
    return _parse_short_volume(str(entry)).get("target")


def merge_extends(base: dict, override: dict) -> dict:
    """Compose's ``extends`` merge, for the raw fallback: the service wins key by key; mappings
    (environment, labels, ...) merge; ``volumes`` merge by target; list keys such as
    ``cap_drop`` or ``secrets`` are the union, base entries first."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if key == "volumes" and isinstance(old, list) and isinstance(value, list):
            mine = {_volume_target(v) for v in value}
            merged[key] = [v for v in old if _volume_target(v) not in mine] + list(value)
        elif key in _EXTENDS_UNION and isinstance(old, list) and isinstance(value, list):
            merged[key] = list(old) + [v for v in value if v not in old]
        elif key in _EXTENDS_MAPPINGS and old is not None and value is not None:
            if key == "environment":
                merged[key] = {**_norm_env(old), **_norm_env(value)}
            elif key == "labels":
                merged[key] = {**_norm_labels(old), **_norm_labels(value)}
            elif isinstance(old, dict) and isinstance(value, dict):
                merged[key] = {**old, **value}
            else:
                merged[key] = value
        else:
            merged[key] = value
    return merged


def read_dotenv(path: str | None) -> dict[str, str]:
    """Minimal .env reader (KEY=VALUE, optional quotes, ``export``, comments)."""
    env: dict[str, str] = {}
    if not path or not os.path.isfile(path):
        return env
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[7:].lstrip()
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not _VAR_NAME_RE.fullmatch(key):
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            env[key] = value
    return env


def _mapping_get(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _load_one(path: str, base_dir: str, raw: RawProject) -> RawFile:
    """One compose file through the one loader. A YAML syntax error is recorded in ``raw.errors``
    (a finding, with its line); a file that cannot be used at all raises UnusableFile."""
    text = read_text(path, "compose file")
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    try:
        node, data = parse_yaml(text, path)
    except yaml.YAMLError as e:
        if isinstance(e, yaml.reader.ReaderError):   # a control character: binary, not YAML text
            raise UnusableFile(path, f"compose file is not YAML text: {str(e).splitlines()[0]}") from None
        msg, line = _yaml_problem(e)
        raw.errors.append(FileError(Location(path, line), f"YAML syntax error: {msg}"))
        return RawFile(path, None, None, base_dir, digest=digest)
    if node is None or data is None:
        raise UnusableFile(path, "empty compose file (no YAML document: write at least a services: key)")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise UnusableFile(path, f"the top level of the compose file is {kind}, not a mapping "
                           "(it starts with keys such as services:)")
    return RawFile(path, data, node, base_dir, digest=digest)


def _include_entries(data: dict, env: dict[str, str]) -> list[tuple[list[str], str | None]]:
    """``include:`` entries -> [(paths, project_directory)] (strings or long syntax)."""
    out = []
    for entry in data.get("include") or []:
        if isinstance(entry, str):
            out.append(([_expand_defaults(entry, env)], None))
        elif isinstance(entry, dict):
            paths = entry.get("path")
            paths = [paths] if isinstance(paths, str) else list(paths or [])
            pdir = entry.get("project_directory")
            out.append(([_expand_defaults(str(p), env) for p in paths],
                        _expand_defaults(str(pdir), env) if pdir else None))
    return out


def find_compose_file(project_dir: str) -> str:
    """The root compose file compose itself would pick in ``project_dir``."""
    for name in COMPOSE_FILE_NAMES:
        candidate = os.path.join(project_dir, name)
        if os.path.isfile(candidate):
            return candidate
        if os.path.lexists(candidate):   # a directory, a dangling symlink, a FIFO: say so, not "none found"
            read_text(candidate, "compose file")
    raise HyHomeError(
        f"{project_dir} is not a compose project: none of {', '.join(COMPOSE_FILE_NAMES)} found there"
    )


def _root_files(project_dir: str, files) -> list[str]:
    if files:
        paths = [_abspath(str(f), project_dir) for f in files]
        for p in paths:
            if not os.path.lexists(p):
                raise HyHomeError(f"compose file {p} not found")
            if not os.path.isfile(p):
                read_text(p, "compose file")   # says what it is instead
        return paths
    root = find_compose_file(project_dir)
    for name in OVERRIDE_FILE_NAMES:
        candidate = os.path.join(project_dir, name)
        if os.path.isfile(candidate):
            return [root, candidate]
        if os.path.lexists(candidate):
            read_text(candidate, "compose override file")
    return [root]


def _check_project_dir(project_dir) -> str:
    if project_dir is None or str(project_dir) == "":
        raise HyHomeError("no project directory given")
    path = os.path.abspath(os.path.expanduser(str(project_dir)))
    if not os.path.exists(path):
        raise HyHomeError(f"project directory {path} does not exist")
    if not os.path.isdir(path):
        raise HyHomeError(f"project path {path} is not a directory")
    return path


def load_raw(project_dir, files=None, env_file=None) -> RawProject:
    """Read the compose files as written: the root file(s) and, recursively, their ``include:``s.

    YAML syntax errors and missing includes land in ``errors`` (findings). Raises HyHomeError when
    ``project_dir`` is not a compose project, and its UnusableFile when a file cannot be used at all
    (not UTF-8 text, NUL bytes, empty, not a mapping, an alias bomb, ...: see ``read_text``).
    """
    project_dir = _check_project_dir(project_dir)
    roots = _root_files(project_dir, files)
    env_path = _abspath(str(env_file), project_dir) if env_file else os.path.join(project_dir, ".env")
    raw = RawProject(project_dir, env_file=env_path, env=read_dotenv(env_path), roots=list(roots))
    seen: set[str] = set()

    def walk(path: str, base_dir: str, role: str = "compose") -> None:
        if path in seen:
            return
        seen.add(path)
        rf = _load_one(path, base_dir, raw)
        rf.role = role
        raw.files.append(rf)
        if rf.data is None:
            return
        for svc in (rf.data.get("services") or {}).values():
            ext = svc.get("extends") if isinstance(svc, dict) else None
            if isinstance(ext, dict) and ext.get("file"):
                base = _abspath(_expand_defaults(str(ext["file"]), raw.env), os.path.dirname(path))
                if os.path.isfile(base):
                    walk(base, os.path.dirname(base), "extends")
        if role != "compose":
            return
        for paths, pdir in _include_entries(rf.data, raw.env):
            for p in paths:
                inc = _abspath(p, os.path.dirname(path))
                inc_base = _abspath(pdir, os.path.dirname(path)) if pdir else os.path.dirname(inc)
                if not os.path.isfile(inc):
                    line = _include_line(rf.node, p)
                    raw.errors.append(FileError(Location(path, line), f"included file {inc} not found"))
                    continue
                walk(inc, inc_base)

    for root in roots:
        # -f files after the first resolve relative paths against the project directory
        walk(root, project_dir)
    return raw


def _include_line(node, written: str) -> int | None:
    found = _mapping_get(node, "include")
    if not found:
        return None
    _, seq = found
    for item in getattr(seq, "value", []):
        if isinstance(item, yaml.ScalarNode) and item.value == written:
            return item.start_mark.line + 1
        pair = _mapping_get(item, "path")
        if pair:
            return pair[1].start_mark.line + 1
    return seq.start_mark.line + 1


_TRAP_KEYS = ("command", "entrypoint", "healthcheck")


def _scalar_line(node: yaml.ScalarNode, offset: int) -> int:
    line = node.start_mark.line + 1
    if node.style in ("|", ">"):
        # block scalar: content starts on the line after the indicator
        return line + 1 + node.value.count("\n", 0, offset)
    return line


def _node_refs(node, memo: dict[int, list]) -> list[tuple]:
    """Interpolations in the scalars under ``node``: ``(path below node, name, operator, line,
    written)``, in document order. Each node is walked once (``memo``, by identity: an alias is
    the anchored node itself); its refs are re-used, with the path prefixed, wherever it appears."""
    known = memo.get(id(node))
    if known is not None:
        return known
    out: list[tuple] = []
    if isinstance(node, yaml.ScalarNode):
        if "$" in node.value and node.tag == "tag:yaml.org,2002:str":
            out = [("", name, op, _scalar_line(node, off), written)
                   for name, op, off, written in scan_interpolations(node.value)]
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            prefix = f"[{i}]"
            out.extend((prefix + rel, *rest) for rel, *rest in _node_refs(item, memo))
    elif isinstance(node, yaml.MappingNode):
        merged: set[int] = set()
        for k, v in node.value:
            kname = k.value if isinstance(k, yaml.ScalarNode) else "?"
            if kname == "<<":  # merge key: the merged keys belong to this mapping's path
                for m in (v.value if isinstance(v, yaml.SequenceNode) else [v]):
                    if id(m) not in merged:
                        merged.add(id(m))
                        out.extend(_node_refs(m, memo))
                continue
            prefix = "." + kname
            out.extend((prefix + rel, *rest) for rel, *rest in _node_refs(v, memo))
    memo[id(node)] = out
    return out


def _merged_items(node, seen=None):
    """(key name, value node) of a mapping node in document order, ``<<`` merges followed in place."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    for k, v in node.value:
        kname = k.value if isinstance(k, yaml.ScalarNode) else "?"
        if kname == "<<":
            for m in (v.value if isinstance(v, yaml.SequenceNode) else [v]):
                yield from _merged_items(m, seen)
        else:
            yield kname, v


def _file_env_refs(root, file: str) -> list[EnvRef]:
    """Every interpolation of one file, with its dotted path and the service whose key holds it."""
    memo: dict[int, list] = {}
    out: list[EnvRef] = []

    def emit(node, path: str, service: str | None) -> None:
        for rel, name, op, line, written in _node_refs(node, memo):
            full = path + rel if path else rel.lstrip(".")
            out.append(EnvRef(name, op in (":-", "-"), op in (":?", "?"), Location(file, line), full, service,
                              written))

    if not isinstance(root, yaml.MappingNode):
        emit(root, "", None)
        return out
    for key, value in _merged_items(root):
        if key == "services" and isinstance(value, yaml.MappingNode):
            for name, svc in _merged_items(value):
                emit(svc, f"services.{name}", name)
        else:
            emit(value, key, None)
    return out


def raw_env_refs(raw: RawProject) -> list[EnvRef]:
    """Every interpolation in scalar values of every readable file, in file/line order."""
    if raw.env_refs_cache is not None:   # walked once per raw project (the context key needs it too)
        return list(raw.env_refs_cache)
    refs: list[EnvRef] = []
    for rf in raw.files:
        if rf.node is not None:
            refs.extend(_file_env_refs(rf.node, rf.path))
    raw.env_refs_cache = refs
    return list(refs)


def _key_locations(raw: RawProject, section: str) -> dict[str, Location]:
    """Where each key of a top-level section (``services``, ``secrets``) is first defined."""
    locs: dict[str, Location] = {}
    for rf in raw.compose_files:
        found = _mapping_get(rf.node, section)
        if not found or not isinstance(found[1], yaml.MappingNode):
            continue
        for k, _ in found[1].value:
            if isinstance(k, yaml.ScalarNode) and k.value not in locs:
                locs[k.value] = Location(rf.path, k.start_mark.line + 1)
    return locs


def _node_get(node, key: str, depth: int = 0):
    """The value node of ``key`` in a mapping node, following ``<<`` merge keys; None when absent."""
    found = _mapping_get(node, key)
    if found:
        return found[1]
    merged = _mapping_get(node, "<<")
    if not merged or depth > 10:
        return None
    for m in merged[1].value if isinstance(merged[1], yaml.SequenceNode) else [merged[1]]:
        value = _node_get(m, key, depth + 1)
        if value is not None:
            return value
    return None


def _volume_lines(service_node, env: dict[str, str]):
    """(normalized target, line) of each ``volumes:`` and ``tmpfs:`` entry of a service node; the line
    of a long entry is its ``source:`` (the path a person fixes), else the entry's first line."""
    volumes = _node_get(service_node, "volumes")
    for item in volumes.value if isinstance(volumes, yaml.SequenceNode) else ():
        if isinstance(item, yaml.ScalarNode):
            target, at = _parse_short_volume(_expand_defaults(item.value, env))["target"], item
        elif isinstance(item, yaml.MappingNode):
            node = _node_get(item, "target")
            target = _expand_defaults(node.value, env) if isinstance(node, yaml.ScalarNode) else ""
            at = _node_get(item, "source") or item
        else:
            continue
        if target:
            yield os.path.normpath(target), at.start_mark.line + 1
    tmpfs = _node_get(service_node, "tmpfs")
    for item in tmpfs.value if isinstance(tmpfs, yaml.SequenceNode) else [tmpfs] if tmpfs is not None else ():
        if isinstance(item, yaml.ScalarNode) and item.value:
            yield os.path.normpath(item.value.split(":", 1)[0]), item.start_mark.line + 1


def _extends_base(raw: RawProject, rf: RawFile, service_node) -> tuple[RawFile, yaml.Node] | None:
    """The file and service node an ``extends:`` points at, else None."""
    ext = _node_get(service_node, "extends")
    name, target = None, rf
    if isinstance(ext, yaml.ScalarNode):
        name = ext.value
    elif isinstance(ext, yaml.MappingNode):
        name_node, file_node = _node_get(ext, "service"), _node_get(ext, "file")
        name = name_node.value if isinstance(name_node, yaml.ScalarNode) else None
        if isinstance(file_node, yaml.ScalarNode):
            path = _abspath(_expand_defaults(file_node.value, raw.env), os.path.dirname(rf.path))
            target = next((f for f in raw.files if f.path == path), None)
    base = _node_get(_node_get(target.node, "services"), name) if name and target else None
    return (target, base) if base is not None else None


def _mount_locations(raw: RawProject) -> dict[tuple[str, str], Location]:
    """(service, normalized target) -> where the ``volumes:`` entry mounting it is written. A later
    file wins (``-f`` overrides); an ``extends:`` base's entries count when the service does not
    write that target itself."""
    own: dict[tuple[str, str], Location] = {}
    inherited: dict[tuple[str, str], Location] = {}
    for rf in raw.compose_files:
        services = _node_get(rf.node, "services")
        for key, node in services.value if isinstance(services, yaml.MappingNode) else ():
            name = key.value
            own.update({(name, t): Location(rf.path, line) for t, line in _volume_lines(node, raw.env)})
            base, depth = _extends_base(raw, rf, node), 0
            while base is not None and depth < 10:
                for t, line in _volume_lines(base[1], raw.env):
                    inherited.setdefault((name, t), Location(base[0].path, line))
                base, depth = _extends_base(raw, base[0], base[1]), depth + 1
    return {**inherited, **own}


def _raw_registry(raw: RawProject) -> dict[str, Secret]:
    """Top-level ``secrets:`` of every file, relative ``file:`` resolved against its file's dir."""
    locs = _key_locations(raw, "secrets")
    registry: dict[str, Secret] = {}
    for rf in raw.compose_files:
        for name, spec in ((rf.data or {}).get("secrets") or {}).items():
            if name in registry or not isinstance(spec, dict):
                continue
            path = spec.get("file")
            path = _abspath(_expand_defaults(str(path), raw.env), rf.base_dir) if path else None
            registry[str(name)] = Secret(str(name), path, _as_bool(spec.get("external", False)),
                                         spec.get("environment"), locs.get(str(name)))
    return registry


def _raw_service_extensions(raw: RawProject) -> dict[str, dict]:
    ext: dict[str, dict] = {}
    for rf in raw.compose_files:
        for name, svc in ((rf.data or {}).get("services") or {}).items():
            if isinstance(svc, dict):
                for k, v in raw.resolved_service(svc, rf).items():
                    if isinstance(k, str) and k.startswith("x-"):
                        ext.setdefault(str(name), {}).setdefault(k, v)
    return ext


def _attach_raw(project: Project, raw: RawProject) -> None:
    project.files = raw.paths
    project.file_errors = list(raw.errors)
    project.env_file = raw.env_file
    project.env_file_vars = sorted(raw.env)
    refs = raw_env_refs(raw)
    seen = set()
    for ref in refs:
        key = (ref.name, ref.has_default, ref.required, ref.location, ref.text)
        if key not in seen:
            seen.add(key)
            project.env_refs.append(ref)
    project.declarations = {s: _key_locations(raw, s)
                            for s in ("services", "networks", "volumes", "secrets", "configs")}
    locs = project.declarations["services"]
    ext = _raw_service_extensions(raw)
    mount_locs = _mount_locations(raw)
    trap_refs: dict[str, list[EnvRef]] = {}
    for r in refs:
        if r.service is not None and r.path:
            trap_refs.setdefault(r.service, []).append(r)
    for name, svc in project.services.items():
        svc.location = locs.get(name, svc.location)
        svc.mounts = [replace(m, location=mount_locs.get((name, os.path.normpath(m.target)), m.location))
                      if m.target else m for m in svc.mounts]
        for k, v in ext.get(name, {}).items():
            svc.extensions.setdefault(k, v)
        traps = tuple(f"services.{name}.{k}" for k in _TRAP_KEYS)
        svc.raw_interpolations = [r for r in trap_refs.get(name, ()) if r.path.startswith(traps)]
    registry = _raw_registry(raw)
    for name, secret in registry.items():
        if name in project.secrets:
            current = project.secrets[name]
            project.secrets[name] = Secret(current.name, current.file, current.external,
                                           current.environment, secret.location)
        else:
            project.unused_secrets[name] = secret


# --------------------------------------------------------------------------------------------
# Canonical config -> model
# --------------------------------------------------------------------------------------------

@quiet_gc()
def project_from_config(config: dict, project_dir, raw: RawProject | None = None) -> Project:
    """Build the model from ``docker compose config --format json`` output (pure).

    ``raw`` (from :func:`load_raw`) adds file list, line numbers, env references, service ``x-*``
    extensions (compose's JSON output drops them) and registry entries compose pruned as unused.
    """
    if not isinstance(config, dict):
        raise HyHomeError("compose config is not a mapping")
    project_dir = os.path.abspath(str(project_dir))
    volumes = {str(k): dict(v or {}) for k, v in (config.get("volumes") or {}).items()}
    project = Project(
        name=str(config.get("name") or _default_project_name(project_dir)),
        working_dir=project_dir,
        files=[],
        volumes=volumes,
        extensions={k: v for k, v in config.items() if isinstance(k, str) and k.startswith("x-")},
    )
    for name, svc in sorted((config.get("services") or {}).items()):
        project.services[str(name)] = _service_from_dict(str(name), svc or {}, volumes, project_dir)
    for name, spec in sorted((config.get("secrets") or {}).items()):
        spec = spec or {}
        path = spec.get("file")
        project.secrets[str(name)] = Secret(
            str(name), _abspath(str(path), project_dir) if path else None,
            _as_bool(spec.get("external", False)), spec.get("environment"))
    for key, spec in sorted((config.get("networks") or {}).items()):
        spec = spec or {}
        project.networks[str(key)] = Network(str(key), str(spec.get("name") or f"{project.name}_{key}"),
                                             _as_bool(spec.get("external", False)))
    if raw is not None:
        _attach_raw(project, raw)
    return project


def _default_project_name(project_dir: str) -> str:
    name = re.sub(r"[^a-z0-9_-]", "", os.path.basename(project_dir.rstrip("/")).lower())
    return name.lstrip("_-") or "default"


@quiet_gc()
def project_from_raw(raw: RawProject, project_dir=None, config_error: str | None = None,
                     profiles=None) -> Project:
    """Best-effort model from the raw files only (used when ``docker compose config`` fails).

    Services from every readable file (later definitions of the same service override keys of
    earlier ones), relative paths against the defining file's directory, ``.env`` values and
    ``${X:-default}`` defaults substituted in paths, nothing else interpolated. Services with
    ``profiles:`` are kept only when one of ``profiles`` is active (``"*"`` activates all).
    """
    project_dir = os.path.abspath(str(project_dir or raw.project_dir))
    root = raw.files[0].data if raw.files and raw.files[0].data else {}
    project = Project(
        name=_default_project_name(str(root.get("name") or project_dir)) if root.get("name")
        else _default_project_name(project_dir),
        working_dir=project_dir,
        files=[],
        config_error=config_error,
        source="raw",
        extensions={k: v for k, v in root.items() if isinstance(k, str) and k.startswith("x-")},
    )
    volumes: dict[str, dict] = {}
    networks: dict[str, dict] = {}
    for rf in raw.compose_files:
        for key, spec in ((rf.data or {}).get("volumes") or {}).items():
            spec = dict(spec or {})
            opts = dict(spec.get("driver_opts") or {})
            if opts.get("device"):
                opts["device"] = _abspath(_expand_defaults(str(opts["device"]), raw.env), rf.base_dir)
                spec["driver_opts"] = opts
            volumes.setdefault(str(key), spec)
        for key, spec in ((rf.data or {}).get("networks") or {}).items():
            networks.setdefault(str(key), dict(spec or {}))
    project.volumes = volumes
    merged: dict[str, tuple[dict, str]] = {}
    for rf in raw.compose_files:
        for name, svc in ((rf.data or {}).get("services") or {}).items():
            if not isinstance(svc, dict):
                continue
            svc = raw.resolved_service(svc, rf)
            if name in merged:
                base, base_dir = merged[name]
                merged[name] = ({**base, **svc}, base_dir)
            else:
                merged[name] = (dict(svc), rf.base_dir)
    active = {str(p) for p in profiles or []}
    for name, (svc, base_dir) in sorted(merged.items()):
        wanted = set(_str_list(svc.get("profiles")))
        if wanted and "*" not in active and not wanted & active:
            continue
        svc = _expand_paths(svc, raw.env)
        project.services[str(name)] = _service_from_dict(str(name), svc, volumes, base_dir)
    for key, spec in sorted(networks.items()):
        ext = _as_bool(spec.get("external", False))
        default = key if ext else f"{project.name}_{key}"
        project.networks[key] = Network(key, str(spec.get("name") or default), ext)
    for name, secret in _raw_registry(raw).items():
        used = any(ref.source == name for s in project.services.values() for ref in s.secrets)
        (project.secrets if used else project.unused_secrets)[name] = secret
    _attach_raw(project, raw)
    return project


def _expand_paths(svc: dict, env: dict[str, str]) -> dict:
    """Substitute defaults in the keys that carry paths, for the raw fallback."""
    svc = dict(svc)
    vols = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            vols.append(_expand_defaults(v, env))
        elif isinstance(v, dict) and isinstance(v.get("source"), str):
            vols.append({**v, "source": _expand_defaults(v["source"], env)})
        else:
            vols.append(v)
    if vols:
        svc["volumes"] = vols
    for key in ("user", "image", "mem_limit"):
        if isinstance(svc.get(key), str):
            svc[key] = _expand_defaults(svc[key], env)
    return svc


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------

def _docker_binary(docker: str) -> str:
    if os.sep in docker:
        if os.path.isfile(docker) and os.access(docker, os.X_OK):
            return docker
        raise HyHomeError(f"docker binary {docker} not found or not executable; install Docker Engine and Compose v2")
    found = shutil.which(docker)
    if not found:
        raise HyHomeError(
            f"docker binary '{docker}' not found in PATH; install Docker Engine and the Compose v2 plugin")
    return found


def compose_command(project_dir: str, files: list[str], env_file=None, profiles=None, docker="docker") -> list[str]:
    """The ``docker compose ... config --format json`` argv for a project."""
    cmd = [docker, "compose", "--project-directory", project_dir]
    for f in files:
        cmd += ["-f", f]
    if env_file:
        cmd += ["--env-file", _abspath(str(env_file), project_dir)]
    for p in profiles or []:
        cmd += ["--profile", str(p)]
    return [*cmd, "config", "--format", "json"]


# A logrus line of the docker CLI: time="..." level=warning msg="The \"X\" variable is not set..."
_LOG_LINE_RE = re.compile(r'^(?:time="[^"]*"\s+)?level=(\w+)\s+msg="((?:[^"\\]|\\.)*)"')
_LOG_ESCAPE_RE = re.compile(r"\\(.)")
_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
_WARNING_LEVELS = frozenset({"warning", "warn"})


def split_compose_stderr(stderr: str | None) -> tuple[list[str], list[str]]:
    """Compose's stderr -> (error lines, warning messages), each once, in order of appearance.

    Compose prints ``level=warning`` lines (unset variables, an obsolete ``version:``) before the
    error that stopped it; the error is a bare line or a ``level=error|fatal`` line, unwrapped.
    ``info``/``debug`` lines are neither. Every caller that shows compose's stderr uses this, so
    the error line is never hidden behind warnings. No error line (empty or warnings-only
    output): an empty error list, the caller says so.
    """
    errors: list[str] = []
    warnings: list[str] = []
    seen: set[tuple[int, str]] = set()
    for line in str(stderr or "").splitlines():
        line = line.strip()
        if not line:
            continue
        m = _LOG_LINE_RE.match(line)
        if m is None:
            target, msg = errors, line
        else:
            level = m.group(1).lower()
            target = errors if level in _ERROR_LEVELS else warnings if level in _WARNING_LEVELS else None
            msg = _LOG_ESCAPE_RE.sub(lambda e: {"n": " ", "t": " "}.get(e.group(1), e.group(1)), m.group(2)).strip()
        if target is not None and msg and (id(target), msg) not in seen:
            seen.add((id(target), msg))
            target.append(msg)
    return errors, warnings


def load_project(project_dir, files=None, env_file=None, profiles=None, docker="docker",
                 cache: str = "off", raw: RawProject | None = None) -> Project:
    """Load a compose project: one ``docker compose config`` call plus one walk of the raw files.

    ``files`` (relative to ``project_dir``) replaces compose's own file lookup; ``profiles``
    activates profiles (``["*"]`` for all). Raises HyHomeError when the directory is not a
    compose project or the docker binary is missing; a project compose rejects is returned with
    ``config_error`` set and ``source="raw"``.

    ``cache`` reuses the run's project context (see ``project_context``): ``"off"`` always runs
    ``docker compose config``; ``"read"`` reuses a valid cached result (check mode); ``"write"``
    also stores a fresh one. ``Project.context`` says ``{"cache": "hit"|"miss"|"off", "key": ...}``.

    ``raw``: the project's files as ``load_raw`` read them (same ``files`` and ``env_file``), when
    the caller already has them, so they are read once.
    """
    if cache not in ("off", "read", "write"):
        raise HyHomeError(f"cache must be off, read or write, not {cache!r}")
    project_dir = _check_project_dir(project_dir)
    if raw is not None and raw.project_dir != project_dir:
        raise HyHomeError(f"the raw files given are those of {raw.project_dir}, not of {project_dir}")
    roots = _root_files(project_dir, files) if raw is None else list(raw.roots)
    binary = _docker_binary(docker)
    raw = raw if raw is not None else load_raw(project_dir, files=roots, env_file=env_file)
    cmd = compose_command(project_dir, roots, env_file, profiles, binary)
    env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "COMPOSE_PROFILES")}
    proc, context = _compose_config(cmd, project_dir, env, docker, raw, cache)
    project = _project_from_proc(proc, raw, project_dir, profiles)
    project.context = context
    return project


def _compose_config(cmd, project_dir, env, docker, raw, cache) -> tuple[subprocess.CompletedProcess, dict]:
    """``docker compose config``, from the project context cache when its key still matches."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import project_context

    key = project_context.context_key(raw, cmd, env) if cache != "off" else None
    if key:
        entry = project_context.read(project_dir, key)
        if entry is not None:
            return (subprocess.CompletedProcess(cmd, entry["returncode"], entry["stdout"], entry["stderr"]),
                    {"cache": "hit", "key": key[:12], "full_key": key, "mode": cache})
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs

    try:   # its own process group: on timeout the compose plugin is stopped too, not only the CLI
        proc = procs.run(cmd, cwd=project_dir, timeout=CONFIG_TIMEOUT, env=env)
    except FileNotFoundError as e:
        raise HyHomeError(f"docker binary '{docker}' could not be run: {e.strerror}") from None
    except procs.CommandTimeout:
        raise HyHomeError(f"`docker compose config` did not answer within {CONFIG_TIMEOUT}s "
                          "(it and its child processes were stopped)") from None
    if key and cache == "write" and not (proc.returncode != 0 and _compose_missing(proc.stderr or "")):
        project_context.write(project_dir, key, proc.returncode, proc.stdout or "", proc.stderr or "")
    if not key:
        return proc, {"cache": "off", "key": None}
    return proc, {"cache": "miss", "key": key[:12], "full_key": key, "mode": cache}


def _project_from_proc(proc: subprocess.CompletedProcess, raw: RawProject, project_dir: str, profiles) -> Project:
    """The model from ``docker compose config``'s result (the raw files stand in when it failed)."""
    stderr = proc.stderr or ""
    if proc.returncode != 0 and _compose_missing(stderr):
        raise HyHomeError("Docker Compose v2 is not installed: `docker compose` is not a docker command "
                          "(install the docker-compose-plugin / compose v2 CLI plugin)")
    if proc.returncode != 0:
        return project_from_raw(raw, project_dir, config_error=stderr.strip() or f"exit code {proc.returncode}",
                                profiles=profiles)
    try:
        config = json.loads(proc.stdout)
    except ValueError:
        return project_from_raw(raw, project_dir, config_error="docker compose config printed no JSON: "
                                + (proc.stdout[:200] + stderr).strip(), profiles=profiles)
    project = project_from_config(config, project_dir, raw)
    project.config_warnings = split_compose_stderr(stderr)[1]
    return project


# Exit codes of the command-line checks (validate-docker-compose.sh, preflight-compose.sh).
EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_CODES_HELP = ("exit codes: 0 no error, 1 findings (errors or blockers), 2 bad input (no such project, an "
                   "unusable file: not UTF-8 text, binary, empty, not a mapping, an alias bomb...; a bad option), "
                   "3 internal error")


def guarded_cli(prog: str, main, argv=None) -> int:
    """``main(argv)`` of a command-line check, so that it never ends in a traceback: HyHomeError
    (bad input) and OSError print one line naming the problem and exit 2; anything else is an
    internal error, one line and exit 3 (the traceback with HYHOME_DEBUG=1). Never 1, the code for
    findings, so a crash cannot pass for a verdict."""
    import sys

    try:
        return main(argv)
    except HyHomeError as e:
        print(f"{prog}: {e.msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RecursionError:
        print(f"{prog}: internal error: the project is nested too deeply to check", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as e:  # the last line of defence of a CLI
        if os.environ.get("HYHOME_DEBUG"):
            raise
        text = (str(e).splitlines() or [""])[0][:300]
        print(f"{prog}: internal error: {type(e).__name__}: {text} (HYHOME_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _compose_missing(stderr: str) -> bool:
    return "is not a docker command" in stderr or ("unknown command" in stderr and "compose" in stderr)
