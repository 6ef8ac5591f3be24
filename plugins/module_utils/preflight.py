"""Preflight: every missing prerequisite of a Compose project's first boot, in one read-only run.

Two halves, so the logic is testable without a host:

- ``gather_host_facts()`` probes the host once (Docker Engine through the docker SDK, ``docker compose
  version``, ``/proc``, ``statvfs``) into a plain ``HostFacts``. A probe that fails records why; it
  never raises.
- ``run_checks(project, facts, options)`` is pure: it reads the compose model, the project files
  and the facts, and returns every ``Finding`` in a stable order (check order, then subject).

Nothing here writes. ``cli()`` (behind ``scripts/preflight-compose.sh``) is the only place that
writes, and only the JSON report file it is asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_model, procs, project_context
from ansible_collections.hyhome.bootstrap.plugins.module_utils import findings as shared
from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Location, Project
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    ERROR,
    INFO,
    SEVERITIES,
    WARNING,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.mounts import classify, example_for

BLOCKER = ERROR        # the shared "error": in preflight, what blocks first boot

# Every check, in report order. The id is stable: scripts and the JSON report key on it.
CHECKS = (
    ("host.docker_engine", "Docker Engine reachable, version"),
    ("host.compose", "Compose v2 plugin present, version"),
    ("host.vm_max_map_count", "vm.max_map_count for OpenSearch/Elasticsearch"),
    ("host.disk", "free disk: project filesystem and Docker root"),
    ("host.memory", "available memory"),
    ("host.ports", "published host ports free"),
    ("project.compose_config", "`docker compose config` succeeds"),
    ("project.env_file", ".env present when variables need it"),
    ("project.env_vars", "variables referenced without default are set"),
    ("project.secrets", "secret files present and non-empty"),
    ("project.certs", "certificate files present"),
    ("project.bind_dirs", "bind-mount directories exist"),
    ("project.bind_files", "bind-mounted files exist"),
    ("project.networks", "external networks exist"),
    ("project.volumes", "external volumes exist"),
)
CHECK_ORDER = {cid: i for i, (cid, _) in enumerate(CHECKS)}

# Steps (roles) that fix a finding; ``deferred_steps`` lets day0 run preflight before them.
STEPS = ("docker_engine", "secrets", "tls", "data_dirs", "env", "compose")

# What only matters once containers start: with ``start_stack`` false (day0 prepares the project,
# nothing is started) these are warnings, "needed before the stack starts".
BOOT_TIME_CHECKS = ("host.ports", "host.vm_max_map_count", "project.networks", "project.volumes")

CERT_SUFFIXES = (".pem", ".crt", ".cert", ".key")
GIB = 1024**3
MIB = 1024**2


def Finding(check: str, severity: str, subject: str, message: str, fix: str = "",
            fixed_by: str | None = None, *, file: str | None = None, line: int | None = None) -> shared.Finding:
    """A preflight finding, in the shared vocabulary (``findings.Finding``): the check id (one of
    CHECKS) is its rule, ``subject`` what it is about (a secret, a path, a port, a variable),
    ``fix`` its hint (empty for info findings), ``fixed_by`` the step that fixes it (see STEPS),
    ``file``/``line`` where it is written, when known (the report makes the path project-relative)."""
    return shared.Finding(severity, check, message, subject=subject, hint=fix, fixed_by=fixed_by, file=file,
                          line=line)


@dataclass(frozen=True)
class Options:
    min_docker_version: str = "20.10"          # below: blocker
    warn_compose_below: str = "2.20"           # below: warning (Compose v1 or absent: blocker)
    min_disk_free_gb: float = 5.0              # per filesystem, below: blocker
    min_memory_available_mb: int = 1024        # below: warning
    vm_max_map_count: int = 262144             # needed by OpenSearch/Elasticsearch
    search_images: tuple[str, ...] = ("opensearch", "elasticsearch")
    check_ports: bool = True
    env_file: str | None = None                # default: <project>/.env
    secrets_registry_file: str | None = None   # default: <project>/hyhome-secrets.yml (the secrets role's)
    env_example: str | None = None             # default: <project>/.env.example (the env step's template)
    env_supplied: tuple[str, ...] = ()         # names the env step sets from the inventory (values, generated)
    env_allow_empty: tuple[str, ...] = ()      # names that may stay empty on purpose (env_allow_empty)
    start_stack: bool = True                   # False: day0 only prepares; boot-time checks are warnings


@dataclass(frozen=True)
class Listener:
    """A socket listening (tcp) or bound (udp) on this host, from /proc/net or a bind attempt."""

    proto: str
    ip: str
    port: int
    process: str | None = None  # "nginx (pid 123)" when it could be resolved
    inode: str | None = None    # socket inode, to find the owning process


@dataclass(frozen=True)
class Binding:
    """A host port a running container publishes, as the engine reports it."""

    container: str
    project: str | None        # com.docker.compose.project label
    proto: str
    ip: str
    port: int


@dataclass(frozen=True)
class Disk:
    label: str                 # "project filesystem" | "Docker root"
    path: str
    free: int | None           # bytes; None when not measurable here
    error: str | None = None


@dataclass
class HostFacts:
    """Everything preflight needs from the host, gathered once. ``None`` means "could not tell"."""

    docker_error: str | None = None
    docker_version: str | None = None
    docker_api_version: str | None = None
    docker_root_dir: str | None = None
    compose_version: str | None = None
    compose_error: str | None = None
    max_map_count: int | None = None
    max_map_count_error: str | None = None
    mem_total: int | None = None              # bytes
    mem_available: int | None = None          # bytes
    disks: list[Disk] = field(default_factory=list)
    listeners: list[Listener] | None = None   # None: could not be read
    listeners_error: str | None = None
    bindings: list[Binding] | None = None     # None: engine unreachable
    networks: set[str] | None = None
    volumes: set[str] | None = None

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("networks", "volumes"):
            if d[key] is not None:
                d[key] = sorted(d[key])
        return d


# --------------------------------------------------------------------------------------------
# Small helpers


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """'v2.26.1-4' -> (2, 26, 1); '20.10.24+dfsg1' -> (20, 10, 24); None when there is no number."""
    if not text:
        return None
    m = re.search(r"(\d+(?:\.\d+)*)", text)
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def _version_lt(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    n = max(len(have), len(want))
    return have + (0,) * (n - len(have)) < want + (0,) * (n - len(want))


def _natural_key(text: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def _rel(path: str, root: str) -> str:
    """``path`` relative to the project when inside it (how people read the project), else absolute."""
    root = os.path.normpath(root)
    p = os.path.normpath(path)
    if p == root:
        return "."
    if p.startswith(root.rstrip("/") + "/"):
        return os.path.relpath(p, root)
    return p


def _within(path: str, root: str) -> bool:
    p, r = os.path.normpath(path), os.path.normpath(root)
    return p == r or p.startswith(r.rstrip("/") + "/")


def _first(project: Project, locations) -> Location | None:
    """The earliest of ``locations`` in the project's file order (root file first), then by line."""
    order = {f: i for i, f in enumerate(project.files)}
    known = [loc for loc in locations if loc is not None]
    return min(known, key=lambda loc: (order.get(loc.file, len(order)), loc.file, loc.line or 0), default=None)


def _located(finding: Finding | None, location: Location | None) -> Finding | None:
    """``finding`` pointing at ``location`` (the compose file and line that causes it), unless it
    already points somewhere."""
    if finding is None or location is None or finding.file:
        return finding
    return dataclasses.replace(finding, file=location.file, line=location.line)


def _where_text(project: Project, location: Location | None) -> str:
    """``file:line`` relative to the project, for a message naming several places."""
    if location is None:
        return ""
    return _rel(location.file, project.working_dir) + (f":{location.line}" if location.line else "")


def _n(count: int, word: str, plural: str | None = None) -> str:
    """'1 variable', '3 variables'."""
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n // MIB} MiB"


def load_secrets_registry(path: str | None) -> tuple[dict[str, dict], str | None]:
    """The secrets role's registry (``hyhome-secrets.yml``): name -> entry, and a problem, if any.

    Preflight only needs ``kind: provided`` (a person must supply the value), ``optional`` and
    ``hint``. Accepts the mapping at the top level or under ``secrets:``. Absent file: ({}, None).
    """
    if not path or not os.path.lexists(path):
        return {}, None
    try:
        data = compose_model.load_yaml_file(path, "secrets registry") or {}
    except compose_model.UnusableFile as exc:
        return {}, exc.reason
    if isinstance(data, dict) and isinstance(data.get("secrets"), dict):
        data = data["secrets"]
    if not isinstance(data, dict):
        return {}, "secrets registry is not a mapping of secret names to entries"
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}, None


# --------------------------------------------------------------------------------------------
# Host probes (the only impure part besides reading project files)


def _proc_hex_ip(hexip: str) -> str:
    raw = bytes.fromhex(hexip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def read_proc_listeners(proc: str = "/proc") -> list[Listener]:
    """TCP sockets in LISTEN and bound UDP sockets of this network namespace, from /proc/net."""
    out: list[Listener] = []
    tables = (("tcp", "tcp", "0A"), ("tcp", "tcp6", "0A"), ("udp", "udp", "07"), ("udp", "udp6", "07"))
    for proto, name, state in tables:
        path = os.path.join(proc, "net", name)
        try:
            with open(path, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) < 10 or parts[3] != state:
                        continue
                    ip_hex, port_hex = parts[1].split(":")
                    out.append(Listener(proto, _proc_hex_ip(ip_hex), int(port_hex, 16), inode=parts[9]))
        except FileNotFoundError:
            if name in ("tcp", "udp"):
                raise
    return out


def _socket_owners(inodes: set[str], proc: str = "/proc") -> dict[str, str]:
    """Map socket inodes to "comm (pid N)" by scanning /proc/*/fd (only what this user may read)."""
    owners: dict[str, str] = {}
    if not inodes:
        return owners
    wanted = {f"socket:[{i}]": i for i in inodes}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in wanted and wanted[target] not in owners:
                try:
                    with open(os.path.join(proc, pid, "comm"), encoding="utf-8", errors="replace") as fh:
                        comm = fh.read().strip()
                except OSError:
                    comm = "?"
                owners[wanted[target]] = f"{comm} (pid {pid})"
        if len(owners) == len(wanted):
            break
    return owners


def _bind_probe(proto: str, ip: str | None, port: int) -> bool:
    """True when ``port`` cannot be bound (in use). Fallback where /proc/net is not readable."""
    family = socket.AF_INET6 if ip and ":" in ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        try:
            s.bind((ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))  # noqa: S104
        except PermissionError:
            return False  # privileged port and we are not root: cannot tell
        except OSError:
            return True
    return False


def _published_ports(project: Project) -> list[tuple[str, str, int, list[str]]]:
    """(proto, host_ip, port, services) for every published host port, deduplicated and sorted."""
    seen: dict[tuple[str, str, int], list[str]] = {}
    for svc in project.services.values():
        for p in svc.ports:
            if not p.published:
                continue
            key = ((p.protocol or "tcp").lower(), p.host_ip or "", int(p.published))
            names = seen.setdefault(key, [])
            if not names or names[-1] != svc.name:   # a service's ports come together
                names.append(svc.name)
    return sorted(((k[0], k[1], k[2], sorted(v)) for k, v in seen.items()), key=lambda t: (t[2], t[0], t[1]))


def _docker_probe(facts: HostFacts, client_factory=None) -> None:
    try:
        if client_factory is None:
            try:
                import docker  # optional: its absence is reported as a finding
            except ImportError:
                facts.docker_error = (
                    f"the docker SDK for Python is not installed for {sys.executable}, so the engine cannot be queried"
                )
                return
            client = docker.from_env(timeout=15)
        else:
            client = client_factory()
        api = client.api
        ver = api.version()
        facts.docker_version = ver.get("Version")
        facts.docker_api_version = ver.get("ApiVersion")
        facts.docker_root_dir = api.info().get("DockerRootDir")
        bindings = []
        for c in api.containers():
            name = (c.get("Names") or ["?"])[0].lstrip("/")
            project = (c.get("Labels") or {}).get("com.docker.compose.project")
            for p in c.get("Ports") or []:
                if p.get("PublicPort"):
                    bindings.append(Binding(name, project, p.get("Type", "tcp"), p.get("IP", ""), int(p["PublicPort"])))
        facts.bindings = bindings
        facts.networks = {n.get("Name") for n in api.networks()}
        facts.volumes = {v.get("Name") for v in (api.volumes().get("Volumes") or [])}
    except Exception as exc:  # any failure means "engine unreachable": reported, never raised
        facts.docker_error = _explain_docker_error(exc)


def _explain_docker_error(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if "FileNotFoundError" in text or "No such file" in text:
        why = "the socket does not exist (is dockerd running?)"
    elif "PermissionError" in text or "Permission denied" in text:
        why = "permission denied on the socket (run as root or as a member of the docker group)"
    elif "Connection refused" in text or "ConnectionRefused" in text:
        why = "connection refused"
    elif "timed out" in text.lower():
        why = "the engine did not answer in time"
    else:
        why = text.splitlines()[0][:300]
    return f"cannot reach Docker Engine at {host}: {why}"


def _compose_probe(facts: HostFacts, docker_cli: str, project: Project | None = None) -> None:
    def version() -> dict:
        res = procs.run([docker_cli, "compose", "version", "--short"], timeout=60)
        return {"returncode": res.returncode, "stdout": res.stdout}

    try:
        # The Compose plugin's version only changes with its binary, which the project context's key
        # covers: kept with the context, like `docker compose config` itself.
        res = version() if project is None else project_context.memo(
            project, "compose-version", version,
            valid=lambda v: isinstance(v, dict) and v.get("returncode") == 0 and isinstance(v.get("stdout"), str))
        res = subprocess.CompletedProcess([], res["returncode"], res["stdout"], "")
    except FileNotFoundError:
        facts.compose_error = f"the docker CLI ({docker_cli}) is not installed"
        return
    except (OSError, procs.CommandTimeout) as exc:
        facts.compose_error = f"`{docker_cli} compose version` failed: {exc}"
        return
    if res.returncode == 0 and parse_version(res.stdout.strip()):
        facts.compose_version = res.stdout.strip().lstrip("v")
        return
    v1 = None
    try:
        r1 = procs.run(["docker-compose", "version", "--short"], timeout=60)
        if r1.returncode == 0:
            v1 = r1.stdout.strip()
    except (OSError, procs.CommandTimeout):
        pass
    if v1 and (parse_version(v1) or (0,))[0] < 2:
        facts.compose_error = f"only the old Compose v1 (docker-compose {v1}) is installed; the v2 plugin is missing"
    else:
        facts.compose_error = "the Compose v2 plugin is missing (`docker compose version` failed)"


def _meminfo(facts: HostFacts, proc: str) -> None:
    try:
        with open(os.path.join(proc, "meminfo"), encoding="ascii") as fh:
            info = {}
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    info[key] = int(parts[0]) * 1024
        facts.mem_total = info.get("MemTotal")
        facts.mem_available = info.get("MemAvailable", info.get("MemFree"))
    except OSError:
        pass


def _disk(label: str, path: str | None) -> Disk | None:
    if not path:
        return None
    try:
        st = os.statvfs(path)
    except FileNotFoundError:
        return Disk(label, path, None, "not visible from here")
    except OSError as exc:
        return Disk(label, path, None, exc.strerror or str(exc))
    return Disk(label, path, st.f_bavail * st.f_frsize)


def gather_host_facts(project: Project, options: Options = Options(), docker_cli: str = "docker",
                      client_factory=None, proc: str = "/proc") -> HostFacts:
    """Probe the host once. Never raises: a failed probe is recorded in the facts and reported."""
    facts = HostFacts()
    _docker_probe(facts, client_factory)
    _compose_probe(facts, docker_cli, project)
    try:
        with open(os.path.join(proc, "sys/vm/max_map_count"), encoding="ascii") as fh:
            facts.max_map_count = int(fh.read().strip())
    except (OSError, ValueError) as exc:
        facts.max_map_count_error = f"cannot read vm.max_map_count: {getattr(exc, 'strerror', None) or exc}"
    _meminfo(facts, proc)
    facts.disks = [d for d in (_disk("project filesystem", project.working_dir),
                               _disk("Docker root", facts.docker_root_dir)) if d]
    published = _published_ports(project) if options.check_ports else []
    if published:
        try:
            ports = {p[2] for p in published}
            listeners = [li for li in read_proc_listeners(proc) if li.port in ports]
            owners = _socket_owners({li.inode for li in listeners if li.inode}, proc)
            facts.listeners = [dataclasses.replace(li, process=owners.get(li.inode or "")) for li in listeners]
        except (OSError, ValueError):
            # No /proc/net (not Linux): fall back to trying to bind each published port.
            facts.listeners = [Listener(pr, ip or "0.0.0.0", port) for pr, ip, port, _ in published  # noqa: S104
                               if _bind_probe(pr, ip, port)]
    else:
        facts.listeners = []
    return facts


# --------------------------------------------------------------------------------------------
# Checks (pure)


def _ip_overlap(a: str | None, b: str | None) -> bool:
    wild = ("", "0.0.0.0", "::", "*")  # noqa: S104
    return (a or "") in wild or (b or "") in wild or a == b


def _check_docker(facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.docker_engine"
    if facts.docker_error:
        return [Finding(cid, BLOCKER, "Docker Engine", facts.docker_error,
                        "install and start Docker Engine (the docker_engine step does it); check DOCKER_HOST and "
                        "that this user may use the socket; the docker SDK for Python must be importable",
                        "docker_engine")]
    have = parse_version(facts.docker_version)
    want = parse_version(opt.min_docker_version) or (0,)
    if have is None or _version_lt(have, want):
        return [Finding(cid, BLOCKER, "Docker Engine",
                        f"version {facts.docker_version} is older than the minimum {opt.min_docker_version}",
                        f"upgrade Docker Engine to {opt.min_docker_version} or later (the docker_engine step)",
                        "docker_engine")]
    return [Finding(cid, INFO, "Docker Engine",
                    f"reachable, version {facts.docker_version} (API {facts.docker_api_version})")]


def _check_compose(facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.compose"
    if facts.compose_error or not facts.compose_version:
        return [Finding(cid, BLOCKER, "Compose v2", facts.compose_error or "not found",
                        "install the Compose v2 plugin (docker-compose-plugin, or the docker_engine step)",
                        "docker_engine")]
    have = parse_version(facts.compose_version) or (0,)
    if have[0] < 2:
        return [Finding(cid, BLOCKER, "Compose v2", f"version {facts.compose_version} is Compose v1",
                        "install the Compose v2 plugin", "docker_engine")]
    if _version_lt(have, parse_version(opt.warn_compose_below) or (0,)):
        return [Finding(cid, WARNING, "Compose v2",
                        f"version {facts.compose_version} is older than {opt.warn_compose_below}: `include:`, "
                        "`--wait` and health handling differ in older releases",
                        f"upgrade the Compose plugin to {opt.warn_compose_below} or later", "docker_engine")]
    return [Finding(cid, INFO, "Compose v2", f"version {facts.compose_version}")]


def _image_name(image: str) -> str:
    """'docker.elastic.co/elasticsearch/elasticsearch:8.1@sha256:..' -> 'elasticsearch'. Works on raw
    files too (``docker compose config`` failed): interpolations left unresolved are dropped first."""
    image = re.sub(r"\$\{[^}]*\}", "", image)
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0].lower()


def _check_max_map_count(project: Project, facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.vm_max_map_count"
    wanted = {s.lower() for s in opt.search_images}
    needing = sorted(s.name for s in project.services.values() if s.image and _image_name(s.image) in wanted)
    if not needing:
        return [Finding(cid, INFO, "vm.max_map_count", "not needed: no OpenSearch/Elasticsearch service")]
    # the first search service's declaration; the others (when several) by file:line in the text
    locations = [project.services[n].location for n in needing]
    loc = _first(project, locations)
    who = ", ".join(needing) if len(needing) == 1 else ", ".join(
        f"{n} ({_where_text(project, where)})" if where else n for n, where in zip(needing, locations, strict=True))
    want = opt.vm_max_map_count
    subject = "vm.max_map_count"
    fix = (f"sysctl -w vm.max_map_count={want} and persist it in /etc/sysctl.d/99-hyhome.conf (day0 does both, "
           "before this check, where /proc/sys is writable)")
    if project.source == "raw":
        who += " (found in the compose files: `docker compose config` failed)"
    if facts.max_map_count is None:
        why = facts.max_map_count_error or "unknown"
        return [_located(Finding(cid, WARNING, subject, f"{why}; service {who} needs >= {want}", fix), loc)]
    if facts.max_map_count < want:
        return [_located(Finding(cid, BLOCKER, subject,
                                 f"{facts.max_map_count} is below {want}, the minimum OpenSearch/Elasticsearch need "
                                 f"to start (service {who})", fix), loc)]
    return [_located(Finding(cid, INFO, subject, f"{facts.max_map_count} (>= {want}, for service {who})"), loc)]


def _check_disk(facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.disk"
    out = []
    want = int(opt.min_disk_free_gb * GIB)
    for d in facts.disks:
        if d.free is None:
            out.append(Finding(cid, INFO, d.label, f"{d.path}: not measured ({d.error})"))
        elif d.free < want:
            out.append(Finding(cid, BLOCKER, d.label,
                               f"{_gib(d.free)} free at {d.path}, below the minimum {opt.min_disk_free_gb:g} GiB",
                               "free disk space (docker system prune, old logs) or lower preflight_min_disk_free_gb"))
        else:
            out.append(Finding(cid, INFO, d.label,
                               f"{_gib(d.free)} free at {d.path} (minimum {opt.min_disk_free_gb:g} GiB)"))
    return out


def _check_memory(project: Project, facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.memory"
    if facts.mem_available is None:
        return [Finding(cid, WARNING, "memory", "not measured: /proc/meminfo is not readable",
                        "check the host has enough memory for the stack")]
    out = []
    if facts.mem_available < opt.min_memory_available_mb * MIB:
        out.append(Finding(cid, WARNING, "memory",
                           f"{_mib(facts.mem_available)} available, below {opt.min_memory_available_mb} MiB",
                           "stop other workloads or add memory; lower preflight_min_memory_available_mb if intended"))
    else:
        out.append(Finding(cid, INFO, "memory",
                           f"{_mib(facts.mem_available)} available of {_mib(facts.mem_total or 0)}"))
    limits = sum(s.mem_limit or 0 for s in project.services.values())
    if facts.mem_total and limits > facts.mem_total:
        out.append(Finding(cid, WARNING, "memory limits",
                           f"services' memory limits add up to {_mib(limits)}, more than the host's "
                           f"{_mib(facts.mem_total)}", "lower the services' mem_limit or add memory"))
    return out


def _check_ports(project: Project, facts: HostFacts, opt: Options) -> list[Finding]:
    cid = "host.ports"
    if not opt.check_ports:
        return [Finding(cid, INFO, "ports", "not checked (check_ports is off)")]
    published = _published_ports(project)
    if not published:
        return [Finding(cid, INFO, "ports", "the project publishes no host port")]
    out = []
    free = own = 0
    for proto, ip, port, services in published:
        subject = f"{proto}/{port}" + (f" on {ip}" if ip else "")
        used_by = ", ".join(services)
        loc = _first(project, [project.services[n].location for n in services])
        bindings = [b for b in (facts.bindings or []) if b.proto == proto and b.port == port
                    and _ip_overlap(b.ip, ip)]
        if any(b.project == project.name for b in bindings):
            own += 1  # held by this project's own container: that is us, running already
            continue
        if bindings:
            b = bindings[0]
            holder = f"container {b.container}" + (f" of compose project {b.project}" if b.project else "")
            out.append(_located(Finding(cid, BLOCKER, subject, f"published by {used_by}, but already held by {holder}",
                                        f"stop {b.container} or publish {used_by} on another port"), loc))
            continue
        listeners = [li for li in (facts.listeners or []) if li.proto == proto and li.port == port
                     and _ip_overlap(li.ip, ip)]
        if listeners:
            li = listeners[0]
            holder = li.process or "another process"
            out.append(_located(Finding(cid, BLOCKER, subject,
                                        f"published by {used_by}, but already in use on {li.ip} by {holder}",
                                        f"stop what holds port {port} (ss -ltnp 'sport = :{port}') or publish "
                                        f"{used_by} on another port"), loc))
            continue
        free += 1
    notes = []
    if facts.bindings is None:
        notes.append("containers not checked: Docker Engine unreachable")
    if facts.listeners is None:
        notes.append(f"host sockets not checked: {facts.listeners_error or 'unknown'}")
    if notes:
        out.append(Finding(cid, WARNING, "ports", "; ".join(notes), "re-run once the engine is reachable"))
    if free or own:
        parts = [f"{_n(free, 'published port')} free"] if free else []
        if own:
            parts.append(f"{_n(own, 'published port')} held by this project's own running containers")
        out.append(Finding(cid, INFO, "ports", ", ".join(parts)))
    return out


def _check_config(project: Project) -> list[Finding]:
    cid = "project.compose_config"
    out = []
    for err in project.file_errors:
        loc = _rel(err.location.file, project.working_dir) + (f":{err.location.line}" if err.location.line else "")
        out.append(_located(Finding(cid, BLOCKER, loc, err.message, "fix the file (scripts/validate-docker-compose.sh "
                                                                    "lints every compose file)"), err.location))
    if project.config_error:
        errors, warnings = compose_model.split_compose_stderr(project.config_error)
        first = "; ".join(errors[:3]) or "without an error line"
        if warnings:
            first += f" (and {_n(len(warnings), 'compose warning')}: the validate step lists them)"
        unset = sorted(set(re.findall(r"required variable (\w+) is missing a value", project.config_error)))
        if unset:  # only .env is wrong, and the env step writes .env
            fix, step = f"set {', '.join(unset)} in .env (the env step renders it)", "env"
        else:
            fix, step = ("fix the compose files until `docker compose config -q` passes "
                         "(scripts/validate-docker-compose.sh explains common errors)"), None
        out.append(_located(Finding(cid, BLOCKER, "docker compose config",
                                    f"failed: {first} -- the other project checks use the raw compose files", fix,
                                    step), _config_error_location(project, errors, unset)))
    if not out:
        out.append(Finding(cid, INFO, "docker compose config",
                           f"ok: {_n(len(project.services), 'service')} from {_n(len(project.files), 'file')}"))
    return out


_SERVICE_IN_ERROR_RE = re.compile(r'\bservices?(?: "([^"]+)"|\.([\w-]+)|\[([^\]]+)\])')


def _config_error_location(project: Project, errors: list[str], unset: list[str]) -> Location | None:
    """Where the cause of a failed ``docker compose config`` is written: the reference of a
    required variable (``${X:?}``) it stopped on, else the service its error names, else a compose
    file it names (no line: compose does not give one)."""
    if unset:
        refs = [r for r in project.env_refs if r.name in unset]
        return _first(project, [r.location for r in refs if r.required] or [r.location for r in refs])
    text = "\n".join(errors)
    for m in _SERVICE_IN_ERROR_RE.finditer(text):
        svc = project.services.get(next(g for g in m.groups() if g))
        if svc is not None and svc.location is not None:
            return svc.location
    named = [f for f in project.files if f in text]
    return Location(max(named, key=len), None) if named else None


def _env_needs(project: Project) -> dict[str, dict]:
    """Variables referenced without a default: name -> {required, where (``file:line`` texts),
    locations (the same places as ``Location``s, in the same order)}."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.env_file import substitutes_empty

    needs: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()    # (name, where): one variable may be referenced by every service
    for ref in project.env_refs:
        if ref.has_default or substitutes_empty(ref):   # ${X:+alt} is "" by design when X is unset
            continue
        n = needs.setdefault(ref.name, {"required": False, "where": [], "locations": []})
        n["required"] = n["required"] or ref.required
        loc = ref.location
        if loc is not None:
            where = _rel(loc.file, project.working_dir) + (f":{loc.line}" if loc.line else "")
            if (ref.name, where) not in seen:
                seen.add((ref.name, where))
                n["where"].append(where)
                n["locations"].append(loc)
    return needs


def _where(places: list[str]) -> str:
    if not places:
        return ""
    more = f" and {len(places) - 2} more" if len(places) > 2 else ""
    return " (" + ", ".join(places[:2]) + more + ")"


def _check_env(project: Project, env_path: str, env: dict[str, str] | None,
               problem: str | None = None, example: dict[str, str] | None = None,
               example_path: str | None = None, supplied=(), allow_empty=()) -> list[Finding]:
    """``.env`` and the variables referenced without a default. An empty one blocks like an unset
    one (Compose would stop, or substitute ""). Left to the env step when it will set the variable
    (a value in the example, or ``supplied`` by the inventory); otherwise the fix says where to set it."""
    needs = _env_needs(project)
    rel = _rel(env_path, project.working_dir)
    fix_env = f"add the variable to {rel} (the env step renders it from .env.example and the inventory)"
    out = []
    if problem:
        out.append(Finding("project.env_file", BLOCKER, rel, f"{problem}; Compose cannot read it",
                           f"replace {rel} with a KEY=VALUE file (the env step renders it)", "env", file=env_path))
    elif env is None:
        if needs:
            out.append(Finding("project.env_file", BLOCKER, rel,
                               f"missing; {_n(len(needs), 'variable')} referenced without a default need it",
                               f"create {rel} (the env step renders it from .env.example and the inventory)", "env",
                               file=env_path))
        else:
            out.append(Finding("project.env_file", INFO, rel, "absent; no variable needs it"))
    else:
        out.append(Finding("project.env_file", INFO, rel, f"present, {_n(len(env), 'variable')}"))
    env = env or {}
    supplied, allow = set(supplied or ()), set(allow_empty or ())
    example_rel = _rel(example_path or os.path.join(project.working_dir, ".env.example"), project.working_dir)
    no_example = example is None
    example = example or {}
    bad = 0
    for name in sorted(needs):
        n = needs[name]
        may_be_empty = name in allow and not n["required"]
        if env.get(name) or (name in env and may_be_empty):
            continue
        bad += 1
        where = _where(n["where"])
        loc = n["locations"][0] if n["locations"] else None
        state = f"not set in {rel}" if name not in env else f"empty in {rel}"
        why = "Compose stops with an error" if n["required"] else "Compose substitutes an empty string"
        if name in supplied or example.get(name) or may_be_empty:
            out.append(_located(Finding("project.env_vars", BLOCKER, name,
                                        f"referenced without a default{where} but {state}: {why}", fix_env, "env"),
                                loc))
            continue
        out.append(_located(Finding(
            "project.env_vars", BLOCKER, name,
            f"referenced without a default{where}, {state}, and nothing will set it: "
            + (f"there is no {example_rel}" if no_example
               else f"{example_rel} leaves it {'empty' if name in example else 'out'}")
            + f" and the inventory does not set it; {why}",
            f"set {name} in the inventory's env_values or in {example_rel}; if it is an identifier that only has "
            f"to be unique and stable (a cluster id), declare it in env_generated ({name}: uuid, hex or "
            f"kafka-cluster-id) and the env step generates it once; if it may stay empty, list it in env_allow_empty"),
            loc))
    if not bad:
        out.append(Finding("project.env_vars", INFO, "variables",
                           f"{_n(len(needs), 'variable')} referenced without a default, all set"))
    return out


def _read_env(path: str) -> tuple[dict[str, str] | None, str | None]:
    """(variables, problem): variables is None when the file is absent or unreadable. Values stay in
    memory, never reported."""
    if os.path.isdir(path):
        return None, "is a directory, not a file"
    if not os.path.exists(path):
        return None, None
    try:
        return compose_model.read_dotenv(path), None
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}"


def _is_cert_path(path: str, project_dir: str) -> bool:
    return _within(path, os.path.join(project_dir, "secrets", "certs")) or path.lower().endswith(CERT_SUFFIXES)


def _looks_like_file(host_path: str, target: str) -> bool:
    for p in (host_path, target):
        base = os.path.basename(p.rstrip("/"))
        ext = os.path.splitext(base)[1]
        if ext and ext != ".d" and not base.startswith("."):
            return True
    return False


def _stat_kind(path: str) -> str:
    """'missing' | 'file' | 'dir' | 'other' | 'unreadable: <why>'."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


def _is_blank(path: str) -> bool | None:
    """True when the file is empty or whitespace only. The content is read, never reported."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    return not head.strip()


def _check_secret_file(cid: str, subject: str, path: str, used_by: list[str], project_dir: str,
                       entry: dict | None = None) -> Finding | None:
    """One secret or certificate file. ``entry``: :func:`provided_entry` when only a person can supply it."""
    step = "tls" if cid == "project.certs" else "secrets"
    what = "certificate" if cid == "project.certs" else "secret"
    rel = _rel(path, project_dir)
    tail = f"; used by {', '.join(used_by)}" if used_by else "; no service uses it"
    sev = BLOCKER if used_by else WARNING
    entry = entry or {}
    provided = entry.get("kind") == "provided"
    readers = f"read by {', '.join(used_by)}" if used_by else "no service reads it"
    origin = ("kind provided inferred from its name" if entry.get("inferred")
              else f"kind provided in {entry.get('registry') or 'the secrets registry'}")
    if provided:
        what = f" ({entry['hint']})" if entry.get("hint") else ""
        fix = f"a person supplies it{what}: write it to {rel} ({readers})"
        if entry.get("inferred"):
            fix += f"; if the stack can generate it instead, give {subject} a kind in {entry.get('registry')}"
    elif step == "secrets":
        fix = f"run the secrets step (hyhome.bootstrap.secrets) to create it, or create {rel} yourself"
    else:
        fix = f"run the tls step (hyhome.bootstrap.tls) to create it, or put your own at {rel}"
    kind = _stat_kind(path)
    if kind.startswith("unreadable"):
        return Finding(cid, WARNING, subject, f"cannot check {rel}: {kind[12:]}", "run preflight as root")
    if kind == "file" and not _is_blank(path):
        if provided and _is_placeholder(path):
            return Finding(cid, WARNING, subject,
                           f"provided secret {rel} still holds the placeholder, not a working value ({origin}); "
                           f"{readers}", fix)
        return None
    if kind == "missing":
        state = "is missing"
    elif kind == "dir":
        state = "is a directory, not a file (Docker creates one when the file is missing)"
    else:
        state = "is empty"
    if provided and entry.get("optional"):
        return Finding(cid, WARNING, subject,
                       f"provided secret {rel} {state} ({origin}); {readers}: the secrets step writes a placeholder, "
                       "so the stack boots, but what needs the value fails until a person writes it", fix, step)
    if provided:
        return Finding(cid, sev, subject,
                       f"provided secret {rel} {state} ({origin}); {readers}; only a person can supply it", fix)
    if kind == "dir":
        return Finding(cid, sev, subject, f"{rel} {state}{tail}", f"remove the directory {rel}, then: {fix}", step)
    if kind == "other":
        return Finding(cid, sev, subject, f"{rel} is not a regular file{tail}", f"replace it with a file: {fix}")
    return Finding(cid, sev, subject, f"{what} file {rel} {state}{tail}",
                   fix if state == "is missing" else f"put the value in {rel} (or delete it and run the {step} step)",
                   step)


def _is_placeholder(path: str) -> bool:
    """The secrets step's placeholder for an optional provided secret (read, never reported)."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.secrets import is_placeholder

    try:
        with open(path, "rb") as fh:
            return is_placeholder(fh.read(256))
    except OSError:
        return False


def provided_entry(name: str, entry: dict | None, registry_rel: str = "hyhome-secrets.yml") -> dict | None:
    """How preflight sees a secret only a person can supply, else None: ``kind: provided`` in the
    registry, or inferred from a name that signals an outside credential (``slack_webhook``,
    ``smtp_password``, an OAuth client secret: the secrets step's own inference). An inferred one
    gets a placeholder from the secrets step (optional) unless the registry says otherwise."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.secrets import infer_kind

    entry = entry or {}
    kind, why = entry.get("kind"), None
    if not kind:
        guess = infer_kind(name)
        if guess:
            kind, why = guess
    if kind != "provided":
        return None
    return {"kind": "provided", "optional": bool(entry.get("optional", why is not None)),
            "hint": entry.get("hint") or entry.get("description") or why, "inferred": why is not None,
            "registry": registry_rel}


def _check_secrets(project: Project, registry: dict[str, dict] | None = None,
                   registry_rel: str = "hyhome-secrets.yml") -> tuple[list[Finding], dict[str, int]]:
    root = project.working_dir
    used: dict[str, list[str]] = {}
    for svc in project.services.values():
        for ref in svc.secrets:
            lst = used.setdefault(ref.source, [])
            if not lst or lst[-1] != svc.name:   # a service's secrets come together
                lst.append(svc.name)
    out: list[Finding] = []
    counts = {"project.secrets": 0, "project.certs": 0}
    for name in sorted(project.secrets):
        sec = project.secrets[name]
        if not sec.file or sec.external:
            continue
        cid = "project.certs" if _is_cert_path(sec.file, root) else "project.secrets"
        counts[cid] += 1
        entry = provided_entry(name, (registry or {}).get(name), registry_rel)
        f = _check_secret_file(cid, name, sec.file, sorted(used.get(name, [])), root, entry)
        if f:
            out.append(_located(f, sec.location))
    return out, counts


def _bind_mounts(project: Project) -> dict[str, dict]:
    """host path -> {services, targets, create, volume, nonroot, host, locations} over every bind mount of
    the project. ``host``: every mount of the path is the host's (read-only, outside the project), never
    managed. ``locations``: where each mount of it is written (the ``volumes:`` entries)."""
    binds: dict[str, dict] = {}
    for svc in project.services.values():
        for m in svc.mounts:
            if not m.host_path:
                continue
            b = binds.setdefault(os.path.normpath(m.host_path),
                                 {"services": [], "targets": [], "create": True, "volume": None, "nonroot": False,
                                  "host": True, "locations": []})
            b["locations"].append(m.location)
            b["host"] = b["host"] and classify(project, svc, m) == "host"
            if not b["services"] or b["services"][-1] != svc.name:   # a service's mounts come together
                b["services"].append(svc.name)
            b["targets"].append(m.target)
            if m.type != "bind":
                b["volume"] = m.volume or "volume"
                b["create"] = False
            elif not m.create_host_path:
                b["create"] = False
            if svc.user and svc.user.split(":", 1)[0] not in ("0", "root"):
                b["nonroot"] = True
    return binds


def _check_binds(project: Project, counts: dict[str, int]) -> list[Finding]:
    root = project.working_dir
    secrets_dir = os.path.join(root, "secrets")
    out: list[Finding] = []
    n_dirs = n_files = 0
    binds = _bind_mounts(project)
    for path in sorted(binds, key=_natural_key):
        b = binds[path]
        rel = _rel(path, root)
        users = ", ".join(sorted(b["services"]))
        is_file = _looks_like_file(path, b["targets"][0]) or example_for(path) is not None
        if b["host"]:
            n_files, n_dirs = (n_files + 1, n_dirs) if is_file else (n_files, n_dirs + 1)
            if _stat_kind(path) == "missing":
                out.append(Finding("project.bind_files" if is_file else "project.bind_dirs", WARNING, rel,
                                   f"host path, not managed: missing on this host; bind-mounted read-only by {users}",
                                   f"nothing for day0 to create (it is the host's, not the project's): check that "
                                   f"{users} need it on this host, or drop the mount in a compose override file"))
            continue
        if _is_cert_path(path, root) or _within(path, secrets_dir):
            cid = "project.certs" if _is_cert_path(path, root) else "project.secrets"
            counts[cid] += 1
            if is_file:
                f = _check_secret_file(cid, rel, path, sorted(b["services"]), root)
                if f:
                    out.append(f)
            elif _stat_kind(path) == "missing":
                step = "tls" if cid == "project.certs" else "secrets"
                out.append(Finding(cid, BLOCKER, rel, f"directory {rel} is missing; bind-mounted by {users}",
                                   f"run the {step} step (hyhome.bootstrap.{step}) to create it", step))
            continue
        kind = _stat_kind(path)
        example = example_for(path)
        if is_file:
            n_files += 1
            if kind == "missing":
                if example:
                    out.append(Finding("project.bind_files", BLOCKER, rel,
                                       f"bind-mounted by {users} but missing; {_rel(example, root)} exists, so it "
                                       "is fixable by the data_dirs/env step (Docker would create a directory here)",
                                       f"run the data_dirs step, or copy {_rel(example, root)} to {rel} and edit it",
                                       "data_dirs"))
                else:
                    out.append(Finding("project.bind_files", BLOCKER, rel,
                                       f"bind-mounted by {users} but missing, and no {os.path.basename(rel)}.example "
                                       "sibling exists (Docker would create a directory here)",
                                       f"create {rel} (it is configuration the project expects you to provide)"))
            elif kind == "dir" and example:
                out.append(Finding("project.bind_files", BLOCKER, rel,
                                   f"is a directory, but {_rel(example, root)} shows a file is meant (Docker creates "
                                   f"a directory when the file is missing); bind-mounted by {users}",
                                   f"remove the directory {rel}, then copy {_rel(example, root)} to {rel}",
                                   "data_dirs"))
            elif kind.startswith("unreadable"):
                out.append(Finding("project.bind_files", WARNING, rel, f"cannot check: {kind[12:]}",
                                   "run preflight as root"))
            continue
        n_dirs += 1
        if kind == "missing":
            if not b["create"]:
                how = (f"local volume {b['volume']} binds it" if b["volume"] else "create_host_path is false")
                out.append(Finding("project.bind_dirs", BLOCKER, rel,
                                   f"missing; {how}, so Docker will not create it and {users} cannot start",
                                   f"run the data_dirs step, or mkdir -p {rel}", "data_dirs"))
            elif b["nonroot"]:
                out.append(Finding("project.bind_dirs", BLOCKER, rel,
                                   f"missing; Docker would create it owned by root and non-root {users} could not "
                                   "write to it", "run the data_dirs step (creates it with the right owner)",
                                   "data_dirs"))
            else:
                out.append(Finding("project.bind_dirs", WARNING, rel,
                                   f"missing; bind-mounted by {users}: Docker would create it owned by root",
                                   "run the data_dirs step (creates it with the owner the container runs as)",
                                   "data_dirs"))
        elif kind == "file":
            pass  # a file mounted at an extension-less path: fine
        elif kind.startswith("unreadable"):
            out.append(Finding("project.bind_dirs", WARNING, rel, f"cannot check: {kind[12:]}",
                               "run preflight as root"))
    counts["project.bind_dirs"] = n_dirs
    counts["project.bind_files"] = n_files
    # every finding here is about one bind path (its subject): point at the volumes: line of the first
    # service mounting it
    where = {_rel(path, root): _first(project, b["locations"]) for path, b in binds.items()}
    return [_located(f, where.get(f.subject)) for f in out]


def _check_external(project: Project, facts: HostFacts) -> tuple[list[Finding], dict[str, int]]:
    out: list[Finding] = []
    counts = {"project.networks": 0, "project.volumes": 0}
    externals = [("project.networks", "network", n.name, n.key) for n in project.networks.values() if n.external]
    for key, spec in project.volumes.items():
        spec = spec or {}
        if spec.get("external"):
            ext = spec.get("external")
            name = spec.get("name") or (ext.get("name") if isinstance(ext, dict) else None) or key
            externals.append(("project.volumes", "volume", name, key))
    for cid, kind, name, key in sorted(externals, key=lambda t: (CHECK_ORDER[t[0]], t[2])):
        counts[cid] += 1
        loc = project.declarations.get(kind + "s", {}).get(key)
        start = len(out)
        have = facts.networks if kind == "network" else facts.volumes
        if have is None:
            out.append(Finding(cid, WARNING, name, f"external {kind}: not checked, Docker Engine unreachable",
                               "re-run once the engine is reachable"))
        elif name not in have and kind == "network":
            out.append(Finding(cid, BLOCKER, name,
                               "external network does not exist; Compose will not create it, the compose step "
                               "does (compose_create_networks)",
                               f"let the compose step create it, or docker network create {name}", "compose"))
        elif name not in have:
            out.append(Finding(cid, BLOCKER, name,
                               f"external {kind} does not exist; Compose will not create it",
                               f"docker {kind} create {name}"))
        out[start:] = [_located(f, loc) for f in out[start:]]
    return out, counts


@compose_model.quiet_gc()
def run_checks(project: Project, facts: HostFacts, options: Options = Options()) -> list[Finding]:
    """Every finding for ``project`` on a host described by ``facts``, in stable order. Pure but for
    reading the project's files."""
    def in_project(path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(project.working_dir, path)

    env_path = in_project(options.env_file or project.env_file or ".env")
    registry_path = in_project(options.secrets_registry_file or "hyhome-secrets.yml")
    registry, registry_problem = load_secrets_registry(registry_path)
    findings: list[Finding] = []
    findings += _check_docker(facts, options)
    findings += _check_compose(facts, options)
    findings += _check_max_map_count(project, facts, options)
    findings += _check_disk(facts, options)
    findings += _check_memory(project, facts, options)
    findings += _check_ports(project, facts, options)
    findings += _check_config(project)
    example_path = in_project(options.env_example or ".env.example")
    example = compose_model.read_dotenv(example_path) if os.path.isfile(example_path) else None
    findings += _check_env(project, env_path, *_read_env(env_path), example=example, example_path=example_path,
                           supplied=options.env_supplied, allow_empty=options.env_allow_empty)
    secret_findings, counts = _check_secrets(project, registry, _rel(registry_path, project.working_dir))
    findings += secret_findings
    if registry_problem:
        rel = _rel(registry_path, project.working_dir)
        findings.append(Finding("project.secrets", BLOCKER, rel, registry_problem,
                                f"fix {rel}: the secrets step reads it", file=registry_path))
    findings += _check_binds(project, counts)
    ext_findings, ext_counts = _check_external(project, facts)
    findings += ext_findings
    counts.update(ext_counts)
    # One "ok" row per project check that found nothing, so the table shows what was checked.
    ok_rows = {
        "project.secrets": ("secrets", "secret file", "secret files", "present and non-empty"),
        "project.certs": ("certificates", "certificate file", "certificate files", "present"),
        "project.bind_dirs": ("bind mounts", "bind-mount directory", "bind-mount directories", "present"),
        "project.bind_files": ("bind mounts", "bind-mounted file", "bind-mounted files", "present"),
        "project.networks": ("networks", "external network", "external networks", "exist"),
        "project.volumes": ("volumes", "external volume", "external volumes", "exist"),
    }
    flagged = {f.rule for f in findings if f.severity != INFO}
    for cid, (subject, one, many, state) in ok_rows.items():
        if cid not in flagged:
            n = counts.get(cid, 0)
            text = f"no {one} in the project" if n == 0 else f"{n} {one if n == 1 else many} {state}"
            findings.append(Finding(cid, INFO, subject, text))
    if not options.start_stack:
        findings = [_not_needed_yet(f) for f in findings]
    return sort_findings(findings)


def _not_needed_yet(f: Finding) -> Finding:
    """A boot-time blocker as a warning, for a run that prepares the project without starting it."""
    if f.rule not in BOOT_TIME_CHECKS or f.severity != BLOCKER:
        return f
    return dataclasses.replace(f, severity=WARNING,
                               message=f"{f.message} -- needed before the stack starts (this run only prepares it: "
                                       "hyhome_start_stack is false)")


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Stable report order: check order, then blockers before warnings before info, then subject."""
    sev = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (CHECK_ORDER.get(f.rule, 99), sev.get(f.severity, 9),
                                           _natural_key(f.subject), f.message))


def blocking(findings: list[Finding], deferred_steps=()) -> list[Finding]:
    """Blockers that stop first boot, except those a later step (in ``deferred_steps``) will fix."""
    deferred = set(deferred_steps or ())
    return [f for f in findings if f.severity == BLOCKER and not (f.fixed_by and f.fixed_by in deferred)]


def summarize(findings: list[Finding], deferred_steps=()) -> dict:
    """The shared counts (error, warning, info, accepted) plus how many errors block first boot now
    (``blocking``), how many later steps fix (``deferred``) and ``blocks_boot``."""
    counts = shared.summarize(findings)
    blocks = blocking(findings, deferred_steps)
    return {**counts, "blocking": len(blocks), "deferred": counts[ERROR] - len(blocks),
            "blocks_boot": bool(blocks)}


def build_report(project: Project, findings: list[Finding], deferred_steps=()) -> dict:
    """The JSON report: deterministic (no timestamps), no secret values, only names and paths."""
    return {
        "schema": 2,
        "project": {"name": project.name, "dir": project.working_dir, "files": list(project.files),
                    "model_source": project.source},
        "deferred_steps": sorted(set(deferred_steps or ())),
        "summary": summarize(findings, deferred_steps),
        "findings": [f.as_dict(project.working_dir) for f in findings],
    }


def render_table(project: Project, findings: list[Finding], deferred_steps=(),
                 problems_only: bool = False) -> list[str]:
    """The human table (the shared layout), one finding per row, the fix on the line below
    (``problems_only``: no info rows), then the verdict."""
    s = summarize(findings, deferred_steps)
    if problems_only:
        findings = [f for f in findings if f.severity != INFO]
    lines = [f"Preflight of Compose project {project.name} ({project.working_dir})",
             *shared.render_table(findings, project.working_dir, deferred_steps)]
    stop = "stops" if s["blocking"] == 1 else "stop"
    verdict = (f"BLOCKED: {_n(s['blocking'], 'error')} {stop} first boot" if s["blocks_boot"]
               else "OK: nothing blocks first boot")
    if s["deferred"]:
        verdict += f" ({_n(s['deferred'], 'more error')} left to later steps)"
    lines.append(f"{verdict}; {_n(s[WARNING], 'warning')}, {s[INFO]} info.")
    return lines


# --------------------------------------------------------------------------------------------
# Entry points


@dataclass
class Result:
    project: Project
    facts: HostFacts
    findings: list[Finding]
    report: dict
    table: list[str]
    blocking: list[Finding]


def load(project_dir: str, files=None, env_file=None, profiles=None, docker: str = "docker",
         cache: str = "off") -> Project:
    """The project through the one compose model. Bad input (no such directory, not a Compose project)
    raises HyHomeError; when `docker compose` itself is unusable, the raw files stand in, and the
    reason is the project's ``config_error`` (so it becomes a finding, not a stop). ``cache``: the
    run's project context (``compose_model.load_project``)."""
    try:
        return compose_model.load_project(project_dir, files=files or None, env_file=env_file,
                                          profiles=profiles or None, docker=docker, cache=cache)
    except compose_model.UnusableFile:
        raise
    except HyHomeError as exc:
        # Bad input raises again here; otherwise docker itself is the problem and the raw files stand in.
        raw = compose_model.load_raw(project_dir, files=files or None, env_file=env_file)
        return compose_model.project_from_raw(raw, raw.project_dir, config_error=exc.msg)


def preflight(project_dir: str, files=None, env_file=None, profiles=None, docker: str = "docker",
              options: Options | None = None, deferred_steps=(), gather=gather_host_facts,
              loader=load) -> Result:
    """Load the project, probe the host once, run every check.

    Raises HyHomeError only for bad input (no such directory, not a Compose project); everything
    about the host or the project is a finding.
    """
    options = options or Options()
    if env_file and not options.env_file:
        options = dataclasses.replace(options, env_file=env_file)
    project = loader(project_dir, files=files, env_file=options.env_file, profiles=profiles, docker=docker)
    facts = gather(project, options=options, docker_cli=docker)
    findings = run_checks(project, facts, options)
    return Result(project, facts, findings, build_report(project, findings, deferred_steps),
                  render_table(project, findings, deferred_steps), blocking(findings, deferred_steps))


def cli(argv=None) -> int:
    """``preflight-compose.sh``: table on stdout, JSON report to --json; exit 1 when something blocks,
    2 on bad input (one line on stderr, naming the file), 3 on an internal error (never a traceback)."""
    return compose_model.guarded_cli("preflight", _cli, argv)


def _cli(argv) -> int:
    ap = argparse.ArgumentParser(
        prog="preflight-compose.sh",
        description="Report every missing prerequisite of a Compose project's first boot (read-only).",
        epilog=compose_model.EXIT_CODES_HELP)
    ap.add_argument("project_dir", nargs="?", default=os.environ.get("HYHOME_PROJECT_DIR") or ".",
                    help="the directory holding the root compose file (default: $HYHOME_PROJECT_DIR, else .)")
    ap.add_argument("-f", "--file", action="append", dest="files", help="compose file (repeatable)")
    ap.add_argument("--env-file", help="env file (default: <project>/.env)")
    ap.add_argument("--profile", action="append", dest="profiles", help="compose profile (repeatable)")
    ap.add_argument("--json", dest="json_path", help="write the JSON report to this file")
    ap.add_argument("--docker", default="docker", help="docker CLI (default: docker)")
    ap.add_argument("--min-disk-free-gb", type=float, default=Options.min_disk_free_gb)
    ap.add_argument("--min-memory-available-mb", type=int, default=Options.min_memory_available_mb)
    ap.add_argument("--min-docker-version", default=Options.min_docker_version)
    ap.add_argument("--warn-compose-below", default=Options.warn_compose_below)
    ap.add_argument("--no-ports", action="store_true", help="skip the host port check")
    ap.add_argument("--secrets-registry", help="the secrets role's registry (default: <project>/hyhome-secrets.yml)")
    ap.add_argument("--defer", action="append", default=[], choices=STEPS,
                    help="do not fail on blockers this later step fixes (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the blockers and warnings")
    args = ap.parse_args(argv)
    opts = Options(min_docker_version=args.min_docker_version, warn_compose_below=args.warn_compose_below,
                   min_disk_free_gb=args.min_disk_free_gb, min_memory_available_mb=args.min_memory_available_mb,
                   check_ports=not args.no_ports, env_file=args.env_file,
                   secrets_registry_file=args.secrets_registry)
    res = preflight(args.project_dir, files=args.files, env_file=args.env_file, profiles=args.profiles,
                    docker=args.docker, options=opts, deferred_steps=args.defer)
    if args.json_path:
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

        atomic_write(args.json_path, (json.dumps(res.report, indent=2) + "\n").encode(), 0o644)
    table = render_table(res.project, res.findings, args.defer, problems_only=True) if args.quiet else res.table
    print("\n".join(table))
    if args.json_path:
        print(f"JSON report: {args.json_path}")
    return compose_model.EXIT_FINDINGS if res.blocking else compose_model.EXIT_OK
