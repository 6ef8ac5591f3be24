"""How a run looks: live progress (rich on a terminal, one line per step otherwise) and the summary."""

from __future__ import annotations

import os
import shlex

from hyhome_cli.report import Run

ICON = {"ok": "ok", "changed": "changed", "skipped": "skipped", "failed": "FAILED", "canceled": "canceled",
        "not_run": "-", "running": "..."}
TRUST_NAME = "hyhome-local-ca"


def _fmt_seconds(value) -> str:
    return "" if value is None else f"{value:.1f}s"


def step_line(step: dict) -> str:
    """The one line a finished step gets in plain mode."""
    state = ICON.get(step["status"], step["status"])
    return (f"[{_fmt_seconds(step['elapsed_seconds']):>7}] {step['name']:<10} {state:<8}"
            f" ok={step['ok']} changed={step['changed']} failed={step['failed']} skipped={step['skipped']}")


class PlainProgress:
    """One line per finished step (output is not a terminal, or --plain)."""

    def __init__(self, run: Run, out):
        self.run = run
        self.out = out
        self.printed: set[str] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def step_done(self, name: str) -> None:
        if name in self.printed:
            return
        self.printed.add(name)
        self.out.write(step_line(self.run.steps[name].as_dict()) + "\n")
        self.out.flush()

    def update(self) -> None:
        pass

    def close(self) -> None:
        """After the run: the line of a step that stopped without the playbook's end (Ctrl-C)."""
        for step in self.run.steps.values():
            if step.status != "not_run":
                self.step_done(step.name)


class RichProgress:
    """A live table on a terminal: every step with its state, the current task and host, counts, time."""

    def __init__(self, run: Run, console):
        from rich.live import Live

        self.run = run
        self.console = console
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=True,
                         get_renderable=self._render)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)
        return False

    def close(self) -> None:
        """What stays on screen after the live display: one line per step that ran."""
        for step in self.run.steps.values():
            if step.status != "not_run":
                self.console.print(step_line(step.as_dict()), markup=False, highlight=False)

    def step_done(self, name: str) -> None:
        pass

    def update(self) -> None:
        self.live.refresh()

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        run = self.run
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for col in ("step", "state", "ok", "changed", "failed", "skipped", "time"):
            table.add_column(col, justify="right" if col in ("ok", "changed", "failed", "skipped", "time") else "left")
        now = run.clock()
        style = {"failed": "red", "changed": "yellow", "ok": "green", "canceled": "red", "running": "cyan"}
        for s in run.steps.values():
            elapsed = None if s.started is None else (s.ended or now) - s.started
            state = Spinner("dots", text=" running") if s.status == "running" else ICON.get(s.status, s.status)
            table.add_row(s.name, state, str(s.ok), str(s.changed), str(s.failed), str(s.skipped),
                          _fmt_seconds(elapsed), style=style.get(s.status))
        grid = Table.grid()
        grid.add_row(table)
        task = run.current_task or ("starting ansible-playbook" if run.current_step is None else "")
        host = f" on {run.current_host}" if run.current_host else ""
        grid.add_row(Text(f"{run.command}  {now - run.t0:.1f}s  {task}{host}"))
        return grid


def ca_trusted_here(cert_path: str | None) -> bool | None:
    """Whether this machine's system store holds the CA (None when unknown: no file, no store)."""
    if not cert_path or not os.path.isfile(cert_path):
        return None
    import shutil

    from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls

    store = tls.detect_system_store(shutil.which)
    try:
        with open(cert_path, "rb") as fh:
            ders = tls.pem_certificates_der(fh.read())
        if store is None or not ders:
            return None
        with open(store.bundle, "rb") as fh:
            return tls.bundle_contains(fh.read(), ders[0])
    except OSError:
        return None


def trust_command(cert_path: str) -> str:
    """The one command that makes another Debian/Ubuntu machine trust the CA (over ssh, from here)."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import tls

    store = tls.SYSTEM_TRUST_STORES[0]
    anchor = store.anchor_path(TRUST_NAME)
    remote = f"sudo tee {anchor} >/dev/null && sudo {' '.join(store.update_cmd)}"
    return f"ssh OTHER-HOST {shlex.quote(remote)} < {shlex.quote(cert_path)}"


def ca_facts(cert_path: str) -> dict:
    """What this machine knows about the CA: trusted here, and the command to trust it elsewhere."""
    return {"trusted_here": ca_trusted_here(cert_path), "trust_command": trust_command(cert_path)}


def summary_lines(report: dict) -> list[str]:
    """The summary people read, as plain text lines (the rich renderer styles the same lines)."""
    lines: list[str] = []
    status = report["status"]
    head = {"ok": "done", "changes": "check mode: changes would be made", "failed": "FAILED",
            "blocked": "BLOCKED by preflight", "canceled": "CANCELED"}[status]
    lines.append(f"hyhome {report['command']}: {head} in {report['elapsed_seconds']:.1f}s "
                 f"(exit {report['exit_code']})")
    for host, h in sorted(report["hosts"].items()):
        lines.append(f"{host} : ok={h['ok']} changed={h['changed']} unreachable={h['unreachable']} "
                     f"failed={h['failed']} skipped={h['skipped']}")
    changed = [s for s in report["steps"] if s["changed"]]
    verb = "would change" if report["check_mode"] else "changed"
    if changed:
        lines.append("")
        lines.append(f"What {verb}:")
        for s in changed:
            lines.append(f"  {s['name']}: {s['changed']} task(s)")
            for c in s["changes"]:
                lines.append(f"    - {c['task']}" + (f" [{c['host']}]" if len(report["hosts"]) > 1 else ""))
                lines.extend(f"        {d}" for d in c["details"])
    elif report["status"] in ("ok", "changes"):
        lines.append("Nothing changed." if not report["check_mode"] else "Nothing would change.")
    if report["health"]:
        lines.append("")
        lines.append("Services:")
        for h in report["health"]:
            mark = "healthy" if h["healthy"] else "NOT HEALTHY"
            lines.append(f"  {h['service']:<20} {mark}" + ("" if h["healthy"] else f": {h['message']}"))
    if report["urls"]:
        lines.append("")
        lines.append("Open:")
        for u in report["urls"]:
            lines.append(f"  {u['url']}" + ("" if u["verified"] else "   (TLS check failed)"))
    ca = report.get("ca")
    if ca:
        lines.append("")
        trusted = {True: "trusted by this host", False: "NOT trusted by this host", None: "trust unknown"}
        lines.append(f"Local CA: {ca['certificate_path']} ({trusted[ca['trusted_here']]})")
        if ca.get("trust_command"):
            lines.append(f"  trust it on another machine: {ca['trust_command']}")
    # What a later step fixes is not for a person, except when preflight stood alone and blocked.
    findings = [f for f in report["findings"] if f["severity"] in ("error", "warning")
                and (not f.get("fixed_by") or (status == "blocked" and f["severity"] == "error"))]
    needs_person = report["pending"] or report["warnings"] or findings
    if needs_person:
        lines.append("")
        lines.append("Needs a person:")
        for p in report["pending"]:
            lines.append(f"  - write the real value of {p['name']} into {p['path']}"
                         + (f" (read by {', '.join(p['consumers'])})" if p["consumers"] else "")
                         + (f": {p['hint']}" if p.get("hint") else ""))
        for f in findings:
            where = f" ({f['file']}:{f['line']})" if f.get("file") and f.get("line") else ""
            lines.append(f"  - {f['severity']}: {f['message'].splitlines()[0] if f['message'] else f['rule']}{where}")
            if f.get("hint"):
                lines.append(f"      fix: {f['hint']}")
        pending_paths = [p["path"] for p in report["pending"] if p.get("path")]
        for w in report["warnings"]:
            if not any(path in w["message"] for path in pending_paths):   # said above already
                lines.append(f"  - warning ({w['step']}): {w['message']}")
    failure = report.get("failure")
    if failure:
        lines.append("")
        where = f"at step {failure['step']}" if failure.get("step") else "before any step"
        task = f", task \"{failure['task']}\"" if failure.get("task") else ""
        host = f" on {failure['host']}" if failure.get("host") else ""
        lines.append(f"Failed {where}{task}{host}:")
        lines.extend(f"  {line}" for line in str(failure["message"]).splitlines())
        if failure.get("hint"):
            lines.append(f"  fix: {failure['hint']}")
    if report["left_undone"]:
        lines.append("")
        lines.append("Left undone: " + ", ".join(report["left_undone"]))
    if report.get("artifacts") and status in ("failed", "blocked", "canceled"):
        lines.append("")
        lines.append(f"Full Ansible output: {os.path.join(report['artifacts'], 'stdout')}")
    return lines


def print_summary(report: dict, out, console=None) -> None:
    lines = summary_lines(report)
    if console is None:
        out.write("\n".join(lines) + "\n")
        out.flush()
        return
    styles = {"FAILED": "bold red", "BLOCKED": "bold red", "CANCELED": "bold red", "done": "bold green",
              "check mode": "bold yellow"}
    first = lines[0]
    style = next((v for k, v in styles.items() if k in first), None)
    console.print(first, style=style, markup=False, highlight=False)
    for line in lines[1:]:
        bold = line.endswith(":") and not line.startswith(" ")
        console.print(line, style="bold" if bold else None, markup=False, highlight=False)


def output_tail(artifact_dir: str | None, lines: int = 5) -> str:
    """The last lines of ansible-playbook's own output (runner's ``stdout`` artifact)."""
    if not artifact_dir:
        return ""
    try:
        with open(os.path.join(artifact_dir, "stdout"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()[-8000:]
    except OSError:
        return ""
    return "\n".join([line.rstrip() for line in text.splitlines() if line.strip()][-lines:])
