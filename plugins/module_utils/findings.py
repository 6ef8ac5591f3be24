"""One findings vocabulary for preflight, validate and verify: the finding, its severity, the report.

    Finding(severity, rule, message, service=None, subject=None, file=None, line=None, hint="",
            accepted=None, fixed_by=None)
    summarize(findings) -> {"error": n, "warning": n, "info": n, "accepted": n}
    render_table(findings, project_dir=None, deferred_steps=()) -> list[str]
    counts_text(summary) -> "2 error(s), 1 warning(s), 0 info, 1 accepted exception(s)"

Severities are ``error`` (stops the run, unless a written exception accepts it), ``warning`` and
``info`` (what was checked and found fine, or worth knowing). A finding never carries a secret
value: names, paths and line numbers only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    severity: str                  # error | warning | info
    rule: str                      # rule or check id: secret-undeclared, project.secrets, health, ...
    message: str                   # what is wrong (or what was found), with the evidence
    service: str | None = None     # the compose service concerned
    subject: str | None = None     # what else it is about: a secret, a path, a port, a variable, a container
    file: str | None = None        # absolute path of the file to fix, when known
    line: int | None = None        # 1-based line in ``file``, when known
    hint: str = ""                 # how to fix it
    accepted: str | None = None    # the written reason of a declared exception; then it does not count
    fixed_by: str | None = None    # the bootstrap step (role) that fixes it, when one does

    def __post_init__(self):
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {self.severity!r} (one of {', '.join(SEVERITIES)})")

    @property
    def blocking(self) -> bool:
        """An error no written exception accepts."""
        return self.severity == ERROR and not self.accepted

    @property
    def where(self) -> str | None:
        """``file:line`` (or ``file``) as written in the finding, None when no file is known."""
        if not self.file:
            return None
        return f"{self.file}:{self.line}" if self.line else self.file

    def accept(self, reason: str) -> Finding:
        """This finding, accepted with the written ``reason``."""
        return dataclasses.replace(self, accepted=reason)

    def as_dict(self, project_dir: str | None = None) -> dict:
        """Plain data for JSON; ``file`` relative to ``project_dir`` when it lies inside it."""
        d = dataclasses.asdict(self)
        if project_dir and self.file:
            d["file"] = relative(self.file, project_dir)
        return d


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` when inside it (how people read a project), else as given."""
    rel = os.path.relpath(path, root)
    return path if rel == ".." or rel.startswith("../") else rel


def summarize(findings) -> dict:
    """Counts per severity, accepted findings apart (they count in ``accepted`` only)."""
    counts = {s: 0 for s in SEVERITIES}
    accepted = 0
    for f in findings:
        if f.accepted:
            accepted += 1
        else:
            counts[f.severity] += 1
    return {**counts, "accepted": accepted}


def counts_text(summary: dict) -> str:
    return (f"{summary['error']} error(s), {summary['warning']} warning(s), {summary['info']} info, "
            f"{summary['accepted']} accepted exception(s)")


def _as_row(f, project_dir: str | None) -> dict:
    return f if isinstance(f, dict) else f.as_dict(project_dir)


def render_table(findings, project_dir: str | None = None, deferred_steps=()) -> list[str]:
    """The human table, one row per finding in the given order, its fix (or accepted reason) below.

    Columns: SEVERITY (``accepted`` when an exception accepts it), RULE, SUBJECT (the service, else
    the subject), WHERE (``file:line``; left out when no finding has a file) and the message's first
    line. A fix that a step in ``deferred_steps`` will apply says so. ``findings`` are ``Finding``
    objects or their ``as_dict()``.
    """
    rows = [_as_row(f, project_dir) for f in findings]
    deferred = set(deferred_steps or ())
    with_where = any(r.get("file") for r in rows)
    table = [("SEVERITY", "RULE", "SUBJECT", "WHERE", "MESSAGE")]
    notes = []
    for r in rows:
        where = "-"
        if r.get("file"):
            where = f"{r['file']}:{r['line']}" if r.get("line") else r["file"]
        subject = r.get("service") or r.get("subject") or "-"
        severity = "accepted" if r.get("accepted") else r["severity"]
        table.append((severity, r["rule"], subject, where, str(r["message"]).split("\n", 1)[0]))
        if r.get("accepted"):
            notes.append(f"accepted: {r['accepted']}")
        elif r.get("hint"):
            later = r.get("fixed_by")
            suffix = f" [left to the later {later} step]" if r["severity"] == ERROR and later in deferred else ""
            notes.append(f"fix: {r['hint']}{suffix}")
        else:
            notes.append("")
    columns = [0, 1, 2, 3] if with_where else [0, 1, 2]
    widths = {i: max(len(row[i]) for row in table) for i in columns}
    widths[2] = min(widths[2], 40)
    indent = " " * (sum(widths.values()) + 2 * len(columns))
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(row[c].ljust(widths[c]) for c in columns) + "  " + row[4])
        if i and notes[i - 1]:
            lines.append(indent + notes[i - 1])
    return lines if rows else []
