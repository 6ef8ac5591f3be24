"""Why is a Compose service down, and what brings it back: the diagnosis behind recover-service.yml.

    diagnose(project, service, containers, secret_files, logs=None, now=None) -> Diagnosis

Pure: ``containers`` are ``docker inspect`` dicts of the project (any order), ``secret_files`` says for
each secret file path whether it exists and holds something, ``logs(container_id) -> str`` gives the
last log lines. The result names the likely cause of the service (and of each unhealthy service it
depends on, dependencies first) and the action that recovers it:

    cause             what it means                                   action
    healthy           running and healthy (or completed, for init)    none
    absent            no container                                    start (compose creates it)
    missing-secret    a secret file it reads is missing or empty      secrets (restore, then recreate)
    oom               the kernel killed it for memory (OOMKilled)     recreate (and raise mem_limit)
    dependency-down   a service it depends on is not ready            (recover that one first) start
    hung              running, its health checks time out             kill (SIGKILL), then start
    failed-healthcheck running, its health checks fail                recreate
    killed            exited 137 (SIGKILL) without OOM                start
    crashed           exited with another non-zero code               recreate
    stopped           exited 0 / 143, a person or `docker stop`       start
    restarting        in a restart loop                               recreate
    paused / created / dead                                           recreate

Findings use the shared vocabulary (findings.py): rule ``recover-<cause>``, never a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.hyhome.bootstrap.plugins.module_utils import compose_up as cu
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import ERROR, INFO, WARNING, Finding

CAUSES = ("healthy", "absent", "missing-secret", "oom", "dependency-down", "hung", "failed-healthcheck",
          "killed", "crashed", "stopped", "restarting", "paused", "created", "dead")
ACTIONS = ("none", "start", "secrets", "recreate", "kill")
ACTION_OF = {
    "healthy": "none", "absent": "start", "missing-secret": "secrets", "oom": "recreate",
    "dependency-down": "start", "hung": "kill", "failed-healthcheck": "recreate", "killed": "start",
    "crashed": "recreate", "stopped": "start", "restarting": "recreate", "paused": "recreate",
    "created": "recreate", "dead": "recreate",
}
# What a health check's output says when Docker gave up waiting for it.
TIMEOUT_MARKERS = ("health check exceeded timeout", "timed out", "timeout")
LOG_LINES = 20


@dataclass
class ServiceState:
    """One service's diagnosis."""

    service: str
    cause: str
    action: str
    message: str                               # one line: the cause in words, with the evidence
    status: str = "absent"                     # running (healthy) / exited (137) / absent ...
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    health_log: list[str] = field(default_factory=list)     # the last checks, "exit N: output"
    log_tail: list[str] = field(default_factory=list)
    down_since: str | None = None              # ISO time the failure began, when the engine says
    memory_limit: int | None = None            # bytes
    missing_secrets: list[str] = field(default_factory=list)
    dependencies_down: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.cause == "healthy"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"healthy": self.healthy}


@dataclass
class Diagnosis:
    service: str
    state: ServiceState
    # Services to recover, dependencies first, the service itself last (empty when it is healthy).
    recover: list[ServiceState]
    findings: list[Finding]

    @property
    def finding(self) -> str:
        """The headline: the service's cause, and the root cause when a dependency is the reason."""
        if self.state.healthy:
            return f"{self.service} is healthy: nothing to recover"
        root = self.recover[0] if self.recover else self.state
        head = f"{self.service}: {self.state.cause}: {self.state.message}"
        if root.service != self.service:
            head += f" -- root cause {root.service}: {root.cause}: {root.message}"
        return head

    def report(self) -> list[str]:
        """What an operator reads: per service to recover, its evidence and the action."""
        lines = []
        for st in self.recover:
            facts = [st.status, f"exit code {st.exit_code}" if st.exit_code else "",
                     "OOM-killed" if st.oom_killed else "", f"{st.restart_count} restarts" if st.restart_count else ""]
            lines.append(f"{st.service}: {st.cause} -> {st.action} [{', '.join(f for f in facts if f)}]")
            lines += [f"  health: {h}" for h in st.health_log[-3:]]
            lines += [f"  log: {ln}" for ln in st.log_tail[-8:]]
        return lines

    def as_dict(self) -> dict:
        return {"service": self.service, "cause": self.state.cause, "action": self.state.action,
                "healthy": self.state.healthy, "finding": self.finding, "report": self.report(),
                "state": self.state.as_dict(),
                "recover": [s.as_dict() for s in self.recover],
                "findings": [f.as_dict() for f in self.findings]}


def _health_lines(info: cu.ContainerInfo, n: int = 5) -> list[str]:
    return [f"exit {code}: {' '.join(out.strip().split())[:300] or '(no output)'}"
            for code, out in info.health_log[-n:]]


def _timed_out(info: cu.ContainerInfo) -> bool:
    """Every recent health check ended without an answer (Docker's timeout, exit -1 / timeout text)."""
    recent = info.health_log[-3:]
    return bool(recent) and all(
        code == -1 or any(m in out.lower() for m in TIMEOUT_MARKERS) for code, out in recent)


def _first_failure(attrs: dict) -> str | None:
    """When the current run of failing health checks began (the engine keeps the last few)."""
    log = ((attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    start = None
    for entry in log:
        start = (start or entry.get("Start")) if int(entry.get("ExitCode", 0)) != 0 else None
    return start


def _is_set(ts: str | None) -> bool:
    return bool(ts) and not str(ts).startswith("0001-01-01")


def missing_secrets(project, service: str, secret_files: dict[str, bool]) -> list[str]:
    """Names of the file secrets ``service`` mounts whose host file is missing or empty."""
    svc = project.services[service]
    out = []
    for ref in svc.secrets:
        secret = project.secrets.get(ref.source)
        if secret is not None and secret.file and not secret_files.get(secret.file, False):
            out.append(ref.source)
    return sorted(set(out))


def _state_of(project, name: str, items: list[dict], secret_files: dict[str, bool], logs) -> ServiceState:
    """The cause for one service from its own containers and files (dependencies not considered)."""
    inits = cu.init_services(project)
    missing = missing_secrets(project, name, secret_files)
    if not items:
        if missing:
            return ServiceState(name, "missing-secret", "secrets",
                                f"no container, and secret file(s) {', '.join(missing)} missing or empty",
                                missing_secrets=missing)
        return ServiceState(name, "absent", "start", "no container (removed, or never created)")
    attrs = items[0]
    for a in items:   # judge the worst container of the service
        if (a.get("State") or {}).get("Status") != "running":
            attrs = a
            break
    info = cu.ContainerInfo.from_inspect(attrs)
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    st = ServiceState(name, "healthy", "none", "", status=info.describe(), exit_code=info.exit_code,
                      oom_killed=bool(state.get("OOMKilled")), restart_count=int(attrs.get("RestartCount") or 0),
                      health_log=_health_lines(info), memory_limit=int(host.get("Memory") or 0) or None,
                      missing_secrets=missing)
    if logs is not None and (info.status != "running" or info.health not in (None, "healthy")):
        try:
            text = logs(info.id) or ""
        except Exception as exc:  # diagnosis must never fail on the logs
            text = f"(could not read logs: {exc})"
        st.log_tail = text.rstrip().splitlines()[-LOG_LINES:]
    finished = state.get("FinishedAt") if _is_set(state.get("FinishedAt")) else None

    def down(cause: str, message: str, since: str | None = None) -> ServiceState:
        st.cause, st.action, st.message = cause, ACTION_OF[cause], message
        st.down_since = since
        return st

    if info.status == "running" and info.health in (None, "healthy", "starting"):
        if info.health == "starting":
            return down("healthy", "running, health check still starting")
        return down("healthy", "running" + (" and healthy" if info.health else " (no health check)"))
    if info.status == "exited" and info.exit_code == 0 and name in inits:
        return down("healthy", "one-shot service completed (exit 0)")
    limit = f" (mem_limit {st.memory_limit // 1048576} MiB)" if st.memory_limit else ""
    if st.oom_killed:
        return down("oom", f"killed by the kernel for lack of memory{limit}, exit code {info.exit_code}: "
                    f"raise mem_limit or find the leak", finished)
    if missing:
        return down("missing-secret", f"secret file(s) {', '.join(missing)} missing or empty: the service "
                    f"cannot start without {'it' if len(missing) == 1 else 'them'}", finished)
    if info.status == "running" and info.health == "unhealthy":
        last = st.health_log[-1] if st.health_log else "no health log"
        if _timed_out(info):
            return down("hung", f"running but not answering: its health checks time out ({last})",
                        _first_failure(attrs))
        return down("failed-healthcheck", f"running but its health check fails ({last})", _first_failure(attrs))
    if info.status == "exited":
        if info.exit_code == 137:
            return down("killed", "exited 137: killed with SIGKILL (not by the OOM killer)", finished)
        if info.exit_code in (0, 143, 130):
            return down("stopped", f"stopped (exit {info.exit_code}): someone or something stopped it", finished)
        return down("crashed", f"exited with code {info.exit_code}", finished)
    if info.status == "restarting":
        return down("restarting", f"in a restart loop ({st.restart_count} restarts, last exit code "
                    f"{info.exit_code})", finished)
    if info.status in ("paused", "created", "dead"):
        return down(info.status, f"container is {info.status}", finished)
    return down("crashed", f"container is {info.status}", finished)


def diagnose(project, service: str, containers: list[dict], secret_files: dict[str, bool],
             logs=None) -> Diagnosis:
    """The cause of ``service``'s state, and the recovery plan (unhealthy dependencies first).

    ``secret_files`` maps host paths of file secrets to "exists and is not empty". An unknown service
    raises HyHomeError naming the known ones."""
    if not isinstance(service, str) or service not in project.services:
        known = ", ".join(sorted(project.services)) or "none"
        raise HyHomeError(f"unknown service {service!r} in project {project.name}: known services are {known}")
    by_service: dict[str, list[dict]] = {}
    for attrs in containers:
        labels = ((attrs.get("Config") or {}).get("Labels")) or {}
        if labels.get(cu.ONEOFF_LABEL, "False").lower() == "true":
            continue
        by_service.setdefault(labels.get(cu.SERVICE_LABEL, ""), []).append(attrs)
    closure = cu.dependency_closure(project, [service])
    states = {n: _state_of(project, n, by_service.get(n, []), secret_files, logs) for n in closure}

    # A service is also down when something it needs is: the likely cause is then that dependency (its
    # own symptom is kept in the message), and it only needs starting once the dependency is back.
    # OOM and a missing secret are the service's own, whatever its dependencies do.
    # A completed one-shot did its job: what it needed then does not matter now.
    order = cu.topo_order(project, closure)
    inits = cu.init_services(project)
    for name in order:
        st = states[name]
        if st.healthy and name in inits:
            continue
        st.dependencies_down = sorted(d for d in (project.services[name].depends_on or {})
                                      if d in states and not states[d].healthy)
        if st.dependencies_down and st.cause not in ("oom", "missing-secret"):
            why = "; ".join(f"{d} is {states[d].cause}" + ("" if states[d].cause == "dependency-down"
                                                           else f" ({states[d].message})")
                            for d in st.dependencies_down)
            own = "" if st.healthy else f" (itself: {st.message})"
            st.cause, st.action, st.message = "dependency-down", ACTION_OF["dependency-down"], why + own
    target = states[service]
    recover = [states[n] for n in order if not states[n].healthy]
    return Diagnosis(service, target, recover, _findings(target, recover))


def _findings(target: ServiceState, recover: list[ServiceState]) -> list[Finding]:
    out = []
    for st in recover:
        hint = {
            "oom": "recreated now; raise mem_limit in the compose file if it happens again",
            "missing-secret": "restored from the history (secrets role), or generated when it has none",
            "hung": "killed (SIGKILL) and started again",
            "dependency-down": "its dependencies are recovered first",
        }.get(st.cause, f"{st.action}")
        out.append(Finding(ERROR if st.service == target.service else WARNING, f"recover-{st.cause}", st.message,
                           service=st.service, subject=", ".join(st.missing_secrets) or None, hint=hint))
    if not recover:
        out.append(Finding(INFO, "recover-healthy", target.message, service=target.service))
    return out


def seconds_between(start: str | None, end: float) -> float | None:
    """Seconds from an engine timestamp (ISO, nanoseconds allowed) to the epoch time ``end``."""
    ts = cu.parse_ts(start) if _is_set(start) else None
    return None if ts is None else round(end - ts, 1)
