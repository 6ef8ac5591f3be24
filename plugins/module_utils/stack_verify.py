"""Running-stack checks after bring-up: readiness, security baseline, TLS at the gateway, memory.

Read-only by construction: it inspects containers, opens TLS connections and reads stats; it never
changes anything. The checks are pure functions over ``docker inspect`` dicts, stats dicts and TLS
probe results, so unit tests feed them fake data; ``collect`` is the only part that talks to Docker.

Accepted exceptions come from the compose model (``x-hyhome.exceptions`` on a service, rule id ->
written reason, the same ids the validate role uses). An accepted finding is still reported, with its
reason; it does not fail the run. Findings use the shared vocabulary of ``findings.py``: the rule
says which check (``health``, ``security-*``, ``tls``, ``memory-ceiling``), ``subject`` the container.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    ERROR,
    INFO,
    SEVERITY_RANK,
    WARNING,
    Finding,
)
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    render_table as render_findings,
)

CHECKS = ("health", "security", "tls", "memory")

RULE_NO_NEW_PRIVS = "security-no-new-privileges"
RULE_CAP_DROP = "security-cap-drop-all"
RULE_NON_ROOT = "security-non-root"
RULE_PRIVILEGED = "security-privileged"
RULE_HOST_NS = "security-host-namespace"
RULE_MEM_LIMIT = "security-memory-limit"
RULE_HEALTH = "health"
RULE_TLS = "tls"
RULE_MEMORY = "memory-ceiling"


# --------------------------------------------------------------------------------------------
# Exceptions declared in the compose model
# --------------------------------------------------------------------------------------------

def declared_exceptions(project) -> dict[str, dict[str, str]]:
    """service -> {rule id: reason} from ``x-hyhome.exceptions``; rules may be written with or
    without the ``security-`` prefix; an exception without a written reason is not applied."""
    out: dict[str, dict[str, str]] = {}
    if project is None:
        return out
    for svc in project.services.values():
        decl = cu.hyhome_ext(svc).get("exceptions") or {}
        if not isinstance(decl, dict):
            continue
        for rule, reason in decl.items():
            if isinstance(reason, str) and reason.strip():
                key = str(rule)
                out.setdefault(svc.name, {})[key] = reason.strip()
                if not key.startswith("security-"):
                    out[svc.name]["security-" + key] = reason.strip()
    return out


def apply_exceptions(findings: list[Finding], exceptions: dict[str, dict[str, str]]) -> list[Finding]:
    """``findings`` with those a service's exception covers accepted (with the written reason)."""
    return [f.accept(exceptions[f.service][f.rule]) if f.service and f.rule in (exceptions.get(f.service) or {})
            else f for f in findings]


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------

def check_health(project, containers: dict[str, list[cu.ContainerInfo]], services=None) -> list[Finding]:
    """Every service ready: long-running healthy (running without a healthcheck), init exited 0."""
    names = sorted(services or (set(project.services) if project else set(containers)))
    if project is None:
        from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Project

        project = Project(name="", working_dir="", files=[])
    r = cu.evaluate(project, names, containers)
    out = []
    for name, why in sorted({**r.pending, **r.failed}.items()):
        items = r.containers.get(name) or []
        detail = cu.explain(name, why, items).split("\n", 1)
        extra = ("\n" + detail[1]) if len(detail) > 1 else ""
        out.append(Finding(ERROR, RULE_HEALTH, f"not ready: {why}{extra}", service=name,
                           subject=", ".join(c.name for c in items) or None))
    for name, why in sorted(r.ready.items()):
        out.append(Finding(INFO, RULE_HEALTH, why, service=name,
                           subject=", ".join(c.name for c in r.containers.get(name) or []) or None))
    return out


# --------------------------------------------------------------------------------------------
# Security baseline from docker inspect
# --------------------------------------------------------------------------------------------

def _user_is_root(user: str | None) -> bool:
    """Config.User as docker reports it: empty (image default: root unless the image set one,
    which inspect shows), 'root', '0', '0:0', 'name:group'."""
    if not user:
        return True
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def security_summary(inspects: list[dict], findings: list[Finding]) -> Finding:
    """One info line: how many containers meet the whole baseline (no error finding at all)."""
    failing = {f.subject for f in findings if f.rule.startswith("security-") and f.severity == ERROR}
    names = [cu.ContainerInfo.from_inspect(a).name for a in inspects]
    ok = [n for n in names if n not in failing]
    return Finding(INFO, "security-baseline",
                   f"{len(ok)} of {len(names)} containers meet the whole baseline (no-new-privileges, cap_drop ALL, "
                   "non-root, no host namespaces, not privileged, memory limit)")


def check_security(attrs: dict) -> list[Finding]:
    """Baseline of one container from ``docker inspect``: no-new-privileges, cap_drop ALL,
    non-root user, no host pid/net/ipc, not privileged, a memory limit."""
    info = cu.ContainerInfo.from_inspect(attrs)
    hc = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    svc, name = info.service or None, info.name
    out = []

    def add(rule, message, severity=ERROR):
        out.append(Finding(severity, rule, message, service=svc, subject=name))

    opts = [o.replace("=", ":").strip().lower() for o in hc.get("SecurityOpt") or []]
    if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts):
        add(RULE_NO_NEW_PRIVS, f"SecurityOpt {hc.get('SecurityOpt') or []} lacks no-new-privileges:true")
    drops = [c.upper().removeprefix("CAP_") for c in hc.get("CapDrop") or []]
    if "ALL" not in drops:
        add(RULE_CAP_DROP, f"CapDrop {hc.get('CapDrop') or []} does not contain ALL")
    adds = hc.get("CapAdd") or []
    if adds:
        add(RULE_CAP_DROP, f"capabilities added back: {', '.join(sorted(adds))}", INFO)
    user = config.get("User") or ""
    if _user_is_root(user):
        add(RULE_NON_ROOT, f"runs as root (Config.User {user!r})" if user else "runs as root (no user set)")
    if hc.get("Privileged"):
        add(RULE_PRIVILEGED, "privileged container")
    for key, what in (("PidMode", "pid"), ("NetworkMode", "network"), ("IpcMode", "ipc")):
        if (hc.get(key) or "") == "host":
            add(RULE_HOST_NS, f"shares the host {what} namespace ({key}=host)")
    if not hc.get("Memory"):
        add(RULE_MEM_LIMIT, "no memory limit (HostConfig.Memory is 0)")
    return out


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def memory_usage(stats: dict) -> int | None:
    """Working-set usage from a stats snapshot the way ``docker stats`` computes it: usage minus
    page cache (cgroup v1 ``total_inactive_file``/``cache``, v2 ``inactive_file``)."""
    mem = (stats or {}).get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    s = mem.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        if key in s and s[key] < usage:
            return int(usage - s[key])
    if "cache" in s and s["cache"] < usage:
        return int(usage - s["cache"])
    return int(usage)


@dataclass
class MemoryReport:
    host_total: int
    limit_sum: int
    usage_sum: int
    ceiling_percent: float
    unlimited: list[str] = field(default_factory=list)
    per_container: dict[str, dict] = field(default_factory=dict)

    @property
    def usage_percent(self) -> float:
        return 100.0 * self.usage_sum / self.host_total if self.host_total else 0.0

    @property
    def limit_percent(self) -> float:
        return 100.0 * self.limit_sum / self.host_total if self.host_total else 0.0


def check_memory(inspects: list[dict], stats: dict[str, dict], host_total: int,
                 ceiling_percent: float = 20.0) -> tuple[MemoryReport, list[Finding]]:
    """Sum of memory limits and of current usage of running containers vs host memory. Usage
    above the ceiling is an error (the brief: infra < 20% of host memory at idle); limits summing
    above the ceiling is a warning (a burst could take the host past it); above the host, an error."""
    rep = MemoryReport(host_total=int(host_total or 0), limit_sum=0, usage_sum=0, ceiling_percent=ceiling_percent)
    out: list[Finding] = []
    for attrs in inspects:
        info = cu.ContainerInfo.from_inspect(attrs)
        if not info.running:
            continue
        limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
        usage = memory_usage(stats.get(info.id) or {})
        rep.per_container[info.name] = {"service": info.service, "limit": limit, "usage": usage}
        if limit:
            rep.limit_sum += limit
        else:
            rep.unlimited.append(info.name)
        rep.usage_sum += usage or 0
    if not rep.host_total:
        out.append(Finding(WARNING, RULE_MEMORY, "host memory unknown: cannot compare"))
        return rep, out
    mib = 1024 * 1024
    summary = (f"{len(rep.per_container)} running containers use {rep.usage_sum / mib:.0f} MiB "
               f"({rep.usage_percent:.1f}% of {rep.host_total / mib:.0f} MiB), limits sum to "
               f"{rep.limit_sum / mib:.0f} MiB ({rep.limit_percent:.1f}%); ceiling {ceiling_percent:g}%")
    if rep.usage_percent >= ceiling_percent:
        out.append(Finding(ERROR, RULE_MEMORY, "usage above the ceiling: " + summary))
    elif rep.limit_sum > rep.host_total:
        out.append(Finding(ERROR, RULE_MEMORY, "memory limits exceed host memory: " + summary))
    elif rep.limit_percent >= ceiling_percent:
        out.append(Finding(WARNING, RULE_MEMORY, "limits could exceed the ceiling: " + summary))
    else:
        out.append(Finding(INFO, RULE_MEMORY, summary))
    if rep.unlimited:
        out.append(Finding(WARNING, RULE_MEMORY,
                           "no memory limit, not counted in the limit sum: " + ", ".join(sorted(rep.unlimited))))
    return rep, out


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------

@dataclass
class TlsProbe:
    host: str
    port: int
    server_name: str
    verified: bool = False
    error: str | None = None            # why verification failed (chain or hostname)
    hostname_ok: bool | None = None
    chain_ok: bool | None = None
    version: str | None = None
    cipher: str | None = None
    not_after: str | None = None
    legacy: dict[str, str] = field(default_factory=dict)   # TLSv1 / TLSv1.1 -> refused|accepted|untestable
    tls12: str | None = None             # accepted | refused


HOSTNAME_MISMATCH = 62   # X509_V_ERR_HOSTNAME_MISMATCH


def _handshake(ctx: ssl.SSLContext, host: str, port: int, server_name: str, timeout: float):
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            ctx.wrap_socket(sock, server_hostname=server_name) as tls:
        return tls.version(), (tls.cipher() or [None])[0], tls.getpeercert()


def _version_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A context offering exactly one protocol version, without verification (used only to test
    which versions the server accepts). Legacy versions need OpenSSL security level 0 to be offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():   # offering a deprecated version is the point of this probe
        warnings.simplefilter("ignore", DeprecationWarning)
        if version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def probe_tls(host: str, port: int, server_name: str, ca_file: str, timeout: float = 5.0) -> TlsProbe:
    """Connect trusting only ``ca_file``: chain and hostname verification, negotiated version;
    then which protocol versions the server accepts (TLS 1.0/1.1 must be refused)."""
    p = TlsProbe(host=host, port=port, server_name=server_name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # check_hostname + CERT_REQUIRED by default
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise HyHomeError(f"cannot load the CA certificate {ca_file}: {exc}") from exc
    try:
        p.version, p.cipher, cert = _handshake(ctx, host, port, server_name, timeout)
        p.verified = p.chain_ok = p.hostname_ok = True
        p.not_after = (cert or {}).get("notAfter")
    except ssl.SSLCertVerificationError as exc:
        p.error = exc.verify_message or str(exc)
        if exc.verify_code == HOSTNAME_MISMATCH:
            p.chain_ok, p.hostname_ok = True, False
        else:
            p.chain_ok = False
    except (OSError, ssl.SSLError) as exc:
        p.error = f"TLS connection to {host}:{port} failed: {exc}"
    for label, version in (("TLSv1", ssl.TLSVersion.TLSv1), ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
                           ("TLSv1.2", ssl.TLSVersion.TLSv1_2)):
        try:
            vctx = _version_context(version)
        except (ValueError, ssl.SSLError):
            p.legacy[label] = "untestable"
            continue
        try:
            _handshake(vctx, host, port, server_name, timeout)
            outcome = "accepted"
        except ssl.SSLError as exc:
            text = str(exc).lower()
            # The local OpenSSL refusing to offer the version is not the server refusing it.
            outcome = "untestable" if "no protocols available" in text or "no ciphers" in text else "refused"
        except OSError:
            outcome = "refused"
        if label == "TLSv1.2":
            p.tls12 = outcome
        else:
            p.legacy[label] = outcome
    return p


def check_tls(probes: list[TlsProbe]) -> list[Finding]:
    out = []
    for p in probes:
        where = f"{p.host}:{p.port} ({p.server_name})"
        if p.verified:
            out.append(Finding(INFO, RULE_TLS,
                               f"{where}: {p.version} {p.cipher}, chain to the local CA and hostname verified"
                               + (f", valid until {p.not_after}" if p.not_after else "")))
        elif p.chain_ok is False:
            out.append(Finding(ERROR, RULE_TLS, f"{where}: certificate does not chain to the local CA: {p.error}"))
        elif p.hostname_ok is False:
            out.append(Finding(ERROR, RULE_TLS, f"{where}: certificate does not match {p.server_name}: {p.error}"))
        else:
            out.append(Finding(ERROR, RULE_TLS, f"{where}: {p.error}"))
        if p.version in ("TLSv1", "TLSv1.1"):
            out.append(Finding(ERROR, RULE_TLS, f"{where}: negotiated {p.version}"))
        refused = sorted(label for label, outcome in p.legacy.items() if outcome == "refused")
        if refused:
            out.append(Finding(INFO, RULE_TLS, f"{where}: refuses {', '.join(refused)}"))
        for label, outcome in sorted(p.legacy.items()):
            if outcome == "accepted":
                out.append(Finding(ERROR, RULE_TLS, f"{where}: accepts {label} (TLS 1.2+ only required)"))
            elif outcome == "untestable":
                out.append(Finding(INFO, RULE_TLS,
                                   f"{where}: {label} untestable: the local OpenSSL will not offer it"))
        if p.tls12 == "refused" and p.version != "TLSv1.3" and p.verified:
            out.append(Finding(WARNING, RULE_TLS, f"{where}: TLS 1.2 refused (TLS 1.3 only)"))
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Report order: what fails first (errors, warnings, info), accepted ones last, then by rule and service."""
    return sorted(findings, key=lambda f: (f.accepted is not None, SEVERITY_RANK[f.severity], f.rule,
                                           f.service or "", f.subject or ""))


def render_table(findings: list[Finding]) -> str:
    """The human table (the shared layout), errors first; accepted findings show their reason."""
    return "\n".join(render_findings(sort_findings(findings)))


# --------------------------------------------------------------------------------------------
# Collection from the engine (the only Docker-touching part)
# --------------------------------------------------------------------------------------------

def engine_client(project_name: str = ""):
    """A Docker SDK client that answered a ping; HyHomeError (``not_running``) when there is none."""
    try:
        import docker
    except ImportError as exc:
        raise HyHomeError("the Python 'docker' SDK is missing on the managed host: pip install docker") from exc
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure here means "no engine reachable"
        raise HyHomeError(f"cannot reach the Docker engine: {exc} (is dockerd running?)", not_running=True,
                          project=project_name) from exc
    return client


def collect(client, project_name: str, want_stats: bool = True) -> tuple[list[dict], dict[str, dict], int]:
    """(inspect dicts of the project's containers, stats by id for running ones, host memory)."""
    items = client.api.containers(all=True, filters={"label": f"{cu.PROJECT_LABEL}={project_name}"})
    inspects = []
    for item in items:
        with contextlib.suppress(Exception):   # removed between list and inspect
            inspects.append(client.api.inspect_container(item["Id"]))
    inspects = [a for a in inspects if ((a.get("Config") or {}).get("Labels") or {}).get(cu.ONEOFF_LABEL, "False")
                .lower() != "true"]
    stats = {}
    if want_stats:
        running = [a for a in inspects if (a.get("State") or {}).get("Status") == "running"]
        # On the engine's own host the kernel's cgroup counters answer at once; elsewhere (a container
        # driving the host's engine) ask the engine, whose stats call waits for its own sampling.
        slow = []
        for a in running:
            value = cgroup_stats(a["Id"], (a.get("State") or {}).get("Pid") or 0)
            if value is None:
                slow.append(a["Id"])
            else:
                stats[a["Id"]] = value
        with ThreadPoolExecutor(max_workers=8) as pool:
            for cid, value in zip(slow, pool.map(lambda c: _stats(client, c), slow), strict=True):
                stats[cid] = value
    host_total = int(client.info().get("MemTotal") or 0)
    return inspects, stats, host_total


def cgroup_stats(container_id: str, pid: int, proc: str = "/proc", sysfs: str = "/sys/fs/cgroup") -> dict | None:
    """A stats-shaped dict (``memory_stats.usage`` + ``memory_stats.stats``) read from the memory
    cgroup of the container's main process, cgroup v1 or v2; None when that cgroup is not visible
    here or does not belong to ``container_id``."""
    if not pid:
        return None
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if container_id not in path:
            continue
        if "memory" in controllers.split(","):        # v1
            base, usage_file, stat_file = f"{sysfs}/memory{path}", "memory.usage_in_bytes", "memory.stat"
        elif controllers == "":                        # v2 unified
            base, usage_file, stat_file = f"{sysfs}{path}", "memory.current", "memory.stat"
        else:
            continue
        try:
            with open(f"{base}/{usage_file}", encoding="ascii") as fh:
                usage = int(fh.read().strip())
            with open(f"{base}/{stat_file}", encoding="ascii") as fh:
                counters = {k: int(v) for k, v in (ln.split() for ln in fh if ln.strip())}
        except (OSError, ValueError):
            return None
        return {"memory_stats": {"usage": usage, "stats": counters}}
    return None


def _stats(client, container_id: str) -> dict:
    """One stats snapshot; ``one_shot`` (API 1.41+) skips the second sample the engine otherwise
    waits a second for. Older SDKs lack the argument."""
    try:
        try:
            return client.api.stats(container_id, stream=False, one_shot=True)
        except TypeError:
            return client.api.stats(container_id, stream=False)
    except Exception:  # a container stopping right now: no usage to count
        return {}


def wait_settled(project, fetch, timeout: float, clock=time.monotonic, sleep=time.sleep):
    """Poll (read-only) until every service is ready or ``timeout`` passes; returns the last
    snapshot. Used so a verify right after bring-up does not race a start_period."""
    deadline = clock() + timeout
    while True:
        snap = fetch()
        r = cu.evaluate(project, sorted(project.services), snap)
        if r.ok or r.failed or clock() >= deadline:
            return snap
        sleep(min(1.0, max(0.0, deadline - clock())))
