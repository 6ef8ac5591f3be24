"""The run, as the CLI understands it: ansible-runner events in, one report out (pure, no I/O).

``Run.feed(event)`` takes each runner event; ``Run.report()`` returns the document that
``report.schema.json`` describes and that both the human summary and ``--json`` render. What the
summary needs (findings, health, URLs, the CA, pending secrets) comes from the documented return
values of the collection's modules (their ``RETURN`` blocks), recognised by module name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SCHEMA_VERSION = 1

# day0's steps, in order (each is a role and a tag of day0.yml).
DAY0_STEPS = ("engine", "preflight", "env", "secrets", "tls", "data_dirs", "validate", "compose", "verify")

# Exit codes (documented in docs/cli.md and the schema).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_BLOCKED = 3
EXIT_USAGE = 4
EXIT_CANCELED = 130

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}
MAX_MESSAGE = 4000   # a module message longer than this is cut (the full text is in the artifacts)


# Roles whose step (day0.yml tag) has another name than the role.
STEP_OF_ROLE = {"docker_engine": "engine"}


def step_of(role: str | None, fallback: str) -> str:
    """The step a task belongs to: its role's short name (``hyhome.bootstrap.tls`` -> ``tls``)."""
    if role:
        name = role.rsplit(".", 1)[-1]
        return STEP_OF_ROLE.get(name, name)
    return fallback


def module_of(event_data: dict) -> str:
    """Short module name of a task (``hyhome.bootstrap.stack_verify`` -> ``stack_verify``)."""
    action = event_data.get("resolved_action") or event_data.get("task_action") or ""
    return str(action).rsplit(".", 1)[-1]


def _text(value, limit: int = MAX_MESSAGE) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = "\n".join(str(v) for v in value)
    text = str(value).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def failure_message(res: dict) -> str:
    """A module's failure message, never a traceback: ``msg``, else the last line of its stderr."""
    msg = _text(res.get("msg"))
    stderr = str(res.get("module_stderr") or res.get("stderr") or "").strip()
    if stderr and (not msg or msg.startswith("MODULE FAILURE")):
        last = [line for line in stderr.splitlines() if line.strip()]
        if last:
            msg = f"{msg}: {last[-1].strip()}" if msg else last[-1].strip()
    return msg or "the task failed without a message"


@dataclass
class Step:
    name: str
    status: str = "not_run"    # not_run, running, ok, changed, skipped, failed, canceled
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    started: float | None = None
    ended: float | None = None
    changes: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        elapsed = None
        if self.started is not None:
            elapsed = round((self.ended or self.started) - self.started, 3)
        return {"name": self.name, "status": self.status, "ok": self.ok, "changed": self.changed,
                "failed": self.failed, "skipped": self.skipped, "elapsed_seconds": elapsed,
                "changes": self.changes}


class Run:
    """Everything one run reported, folded from its events."""

    def __init__(self, command: str, playbook: str, expected_steps=(), check_mode: bool = False,
                 clock=time.monotonic):
        self.command = command
        self.playbook = playbook
        self.check_mode = check_mode
        self.clock = clock
        self.t0 = clock()
        self.steps: dict[str, Step] = {name: Step(name) for name in expected_steps}
        self.current_step: str | None = None
        self.current_task: str | None = None
        self.current_host: str | None = None
        self.hosts: dict[str, dict] = {}
        self.findings: list[dict] = []
        self.health: list[dict] = []
        self.urls: list[dict] = []
        self.ca: dict | None = None
        self.trust: dict | None = None
        self.pending: list[dict] = []
        self.warnings: list[dict] = []
        self.failure: dict | None = None
        self.errors: list[str] = []   # ansible-playbook's own errors (syntax, inventory), outside tasks
        self.canceled = False
        self.play = ""
        self._seen_warnings: set[str] = set()
        self._elapsed: float | None = None

    # ---------------------------------------------------------------- events

    def feed(self, event: dict) -> str | None:
        """Fold one runner event in; returns the name of a step that just finished, if any."""
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play") or "")
        elif kind == "playbook_on_task_start":
            return self._task_start(data)
        elif kind in RESULT_EVENTS:
            self._result(RESULT_EVENTS[kind], data)
        elif kind == "playbook_on_stats":
            return self._stats(data)
        elif kind in ("error", "verbose", "warning"):
            self._message(kind, str(event.get("stdout") or ""))
        return None

    def _step_for(self, role: str | None) -> str:
        """A role that is not a step (a dependency such as ``project``) counts in the step it serves:
        the current one, or the first not yet run (dependencies run before their dependant)."""
        step = step_of(role, self.current_step or self.play or "play")
        if step in self.steps or not self.steps:
            return step
        if self.current_step:
            return self.current_step
        return next((s.name for s in self.steps.values() if s.status == "not_run"), step)

    def _task_start(self, data: dict) -> str | None:
        step = self._step_for(data.get("role"))
        finished = None
        if self.current_step and step != self.current_step:
            finished = self._finish(self.current_step)
        self.current_step = step
        self.current_task = str(data.get("task") or "")
        self.current_host = None
        s = self.steps.setdefault(step, Step(step))
        if s.started is None:
            s.started = self.clock()
        if s.status in ("not_run", "skipped", "ok", "changed"):
            s.status = "running"
        return finished

    def _finish(self, name: str) -> str:
        s = self.steps[name]
        s.ended = self.clock()
        if s.status == "running":
            if s.failed:
                s.status = "failed"
            elif s.changed:
                s.status = "changed"
            elif s.ok:
                s.status = "ok"
            else:
                s.status = "skipped"
        return name

    def _result(self, outcome: str, data: dict) -> None:
        host = str(data.get("host") or "")
        step_name = self._step_for(data.get("role"))
        step = self.steps.setdefault(step_name, Step(step_name))
        res = data.get("res") or {}
        if not isinstance(res, dict):
            res = {}
        self.current_host = host
        task = str(data.get("task") or "")
        if outcome == "failed" and data.get("ignore_errors"):
            outcome = "ok"
        if outcome == "ok":
            step.ok += 1
            if res.get("changed"):
                step.changed += 1
                step.changes.append({"task": task, "host": host, "details": self._details(data, res)})
        elif outcome == "skipped":
            step.skipped += 1
        else:
            step.failed += 1
            if self.failure is None:
                self.failure = {"step": step_name, "task": task, "host": host,
                                "message": failure_message(res) if outcome == "failed"
                                else _text(res.get("msg")) or "host unreachable",
                                "hint": _text(res.get("hint")) or None}
        for warning in res.get("warnings") or []:
            self._warn(step_name, host, str(warning))
        if outcome == "ok":
            self._extract(module_of(data), step_name, host, res)

    def _message(self, kind: str, text: str) -> None:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("ERROR!", "[ERROR]")):
                self.errors.append(_text(line))

    def _warn(self, step: str, host: str, message: str) -> None:
        message = _text(message)
        if message not in self._seen_warnings:
            self._seen_warnings.add(message)
            self.warnings.append({"step": step, "host": host, "message": message})

    def _stats(self, data: dict) -> str | None:
        finished = self._finish(self.current_step) if self.current_step else None
        self.current_step = self.current_task = self.current_host = None
        keys = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
                "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
        for src, dst in keys.items():
            for host, n in (data.get(src) or {}).items():
                self.hosts.setdefault(host, {k: 0 for k in keys.values()})[dst] = int(n)
        return finished

    # ------------------------------------------------------- module results

    @staticmethod
    def _details(data: dict, res: dict) -> list[str]:
        """What changed, in words, for the modules that say it (names and actions, never values)."""
        module = module_of(data)
        if module == "secret_files":
            by_name = {s.get("name"): s.get("action") for s in res.get("secrets") or [] if isinstance(s, dict)}
            return [f"{name}: {by_name.get(name) or 'permissions fixed'}" for name in res.get("changed_secrets") or []]
        if module == "compose_project":
            out = [f"network {n}: created" for n in res.get("networks_created") or []]
            for name, plan in sorted((res.get("plan") or {}).items()):
                if isinstance(plan, dict) and plan.get("action") not in (None, "none"):
                    out.append(f"{name}: {plan['action']} ({'; '.join(plan.get('reasons') or [])})")
            return out
        if module == "tls_certificate":
            return [str(r) for r in res.get("reasons") or []]
        if module == "local_ca" and res.get("created"):
            return ["local CA created"]
        return []

    def _extract(self, module: str, step: str, host: str, res: dict) -> None:
        if module in ("compose_preflight", "compose_validate", "stack_verify"):
            for f in res.get("findings") or []:
                # Health has its own section; accepted exceptions are not for a person.
                if (isinstance(f, dict) and f.get("severity") in ("error", "warning") and not f.get("accepted")
                        and f.get("rule") != "health"):
                    self.findings.append({"step": step, "host": host, **{k: f.get(k) for k in (
                        "rule", "severity", "subject", "service", "message", "hint", "file", "line", "fixed_by")}})
        if module == "stack_verify":
            for f in res.get("findings") or []:
                if isinstance(f, dict) and f.get("rule") == "health":
                    self.health.append({"host": host, "service": f.get("service") or f.get("subject") or "",
                                        "healthy": f.get("severity") != "error",
                                        "message": _text(f.get("message"), 500)})
            for probe in res.get("tls") or []:
                if isinstance(probe, dict) and probe.get("server_name"):
                    port = int(probe.get("port") or 443)
                    name = probe["server_name"]
                    self.urls.append({"url": f"https://{name}/" if port == 443 else f"https://{name}:{port}/",
                                      "server_name": name, "address": probe.get("host"), "port": port,
                                      "verified": bool(probe.get("verified")), "host": host})
        elif module == "local_ca":
            if "trust" in res:
                system = (res.get("trust") or {}).get("system") or {}
                self.trust = {"host": host, "certificate_path": res.get("certificate_path"),
                              "in_system_store": system.get("in_bundle")}
            elif res.get("certificate_path"):
                ca = res.get("ca") or {}
                self.ca = {"certificate_path": res["certificate_path"], "ca_dir": res.get("ca_dir"),
                           "fingerprint_sha256": res.get("fingerprint_sha256"),
                           "not_after": ca.get("not_after"), "expires_soon": ca.get("expires_soon")}
        elif module == "secret_files":
            for p in res.get("provided_pending") or []:
                if isinstance(p, dict):
                    self.pending.append({"kind": "provided_secret", "host": host, "name": p.get("name"),
                                         "path": p.get("path"), "consumers": list(p.get("consumers") or []),
                                         "hint": p.get("hint")})

    # --------------------------------------------------------------- report

    def finish(self, canceled: bool = False) -> None:
        """Close the run: the running step is failed or canceled; the rest were left undone."""
        self.canceled = canceled
        if self.current_step:
            s = self.steps[self.current_step]
            self._finish(self.current_step)
            if canceled and s.status != "failed":
                s.status = "canceled"
        self._elapsed = self.clock() - self.t0

    def changed_total(self) -> int:
        return sum(s.changed for s in self.steps.values())

    def exit_code(self, rc: int | None) -> int:
        if self.canceled:
            return EXIT_CANCELED
        if self.failure and self.failure["step"] == "preflight":
            return EXIT_BLOCKED
        if self.failure or self.errors or (rc not in (0, None)):
            return EXIT_FAILED
        if self.check_mode and self.changed_total():
            return EXIT_CHANGES
        return EXIT_OK

    def status(self, rc: int | None) -> str:
        return {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_CHANGES: "changes", EXIT_BLOCKED: "blocked",
                EXIT_CANCELED: "canceled"}[self.exit_code(rc)]

    def left_undone(self) -> list[str]:
        return [s.name for s in self.steps.values() if s.status in ("not_run", "canceled")]

    def ca_report(self, ca_facts=None) -> dict | None:
        """Where the CA is; ``ca_facts(cert_path)`` adds ``trusted_here`` and ``trust_command``."""
        if not self.ca and not self.trust:
            return None
        cert = (self.trust or {}).get("certificate_path") or (self.ca or {}).get("certificate_path")
        doc = {"certificate_path": cert, "ca_dir": (self.ca or {}).get("ca_dir"),
               "fingerprint_sha256": (self.ca or {}).get("fingerprint_sha256"),
               "not_after": (self.ca or {}).get("not_after"),
               "trusted_here": (self.trust or {}).get("in_system_store"), "trust_command": None}
        if ca_facts and cert:
            facts = ca_facts(cert)
            if facts.get("trusted_here") is None:
                facts = {**facts, "trusted_here": doc["trusted_here"]}
            doc.update(facts)
        return doc

    def report(self, rc: int | None, artifacts: str | None = None, ca_facts=None) -> dict:
        code = self.exit_code(rc)
        failure = self.failure
        if failure and failure["step"] == "preflight" and self.findings:
            # The findings carry the table's rows with their hints: the message keeps its first line.
            failure = {**failure, "message": failure["message"].split("\n", 1)[0]}
        if failure is None and code == EXIT_FAILED:
            failure = {"step": None, "task": None, "host": None,
                       "message": "\n".join(self.errors) or f"ansible-playbook exited with code {rc}",
                       "hint": None}
        totals = {k: sum(h[k] for h in self.hosts.values()) for k in ("ok", "changed", "failed", "unreachable",
                                                                        "skipped")}
        if not self.hosts:
            totals = {"ok": sum(s.ok for s in self.steps.values()), "changed": self.changed_total(),
                      "failed": sum(s.failed for s in self.steps.values()), "unreachable": 0,
                      "skipped": sum(s.skipped for s in self.steps.values())}
        doc = {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "playbook": self.playbook,
            "check_mode": self.check_mode,
            "status": self.status(rc),
            "exit_code": code,
            "ansible_rc": rc,
            "elapsed_seconds": round(self._elapsed if self._elapsed is not None else self.clock() - self.t0, 3),
            "stats": totals,
            "hosts": self.hosts,
            "steps": [s.as_dict() for s in self.steps.values()],
            "findings": self.findings,
            "health": self.health,
            "urls": self.urls,
            "ca": self.ca_report(ca_facts),
            "pending": self.pending,
            "warnings": self.warnings,
            "failure": failure,
            "left_undone": self.left_undone() if self.canceled or failure else [],
            "artifacts": artifacts,
        }
        return doc
