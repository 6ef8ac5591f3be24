"""Bring a Compose project up and report truthfully: planning, content fingerprints, health.

Pure core (no AnsibleModule, no Docker needed): everything that decides takes container state as
``docker inspect`` dicts, so unit tests inject it. The small ``Engine`` adapter at the bottom is the
only part that talks to Docker (SDK for state, ``docker compose`` CLI for actions).

Why not just ``docker compose up -d --wait``:

* Compose's ``com.docker.compose.config-hash`` ignores the *content* of mounted secret, certificate
  and config files, so a rotated secret recreates nothing. We keep a per-service SHA-256 over that
  content (plus the config hash) in ``<project>/.hyhome/state.json`` and recreate exactly the
  services whose fingerprint changed.
* ``up -d`` restarts one-shot init containers that already exited 0 (a re-run is never a no-op),
  and ``up --no-deps`` labels containers with a config hash computed without their dependencies.
  We hand ``docker compose create`` only the services that need creating or recreating, then start
  containers ourselves in dependency order, each once its ``depends_on`` conditions hold.
* ``--wait`` gives up as soon as a container is unhealthy and fails on init containers that
  exited 0; our poller keeps trying until the timeout and accepts init services that exited 0.
* ``changed`` comes from container ids and ``State.StartedAt`` before/after, not from Compose's
  progress output (which has no stable format).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import secrets
import stat
import subprocess
import time
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs, project_context
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
CREATED_BY_LABEL = "org.hyhome.bootstrap.created-by"   # on the external networks we create

STATE_FILE = "state.json"
STATE_KEY = "compose"

# Bounds for hashing read-only bind-mounted directories: beyond them, files are represented by
# (path, size, mtime) instead of content, so a huge tree never makes a run slow.
MAX_DIR_FILES = 2000
MAX_CONTENT_BYTES = 64 * 1024 * 1024

# Upper bounds for one `docker compose` command (seconds). Readiness is waited for by our poller
# (wait_timeout), not by compose, so these only catch a hung CLI; on expiry the whole process
# group (the CLI and its compose plugin) is stopped.
COMMAND_TIMEOUTS = {"build": 3600.0, "pull": 3600.0, "config": 120.0}
ACTION_TIMEOUT = 1800.0


# --------------------------------------------------------------------------------------------
# Container state
# --------------------------------------------------------------------------------------------

def parse_ts(value: str | None) -> float | None:
    """Docker RFC 3339 timestamp (nanoseconds, 'Z') -> epoch seconds; None for empty/zero values."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Trim fractional seconds to microseconds: datetime does not take nanoseconds.
    if "." in text:
        head, rest = text.split(".", 1)
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        text = f"{head}.{(frac + '000000')[:6]}{rest[i:]}"
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class ContainerInfo:
    """The parts of ``docker inspect`` this module decides on."""

    id: str
    name: str
    service: str
    status: str                    # created | running | restarting | exited | paused | dead
    exit_code: int
    started_at: str
    created: str
    health: str | None             # None (no healthcheck) | starting | healthy | unhealthy
    health_log: tuple = ()         # ((exit_code, output), ...) oldest first
    config_hash: str | None = None
    image_id: str | None = None
    restart_policy: str = "no"
    oneoff: bool = False

    @classmethod
    def from_inspect(cls, attrs: dict) -> ContainerInfo:
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        state = attrs.get("State") or {}
        health = state.get("Health") or None
        log = ()
        if health:
            log = tuple((int(e.get("ExitCode", -1)), str(e.get("Output", ""))) for e in (health.get("Log") or []))
        policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        return cls(
            id=attrs.get("Id", ""),
            name=(attrs.get("Name") or "").lstrip("/"),
            service=labels.get(SERVICE_LABEL, ""),
            status=state.get("Status", "unknown"),
            exit_code=int(state.get("ExitCode") or 0),
            started_at=state.get("StartedAt") or "",
            created=attrs.get("Created") or "",
            health=(health or {}).get("Status") if health else None,
            health_log=log,
            config_hash=labels.get(CONFIG_HASH_LABEL),
            image_id=attrs.get("Image"),
            restart_policy=policy,
            oneoff=labels.get(ONEOFF_LABEL, "False").lower() == "true",
        )

    @property
    def running(self) -> bool:
        return self.status == "running"

    def describe(self) -> str:
        if self.status == "running":
            return f"running ({self.health})" if self.health else "running"
        if self.status == "exited":
            return f"exited ({self.exit_code})"
        return self.status


def by_service(containers) -> dict[str, list[ContainerInfo]]:
    """Group containers (``ContainerInfo`` or inspect dicts) by compose service; one-off ``run``
    containers are ignored: they are not part of the project's desired state."""
    out: dict[str, list[ContainerInfo]] = {}
    for c in containers:
        info = c if isinstance(c, ContainerInfo) else ContainerInfo.from_inspect(c)
        if info.oneoff or not info.service:
            continue
        out.setdefault(info.service, []).append(info)
    for items in out.values():
        items.sort(key=lambda i: i.name)
    return out


# --------------------------------------------------------------------------------------------
# Service roles and ordering
# --------------------------------------------------------------------------------------------

def hyhome_ext(service) -> dict:
    """The service's ``x-hyhome`` extension block (empty when absent)."""
    ext = getattr(service, "extensions", None) or {}
    block = ext.get("x-hyhome", ext.get("hyhome")) if isinstance(ext, dict) else None
    return block if isinstance(block, dict) else {}


def init_services(project) -> set[str]:
    """One-shot services: others depend on them with ``service_completed_successfully``, or they
    declare ``restart: "no"`` explicitly, or ``x-hyhome: {kind: init}`` (or ``init: true``)."""
    out = set()
    for svc in project.services.values():
        for dep, cond in (svc.depends_on or {}).items():
            if (cond or {}).get("condition") == "service_completed_successfully":
                out.add(dep)
        if hyhome_ext(svc).get("init") is True or hyhome_ext(svc).get("kind") == "init":
            out.add(svc.name)
        if svc.restart in ("no", '"no"'):
            out.add(svc.name)
    return out & set(project.services)


def dependency_closure(project, names) -> set[str]:
    """``names`` plus everything they depend on, transitively (unknown names raise)."""
    unknown = sorted(set(names) - set(project.services))
    if unknown:
        raise HyHomeError(
            f"unknown service(s) {', '.join(unknown)} in project {project.name}: "
            f"known services are {', '.join(sorted(project.services)) or 'none'} "
            "(a service behind an inactive profile is not known: add its profile)"
        )
    out: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in out or name not in project.services:
            continue
        out.add(name)
        stack.extend((project.services[name].depends_on or {}).keys())
        nm = project.services[name].network_mode or ""
        if nm.startswith("service:"):
            stack.append(nm.split(":", 1)[1])
    return out


def topo_order(project, names) -> list[str]:
    """Dependency order (dependencies first), ties broken by name for determinism."""
    names = set(names)
    deps = {n: {d for d in (project.services[n].depends_on or {}) if d in names} for n in names}
    for n in names:
        nm = project.services[n].network_mode or ""
        if nm.startswith("service:") and nm.split(":", 1)[1] in names:
            deps[n].add(nm.split(":", 1)[1])
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(names):
        ready = sorted(n for n in names - done if deps[n] <= done)
        if not ready:   # a cycle: compose itself rejects it; keep going deterministically
            ready = sorted(names - done)[:1]
        for n in ready:
            order.append(n)
            done.add(n)
    return order


# --------------------------------------------------------------------------------------------
# Content fingerprints
# --------------------------------------------------------------------------------------------

@dataclass
class Fingerprint:
    """Per-service fingerprint: SHA-256 over the compose config hash and the content of every
    host file the service mounts. ``inputs`` maps host path -> digest (never content)."""

    service: str
    value: str
    inputs: dict[str, str] = field(default_factory=dict)
    newest_mtime: float = 0.0
    truncated: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.value[:12]


def service_inputs(project, service) -> list[tuple[str, str]]:
    """(kind, host path) of what the service mounts from the host and whose content matters:
    file secrets, bind-mounted files, read-only bind-mounted directories. Writable bind-mounted
    directories are data, not configuration, and are left out (their content changes all the
    time). ``x-hyhome: {fingerprint_exclude: [...]}`` drops paths (host or container side)."""
    excluded = set(hyhome_ext(service).get("fingerprint_exclude") or [])
    out: dict[str, str] = {}
    for ref in service.secrets or []:
        secret = project.secrets.get(ref.source)
        if (secret is not None and secret.file and not secret.external
                and secret.file not in excluded and ref.target not in excluded):
            out.setdefault(secret.file, "secret")
    for m in service.mounts or []:
        if m.type not in ("bind", "volume") or not m.host_path:
            continue
        if m.host_path in excluded or m.target in excluded:
            continue
        try:
            st = os.stat(m.host_path)
        except OSError:
            out.setdefault(m.host_path, "file")   # digested as "missing"
            continue
        if stat.S_ISDIR(st.st_mode):
            if m.read_only:
                out.setdefault(m.host_path, "dir")
        elif stat.S_ISREG(st.st_mode):
            out.setdefault(m.host_path, "file")
        # sockets, devices, fifos: never read (a fifo would block)
    return sorted((kind, path) for path, kind in out.items())


def _hash_file(path: str, h, budget: list) -> bool:
    """Feed the file's content into ``h`` within the byte budget; False when over budget."""
    st = os.stat(path)
    if st.st_size > budget[0]:
        h.update(f"meta:{st.st_size}:{st.st_mtime_ns}".encode())
        return False
    budget[0] -= st.st_size
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return True


def digest_path(path: str, kind: str, budget: list | None = None,
                max_files: int = MAX_DIR_FILES, salt: bytes = b"") -> tuple[str, float, bool]:
    """(sha256 hex, newest mtime, truncated) of a file or a directory tree (sorted walk, symlinks
    not followed, only regular files read). Missing and unreadable paths get stable markers so a
    file appearing or disappearing changes the digest. ``salt`` (per project, kept in the state
    file) keeps a stored digest of a short secret from matching any precomputed table."""
    budget = budget if budget is not None else [MAX_CONTENT_BYTES]
    h = hashlib.sha256(salt)
    newest = 0.0
    truncated = False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", 0.0, False
    except OSError as exc:
        return f"unreadable:{exc.errno}", 0.0, False
    try:
        if stat.S_ISDIR(st.st_mode):
            count = 0
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, path)
                    lst = os.lstat(full)
                    newest = max(newest, lst.st_mtime)
                    h.update(b"\0" + rel.encode() + b"\0")
                    if stat.S_ISLNK(lst.st_mode):
                        h.update(b"link:" + os.readlink(full).encode())
                        continue
                    if not stat.S_ISREG(lst.st_mode):
                        continue
                    count += 1
                    if count > max_files:
                        h.update(f"meta:{lst.st_size}:{lst.st_mtime_ns}".encode())
                        truncated = True
                        continue
                    if not _hash_file(full, h, budget):
                        truncated = True
        elif stat.S_ISREG(st.st_mode):
            newest = st.st_mtime
            if not _hash_file(path, h, budget):
                truncated = True
        else:
            return "not-a-file", 0.0, False
    except PermissionError as exc:
        return f"unreadable:{exc.errno}", newest, truncated
    return h.hexdigest(), newest, truncated


def fingerprint_service(project, service, config_hash: str | None, salt: bytes = b"") -> Fingerprint:
    """Fingerprint one service (see ``Fingerprint``)."""
    h = hashlib.sha256()
    h.update(f"config:{config_hash or ''}\n".encode())
    budget = [MAX_CONTENT_BYTES]
    fp = Fingerprint(service=service.name, value="")
    for kind, path in service_inputs(project, service):
        digest, mtime, truncated = digest_path(path, kind, budget, salt=salt)
        fp.inputs[path] = digest
        fp.newest_mtime = max(fp.newest_mtime, mtime)
        if truncated:
            fp.truncated.append(path)
        h.update(f"{kind}:{path}:{digest}\n".encode())
    fp.value = h.hexdigest()
    return fp


def short_digest(value: str | None) -> str | None:
    """A display form of a digest for diffs and results: 12 hex chars of a re-hash, so the stored
    digest itself never appears in output."""
    if not value:
        return value
    if len(value) != 64:
        return value   # markers such as "missing"
    return hashlib.sha256(b"hyhome-display:" + value.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Fingerprint state kept by the project
# --------------------------------------------------------------------------------------------

def state_path(project_dir: str) -> str:
    return os.path.join(project_dir, project_context.STATE_DIR, STATE_FILE)


def read_state(project_dir: str) -> dict:
    """The whole state document ({} when absent). A corrupt file is an error, not a reset:
    silently dropping it would hide rotated secrets."""
    path = state_path(project_dir)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HyHomeError(f"cannot read {path}: {exc}; fix or delete it (the next run then records "
                          "fresh fingerprints and recreates services whose mounts changed since they started)") from exc
    if not isinstance(doc, dict):
        raise HyHomeError(f"{path} does not hold a JSON object; fix or delete it")
    return doc


def state_salt(doc: dict, project_name: str) -> str:
    """The project's digest salt from the state document, or a new random one."""
    salt = ((doc.get(STATE_KEY) or {}).get(project_name) or {}).get("salt")
    return salt if isinstance(salt, str) and salt else secrets.token_hex(16)


def recorded_fingerprints(doc: dict, project_name: str) -> dict[str, dict]:
    return ((doc.get(STATE_KEY) or {}).get(project_name) or {}).get("services") or {}


def updated_state(doc: dict, project_name: str, fingerprints: dict[str, Fingerprint],
                  remove: set[str] = frozenset(), salt: str | None = None) -> dict:
    """A new state document with these services' fingerprints recorded (others kept)."""
    new = json.loads(json.dumps(doc))
    proj = new.setdefault(STATE_KEY, {}).setdefault(project_name, {})
    if salt:
        proj["salt"] = salt
    services = proj.setdefault("services", {})
    for name in remove:
        services.pop(name, None)
    for name, fp in fingerprints.items():
        services[name] = {"fingerprint": fp.value, "inputs": dict(sorted(fp.inputs.items()))}
    new["version"] = 1
    return new


def write_state(project_dir: str, doc: dict) -> None:
    """Atomic 0600 write of the state document, in a 0700 ``.hyhome`` directory."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.fileops import atomic_write

    try:
        project_context.ensure_state_dir(project_dir)
        atomic_write(state_path(project_dir), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                     mode=0o600)
    except (OSError, HyHomeError) as exc:
        raise HyHomeError(f"cannot write the fingerprint state {state_path(project_dir)}: "
                          f"{getattr(exc, 'strerror', None) or exc} "
                          "(the containers are up; without the state a later rotation is detected by file "
                          "times only)") from exc


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------

@dataclass
class ServicePlan:
    name: str
    action: str = "none"            # none | create | start | recreate | restart | stop | remove
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"action": self.action, "reasons": list(self.reasons)}


@dataclass
class Plan:
    state: str
    services: dict[str, ServicePlan] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)      # container names

    def with_action(self, *actions) -> list[str]:
        return [n for n, p in self.services.items() if p.action in actions]

    @property
    def has_changes(self) -> bool:
        return bool(self.with_action("create", "start", "recreate", "restart", "stop", "remove") or self.orphans)

    def as_dict(self) -> dict:
        return {n: p.as_dict() for n, p in sorted(self.services.items())}


def _changed_inputs(recorded: dict, fp: Fingerprint) -> list[str]:
    old = recorded.get("inputs") or {}
    paths = sorted(set(old) | set(fp.inputs))
    return [p for p in paths if old.get(p) != fp.inputs.get(p)]


def plan_present(project, targets, containers: dict[str, list[ContainerInfo]], expected_hashes: dict[str, str],
                 fingerprints: dict[str, Fingerprint], recorded: dict[str, dict],
                 image_ids: dict[str, str | None] | None = None, force: set[str] = frozenset(),
                 restart: bool = False) -> Plan:
    """Decide, per target service, create / start / recreate / restart / none, with reasons.

    ``recorded`` is the fingerprint state from the last successful run; without a record for a
    service, a mounted file modified after the container started counts as changed.
    """
    image_ids = image_ids or {}
    inits = init_services(project)
    plan = Plan(state="restarted" if restart else "present")
    recreated: set[str] = set()
    for name in topo_order(project, targets):
        svc = project.services[name]
        sp = ServicePlan(name)
        plan.services[name] = sp
        current = containers.get(name) or []
        if not current:
            sp.action = "create"
            sp.reasons.append("no container")
            continue
        reasons = []
        if name in force:
            reasons.append("recreate requested")
        want_hash = expected_hashes.get(name)
        if want_hash and any(c.config_hash != want_hash for c in current):
            reasons.append("compose configuration changed")
        want_image = image_ids.get(name)
        if want_image and any(c.image_id and c.image_id != want_image for c in current):
            reasons.append("image changed")
        fp = fingerprints.get(name)
        rec = recorded.get(name)
        if fp is not None and fp.inputs:
            if rec and rec.get("fingerprint"):
                changed = _changed_inputs(rec, fp)
                if changed:
                    reasons.append("mounted content changed: " + ", ".join(changed))
            else:
                started = max((parse_ts(c.started_at) or parse_ts(c.created) or 0.0) for c in current)
                if started and fp.newest_mtime > started:
                    reasons.append("a mounted file was modified after the container started (no recorded fingerprint)")
        for dep in sorted(recreated):
            nm = svc.network_mode or ""
            if nm == f"service:{dep}":
                reasons.append(f"shares the network namespace of recreated service {dep}")
            elif ((svc.depends_on or {}).get(dep) or {}).get("restart") is True:
                reasons.append(f"depends on recreated service {dep} with restart: true")
        if reasons:
            sp.action = "recreate"
            sp.reasons.extend(reasons)
            recreated.add(name)
            continue
        not_running = [c for c in current if not c.running]
        if not not_running:
            if restart and name not in inits:
                sp.action = "restart"
                sp.reasons.append("restart requested")
            continue
        one_shot = name in inits
        for c in not_running:
            if one_shot and c.status == "exited" and c.exit_code == 0:
                continue   # completed: running it again is not a no-op
            if one_shot and c.status == "exited":
                sp.reasons.append(f"one-shot {c.name} exited {c.exit_code}: run it again")
            else:
                sp.reasons.append(f"{c.name} is {c.describe()}")
        if sp.reasons:
            sp.action = "start"
    return plan


def plan_stop(project, targets, containers) -> Plan:
    plan = Plan(state="stopped")
    for name in sorted(targets):
        sp = ServicePlan(name)
        running = [c.name for c in containers.get(name) or [] if c.status in ("running", "restarting", "paused")]
        if running:
            sp.action = "stop"
            sp.reasons.append("running: " + ", ".join(running))
        plan.services[name] = sp
    return plan


def plan_absent(project, targets, containers) -> Plan:
    plan = Plan(state="absent")
    for name in sorted(set(targets) | (set(containers) if set(targets) == set(project.services) else set())):
        sp = ServicePlan(name)
        existing = [c.name for c in containers.get(name) or []]
        if existing:
            sp.action = "remove"
            sp.reasons.append("exists: " + ", ".join(existing))
        plan.services[name] = sp
    return plan


def find_orphans(project, containers) -> list[str]:
    """Containers of this compose project whose service is not in the (profile-filtered) model."""
    return sorted(c.name for svc, items in containers.items() if svc not in project.services for c in items)


# --------------------------------------------------------------------------------------------
# Change detection
# --------------------------------------------------------------------------------------------

def detect_changes(before: dict[str, list[ContainerInfo]],
                   after: dict[str, list[ContainerInfo]]) -> dict[str, list[str]]:
    """Per service, what happened between two snapshots: created, recreated, started, stopped,
    removed. Based on container ids, status and ``State.StartedAt`` only."""
    out: dict[str, list[str]] = {}
    for name in sorted(set(before) | set(after)):
        b = {c.id: c for c in before.get(name) or []}
        a = {c.id: c for c in after.get(name) or []}
        actions: list[str] = []
        new = [i for i in a if i not in b]
        gone = [i for i in b if i not in a]
        if new and gone:
            actions.append("recreated")
        elif new:
            actions.append("created")
        elif gone:
            actions.append("removed")
        for cid in set(a) & set(b):
            old, cur = b[cid], a[cid]
            if cur.started_at != old.started_at and cur.started_at:
                what = "started"
            elif old.running and not cur.running:
                what = "stopped"
            else:
                continue
            if what not in actions:
                actions.append(what)
        if actions:
            out[name] = actions
    return out


# --------------------------------------------------------------------------------------------
# Health evaluation and waiting
# --------------------------------------------------------------------------------------------

@dataclass
class Readiness:
    ready: dict[str, str] = field(default_factory=dict)        # service -> why ready
    pending: dict[str, str] = field(default_factory=dict)      # service -> what we wait for
    failed: dict[str, str] = field(default_factory=dict)       # service -> definitive failure
    containers: dict[str, list[ContainerInfo]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.pending or bool(self.failed)

    @property
    def ok(self) -> bool:
        return not self.pending and not self.failed


def evaluate(project, services, containers: dict[str, list[ContainerInfo]],
             started_ok: set[str] = frozenset()) -> Readiness:
    """Readiness of ``services``: long-running ones healthy (running when they have no
    healthcheck), one-shot ones exited 0. Unhealthy is *pending*, not failed: a slow service may
    still turn healthy before the timeout. Definitive failures: a one-shot that exited non-zero,
    a container that exited with no restart policy to bring it back, a dead container.
    Services in ``started_ok`` (``depends_on: condition: service_started``) are ready once running."""
    inits = init_services(project)
    r = Readiness(containers={n: containers.get(n) or [] for n in services})
    for name in sorted(services):
        items = containers.get(name) or []
        if not items:
            r.pending[name] = "no container"
            continue
        svc = project.services.get(name)
        explicit_no = svc is not None and svc.restart in ("no", '"no"')
        problems_pending, problems_failed = [], []
        for c in items:
            if c.status == "running":
                if c.health in (None, "healthy") or name in started_ok:
                    continue
                problems_pending.append(f"{c.name} is {c.health}")
            elif c.status == "exited":
                one_shot = name in inits or (explicit_no and c.restart_policy in ("", "no"))
                if one_shot and c.exit_code == 0:
                    continue
                if one_shot or c.restart_policy in ("", "no") or (
                        c.restart_policy == "on-failure" and c.exit_code == 0):
                    problems_failed.append(f"{c.name} exited with code {c.exit_code}")
                else:
                    problems_pending.append(
                        f"{c.name} exited with code {c.exit_code} (restart policy {c.restart_policy})")
            elif c.status == "dead":
                problems_failed.append(f"{c.name} is dead")
            elif c.status == "restarting":
                problems_pending.append(f"{c.name} is restarting (last exit code {c.exit_code})")
            else:
                problems_pending.append(f"{c.name} is {c.status}")
        if problems_failed:
            r.failed[name] = "; ".join(problems_failed + problems_pending)
        elif problems_pending:
            r.pending[name] = "; ".join(problems_pending)
        else:
            r.ready[name] = "completed" if all(c.status == "exited" for c in items) else "ready"
    return r


def explain(name: str, why: str, containers: list[ContainerInfo], logs=None, health_entries: int = 5) -> str:
    """A failure paragraph naming the service, its last health-check outputs and log lines."""
    lines = [f"service '{name}': {why}"]
    for c in containers:
        if c.health_log:
            lines.append(f"  last health checks of {c.name}:")
            for code, output in c.health_log[-health_entries:]:
                text = " ".join(output.strip().split()) or "(no output)"
                lines.append(f"    exit {code}: {text[:300]}")
        if logs is not None:
            try:
                text = logs(c.id)
            except Exception as exc:  # diagnostics must never hide the real failure
                text = f"(could not read logs: {exc})"
            text = text.rstrip()
            lines.append(f"  last log lines of {c.name}:" + ("" if text else " (none)"))
            lines.extend("    " + ln for ln in text.splitlines())
    return "\n".join(lines)


def wait_ready(project, services, fetch, timeout: float, logs=None, clock=time.monotonic,
               sleep=time.sleep, interval: float = 0.5, started_ok: set[str] = frozenset()) -> Readiness:
    """Poll ``fetch() -> {service: [ContainerInfo]}`` until every service is ready; raise
    HyHomeError naming each failed or still-pending service (with health log and log tail) on a
    definitive failure or at the timeout."""
    deadline = clock() + timeout
    while True:
        r = evaluate(project, services, fetch(), started_ok)
        if r.ok:
            return r
        if r.failed or clock() >= deadline:
            parts = []
            for name, why in sorted(r.failed.items()):
                parts.append(explain(name, why, r.containers.get(name) or [], logs))
            if not r.failed:
                for name, why in sorted(r.pending.items()):
                    parts.append(explain(name, f"not ready after {timeout:g}s: {why}",
                                         r.containers.get(name) or [], logs))
            head = ("services failed: " if r.failed else f"timed out after {timeout:g}s waiting for: ")
            names = sorted(r.failed) if r.failed else sorted(r.pending)
            raise HyHomeError(head + ", ".join(names) + "\n" + "\n".join(parts),
                              failed=sorted(r.failed), pending=sorted(r.pending))
        sleep(min(interval, max(0.0, deadline - clock())))


# --------------------------------------------------------------------------------------------
# Summaries for results and diff mode
# --------------------------------------------------------------------------------------------

def summarize(containers: dict[str, list[ContainerInfo]], services) -> dict[str, dict]:
    out = {}
    for name in sorted(services):
        items = containers.get(name) or []
        out[name] = {
            "status": ", ".join(c.describe() for c in items) or "absent",
            "containers": [{"name": c.name, "id": c.id[:12], "started_at": c.started_at} for c in items],
        }
    return out


def diff_summary(services, containers, recorded: dict, fingerprints: dict[str, Fingerprint] | None,
                 plan: Plan | None = None) -> dict[str, dict]:
    """Per-service before/after summary for diff mode: status, compose config hash, short
    fingerprint, and (after) the planned action. Never file content or raw digests."""
    out = {}
    for name in sorted(services):
        items = containers.get(name) or []
        entry = {"status": ", ".join(c.describe() for c in items) or "absent",
                 "config_hash": (items[0].config_hash or "")[:12] if items else None}
        if fingerprints is None:
            rec = recorded.get(name) or {}
            entry["fingerprint"] = short_digest(rec.get("fingerprint"))
        else:
            fp = fingerprints.get(name)
            entry["fingerprint"] = short_digest(fp.value) if fp else None
        if plan is not None and name in plan.services:
            entry["action"] = plan.services[name].action
        out[name] = entry
    return out


# --------------------------------------------------------------------------------------------
# Orchestration (engine injected: the real ``Engine`` or a fake in unit tests)
# --------------------------------------------------------------------------------------------

@dataclass
class Options:
    state: str = "present"              # present | stopped | restarted | absent
    services: list[str] = field(default_factory=list)
    pull: str = "missing"               # missing | always | never
    build: str = "missing"              # never | missing | always
    remove_orphans: bool = False
    remove_volumes: bool = False
    wait: bool = True
    wait_timeout: float = 300.0
    recreate: list[str] = field(default_factory=list)
    fingerprints: bool = True
    create_networks: bool = True
    check_mode: bool = False
    diff: bool = False


def image_name(project, name: str) -> str | None:
    svc = project.services[name]
    if svc.image:
        return svc.image
    if svc.build:
        return f"{project.name}-{name}"   # Compose v2's default name for a built image
    return None


def external_networks(project, targets) -> list[str]:
    """Engine-side names of the ``external: true`` networks the target services attach to."""
    out = set()
    for name in targets:
        svc = project.services[name]
        if svc.network_mode:
            continue   # host, none, service:x, container:x: no network of the project
        for key in svc.networks or ["default"]:
            net = project.networks.get(key)
            if net is not None and net.external:
                out.add(net.name)
    return sorted(out)


def missing_networks(engine, project, targets, opts: Options) -> list[str]:
    """External networks the targets need that the engine does not have. Compose refuses to start
    without them; with ``create_networks`` the caller creates them, otherwise this fails saying how."""
    wanted = external_networks(project, targets)
    if not wanted:
        return []
    have = engine.network_names()
    missing = [n for n in wanted if n not in have]
    if missing and not opts.create_networks:
        raise HyHomeError(
            "external network(s) " + ", ".join(missing) + " do not exist and Compose will not create them: "
            + "; ".join(f"docker network create {n}" for n in missing)
            + " (or set create_networks / compose_create_networks to true)")
    return missing


def _prepare_images(engine, project, targets, opts: Options, plan_only: bool) -> tuple[list[str], list[str]]:
    """Decide (and unless ``plan_only`` run) builds, then pulls; returns (built, pulled) services.

    Builds come first: services that share an image another service builds (``pull_policy: never``
    next to a ``build:``) must not be pulled. Pulls go through ``docker compose pull
    --ignore-buildable``, which also honours each service's own ``pull_policy: never``.
    """
    built_images = {image_name(project, n) for n in project.services if project.services[n].build}
    to_build, to_pull = [], []
    for name in sorted(targets):
        svc = project.services[name]
        img = image_name(project, name)
        present = engine.image_id(img) is not None if img else True
        if svc.build:
            if opts.build == "always" or (opts.build == "missing" and not present):
                to_build.append(name)
        elif svc.image and opts.pull != "never" and (opts.pull == "always" or not present):
            if img in built_images and opts.build != "never":
                continue   # produced by a build in this project
            to_pull.append(name)
    if not plan_only:
        if to_build:
            engine.run(["build", *to_build])
        if to_pull:
            engine.run(["pull", "--ignore-buildable", *to_pull])
    return to_build, to_pull


def _enrich(engine, project, services, exc: HyHomeError) -> HyHomeError:
    """Add per-service explanations (health log, log tail) to a failed Compose call."""
    try:
        r = evaluate(project, services, engine.containers())
    except Exception:  # keep the original error
        return exc
    bad = dict(r.failed)
    bad.update({k: v for k, v in r.pending.items() if "unhealthy" in v or "exited" in v})
    if not bad:
        return exc
    parts = [explain(n, why, r.containers.get(n) or [], engine.logs) for n, why in sorted(bad.items())]
    return HyHomeError(exc.msg + "\n" + "\n".join(parts), **exc.details)


def recreate_ignored(project, names) -> list[str]:
    """Names asked to be recreated that are not services of the active project (sorted).

    Reported, not fatal: the list often comes from another step (the secrets role's consumers of a
    rotated secret), and may name a service of another profile or one removed since."""
    return sorted(set(names) - set(project.services))


def apply(engine, project, opts: Options) -> dict:
    """Bring ``project`` to ``opts.state`` through ``engine``; returns the module result.

    Raises HyHomeError (with ``details['result']`` holding what is known so far) on failure.
    """
    if opts.state not in ("present", "stopped", "restarted", "absent"):
        raise HyHomeError(f"unknown state {opts.state!r}")
    all_services = set(project.services)
    selected = set(opts.services) if opts.services else set(all_services)
    ignored = recreate_ignored(project, opts.recreate)
    targets = dependency_closure(project, selected) if opts.state in ("present", "restarted") else (
        dependency_closure(project, selected) & selected)
    state_doc = read_state(project.working_dir)
    recorded = recorded_fingerprints(state_doc, project.name)
    salt = state_salt(state_doc, project.name)
    before = engine.containers()
    result: dict = {"changed": False, "state": opts.state, "project": project.name, "commands": [],
                    "orphans": [], "images_built": [], "images_pulled": [], "recreate_ignored": ignored,
                    "networks_created": []}
    fingerprints: dict[str, Fingerprint] = {}
    to_create: list[str] = []

    if opts.state in ("present", "restarted"):
        to_create = missing_networks(engine, project, targets, opts)
        result["networks_created"] = list(to_create) if opts.check_mode else []
        # Compose's per-service config hashes depend on the project alone: kept with its context.
        expected = project_context.memo(
            project, f"config-hash {project.name}", engine.config_hashes,
            valid=lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())))
        built, pulled = _prepare_images(engine, project, targets, opts, plan_only=opts.check_mode)
        result["images_built"], result["images_pulled"] = built, pulled
        image_ids = {n: engine.image_id(image_name(project, n)) for n in targets if image_name(project, n)}
        if opts.fingerprints:
            fingerprints = {n: fingerprint_service(project, project.services[n], expected.get(n), salt.encode())
                            for n in targets}
        plan = plan_present(project, targets, before, expected, fingerprints, recorded, image_ids,
                            force=set(opts.recreate) & targets, restart=opts.state == "restarted")
        for name in built:
            if name in plan.services and plan.services[name].action == "none" and opts.check_mode:
                plan.services[name].reasons.append("image would be built; the container is recreated if it changes")
        if opts.remove_orphans:
            plan.orphans = find_orphans(project, before)
    elif opts.state == "stopped":
        plan = plan_stop(project, targets, before)
    else:
        plan = plan_absent(project, targets, before)
        if opts.remove_orphans or not opts.services:
            plan.orphans = find_orphans(project, before)

    result["plan"] = plan.as_dict()
    result["orphans"] = list(plan.orphans)
    result["fingerprints"] = {n: fp.short for n, fp in sorted(fingerprints.items())}
    truncated = sorted({p for fp in fingerprints.values() for p in fp.truncated})
    if truncated:
        result["fingerprint_truncated"] = truncated
    networks_before = engine.networks() if opts.state == "absent" and not opts.services else []

    def finish(after, new_recorded):
        actions = detect_changes(before, after)
        result["actions"] = actions
        result["services"] = summarize(after, sorted(targets))
        result["commands"] = [list(c) for c in getattr(engine, "commands", [])]
        result["changed"] = bool(actions) or bool(result["networks_created"])
        if opts.diff:
            result["diff"] = {"before": diff_summary(targets, before, recorded, None),
                              "after": diff_summary(targets, after, new_recorded, fingerprints or None,
                                                    plan if opts.check_mode else None)}
            _diff_networks(result["diff"], project, targets, result["networks_created"])
        return result

    if opts.check_mode:
        result["changed"] = plan.has_changes or bool(networks_before) or bool(result["networks_created"])
        result["actions"] = {n: [p.action] for n, p in plan.services.items() if p.action != "none"}
        result["services"] = summarize(before, sorted(targets))
        if opts.diff:
            result["diff"] = {"before": diff_summary(targets, before, recorded, None),
                              "after": diff_summary(targets, before, recorded, fingerprints or None, plan)}
            _diff_networks(result["diff"], project, targets, result["networks_created"])
        return result

    try:
        if opts.state in ("present", "restarted"):
            for net in to_create:
                engine.create_network(net)
                result["networks_created"].append(net)
            _apply_present(engine, project, plan, opts, before)
            new_doc = updated_state(state_doc, project.name, fingerprints, salt=salt)
            if opts.fingerprints and new_doc != state_doc:
                write_state(project.working_dir, new_doc)
            new_recorded = recorded_fingerprints(new_doc, project.name)
            if opts.wait:
                wait_ready(project, sorted(targets), engine.containers, opts.wait_timeout, logs=engine.logs)
        elif opts.state == "stopped":
            stop = plan.with_action("stop")
            if stop:
                engine.run(["stop", *stop])
            new_recorded = recorded
        else:
            if opts.services:
                rm = plan.with_action("remove")
                if rm:
                    engine.run(["rm", "--stop", "--force", *(["--volumes"] if opts.remove_volumes else []), *rm])
            elif plan.has_changes or networks_before:
                engine.run(["down", *(["--volumes"] if opts.remove_volumes else []), "--remove-orphans"])
            if opts.services:
                new_doc = updated_state(state_doc, project.name, {}, remove=set(plan.with_action("remove")))
            else:
                new_doc = json.loads(json.dumps(state_doc))
                (new_doc.get(STATE_KEY) or {}).pop(project.name, None)
            if new_doc != state_doc:
                write_state(project.working_dir, new_doc)
            new_recorded = recorded_fingerprints(new_doc, project.name)
    except HyHomeError as exc:
        with contextlib.suppress(Exception):   # the original failure matters more
            finish(engine.containers(), recorded)
        exc.details["result"] = result
        raise
    finish(engine.containers(), new_recorded)
    if opts.state == "absent" and networks_before and not opts.services:
        result["changed"] = True
    return result


# Diff key for the external networks: not a valid service name, so it cannot clash with one.
NETWORKS_DIFF_KEY = "external networks"


def _diff_networks(diff: dict, project, targets, created: list[str]) -> None:
    """Add the external networks the targets use to a diff: absent before when created."""
    names = external_networks(project, targets)
    if names:
        diff["before"][NETWORKS_DIFF_KEY] = {n: "absent" if n in created else "present" for n in names}
        diff["after"][NETWORKS_DIFF_KEY] = {n: "present" for n in names}


def _apply_present(engine, project, plan: Plan, opts: Options, before) -> None:
    """Execute a present/restarted plan.

    ``docker compose create`` (never ``up``) makes the containers: ``up`` would start one-shot init
    dependencies that already exited 0 again, and ``up --no-deps`` labels containers with a config
    hash computed without their dependencies (the next plain ``up`` would recreate them). Starting
    is then done here, in dependency order, each service after its dependencies met their
    ``depends_on`` condition.
    """
    pull = ["--pull", "never" if opts.pull == "never" else "missing"]
    orphans = set(plan.orphans)
    for items in before.values():
        for c in items:
            if c.name in orphans:
                engine.remove_container(c.id)
    restart = plan.with_action("restart")
    if restart:
        engine.run(["restart", "--no-deps", *restart])
    create = [n for n in topo_order(project, plan.services) if plan.services[n].action == "create"]
    recreate = [n for n in topo_order(project, plan.services) if plan.services[n].action == "recreate"]
    try:
        if create:
            engine.run(["create", "--no-recreate", "--no-build", *pull, *create])
        if recreate:
            engine.run(["create", "--force-recreate", "--no-build", *pull, *recreate])
    except HyHomeError as exc:
        raise _enrich(engine, project, create + recreate, exc) from None
    to_start = [n for n in topo_order(project, plan.services)
                if plan.services[n].action in ("create", "start", "recreate")]
    for name in to_start:
        deps = {d: (c or {}).get("condition", "service_started")
                for d, c in (project.services[name].depends_on or {}).items() if d in plan.services}
        if deps:
            wait_ready(project, sorted(deps), engine.containers, opts.wait_timeout, logs=engine.logs,
                       started_ok={d for d, cond in deps.items() if cond == "service_started"})
        for c in engine.containers().get(name) or []:
            if c.status == "running":
                continue
            if c.status == "exited" and c.exit_code == 0 and name in init_services(project) \
                    and plan.services[name].action == "start":
                continue
            try:
                engine.start_container(c.id)
            except HyHomeError as exc:
                raise HyHomeError(f"service '{name}' ({c.name}) does not start: {exc.msg}") from None


# --------------------------------------------------------------------------------------------
# Engine adapter (the only part that touches Docker)
# --------------------------------------------------------------------------------------------

class Engine:
    """Docker SDK for state, ``docker compose`` CLI for actions."""

    def __init__(self, project_dir: str, project_name: str, files=None, profiles=None,
                 docker: str = "docker", env: dict | None = None, env_file: str | None = None):
        try:
            import docker as docker_sdk  # optional dependency, checked here
        except ImportError as exc:
            raise HyHomeError("the Python 'docker' SDK is missing on the managed host: pip install docker") from exc
        try:
            self.client = docker_sdk.from_env()
            self.client.ping()
        except Exception as exc:  # any failure here means "no engine reachable"
            raise HyHomeError(f"cannot reach the Docker engine: {exc} "
                              "(is dockerd running, is DOCKER_HOST right?)") from exc
        self._errors = docker_sdk.errors
        self.project_dir = project_dir
        self.project_name = project_name
        self.base = [docker, "compose", "--project-directory", project_dir, "-p", project_name]
        for f in files or []:
            self.base += ["-f", f]
        if env_file:
            self.base += ["--env-file", env_file]
        for p in profiles or []:
            self.base += ["--profile", p]
        # The loader builds the model without COMPOSE_FILE/COMPOSE_PROFILES: so must we, or the
        # actions would act on a different project than the one planned.
        self.env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "COMPOSE_PROFILES")}
        self.env.update(env or {})
        self.commands: list[list[str]] = []
        self._image_ids: dict[str, str | None] = {}

    def containers(self) -> dict[str, list[ContainerInfo]]:
        items = self.client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={self.project_name}"})
        infos = []
        for item in items:
            try:
                infos.append(ContainerInfo.from_inspect(self.client.api.inspect_container(item["Id"])))
            except self._errors.NotFound:
                continue   # removed between list and inspect
        return by_service(infos)

    def networks(self) -> list[str]:
        found = self.client.api.networks(filters={"label": f"{PROJECT_LABEL}={self.project_name}"})
        return sorted(n["Name"] for n in found)

    def network_names(self) -> set[str]:
        """Names of every network on the engine."""
        return {n["Name"] for n in self.client.api.networks()}

    def create_network(self, name: str) -> None:
        """Create an external network the project declares (a plain bridge, labelled by us)."""
        self.commands.append(["docker", "network", "create", name])
        try:
            self.client.api.create_network(name, driver="bridge", labels={CREATED_BY_LABEL: "compose_project"})
        except self._errors.APIError as exc:
            raise HyHomeError(f"the engine cannot create the external network {name}: "
                              f"{exc.explanation or exc}") from None

    def image_id(self, name: str) -> str | None:
        # Asked twice per service (build/pull decision, then recreate check); any compose command may
        # build or pull, so run() forgets what was seen.
        if name not in self._image_ids:
            try:
                self._image_ids[name] = self.client.api.inspect_image(name)["Id"]
            except (self._errors.ImageNotFound, self._errors.APIError):
                self._image_ids[name] = None
        return self._image_ids[name]

    def logs(self, container_id: str, tail: int = 20) -> str:
        raw = self.client.api.logs(container_id, stdout=True, stderr=True, tail=tail, timestamps=False)
        return raw.decode("utf-8", "replace")

    def config_hashes(self) -> dict[str, str]:
        out = self.run(["config", "--hash", "*"], record=False).stdout
        hashes = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                hashes[parts[0]] = parts[1]
        return hashes

    def start_container(self, container_id: str) -> None:
        self.commands.append(["docker", "start", container_id[:12]])
        try:
            self.client.api.start(container_id)
        except self._errors.APIError as exc:
            raise HyHomeError(f"the engine cannot start container {container_id[:12]}: "
                              f"{exc.explanation or exc}") from None

    def remove_container(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except self._errors.NotFound:
            pass
        except self._errors.APIError as exc:
            raise HyHomeError(f"the engine cannot remove container {container_id[:12]}: "
                              f"{exc.explanation or exc}") from None

    def run(self, args: list[str], record: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        self._image_ids.clear()
        argv = self.base + args
        if timeout is None:
            timeout = COMMAND_TIMEOUTS.get(args[0], ACTION_TIMEOUT)
        if record:
            self.commands.append(argv)
        try:
            proc = procs.run(argv, env=self.env, cwd=self.project_dir, timeout=timeout)
        except FileNotFoundError as exc:
            raise HyHomeError(f"{argv[0]} not found: install Docker Engine with the Compose v2 plugin") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            raise HyHomeError(f"'{' '.join(argv[1:])}' failed (exit {proc.returncode}):\n{tail}",
                              rc=proc.returncode, argv=argv)
        return proc
