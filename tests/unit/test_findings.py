"""The shared findings vocabulary: one Finding, one severity set, counts and the table."""

from __future__ import annotations

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils.findings import (
    SEVERITIES,
    Finding,
    counts_text,
    relative,
    render_table,
    summarize,
)


def test_severities_are_one_vocabulary():
    assert SEVERITIES == ("error", "warning", "info")
    with pytest.raises(ValueError, match=r"unknown severity 'blocker' \(one of error, warning, info\)"):
        Finding("blocker", "project.secrets", "missing")


def test_accepting_keeps_the_finding_and_stops_it_counting():
    f = Finding("error", "security-non-root", "runs as root", service="db")
    accepted = f.accept("the entrypoint drops to uid 999")
    assert f.blocking and not f.accepted            # frozen: accept() returns a new finding
    assert not accepted.blocking and accepted.severity == "error"
    assert summarize([f, accepted, Finding("warning", "x", "w"), Finding("info", "y", "i")]) == {
        "error": 1, "warning": 1, "info": 1, "accepted": 1}
    assert counts_text(summarize([f])) == "1 error(s), 0 warning(s), 0 info, 0 accepted exception(s)"


def test_as_dict_makes_paths_project_relative():
    f = Finding("error", "yaml-syntax", "bad", file="/srv/p/db/compose.yaml", line=3)
    assert f.as_dict("/srv/p") == {
        "severity": "error", "rule": "yaml-syntax", "message": "bad", "service": None, "subject": None,
        "file": "db/compose.yaml", "line": 3, "hint": "", "accepted": None, "fixed_by": None}
    assert f.where == "/srv/p/db/compose.yaml:3"
    assert relative("/etc/passwd", "/srv/p") == "/etc/passwd"       # outside the project: as given
    assert relative("/srv/p2/x", "/srv/p") == "/srv/p2/x"
    assert Finding("info", "r", "m").as_dict("/srv/p")["file"] is None


def test_table_rows_fixes_accepted_reasons_and_deferred_steps():
    rows = [
        Finding("error", "project.secrets", "secret file secrets/db is missing\nsecond line", subject="db",
                hint="run the secrets step", fixed_by="secrets"),
        Finding("error", "security-non-root", "runs as root", service="proxy", file="/p/compose.yaml", line=7,
                hint="run as a non-root uid", accepted="binds port 80"),
        Finding("info", "host.disk", "50 GiB free"),
    ]
    lines = render_table(rows, "/p", deferred_steps=["secrets"])
    assert lines[0].split() == ["SEVERITY", "RULE", "SUBJECT", "WHERE", "MESSAGE"]
    assert lines[1].split()[:4] == ["error", "project.secrets", "db", "-"]
    assert lines[1].endswith("secret file secrets/db is missing")                 # first line of the message
    assert lines[2].strip() == "fix: run the secrets step [left to the later secrets step]"
    assert lines[3].split()[:4] == ["accepted", "security-non-root", "proxy", "compose.yaml:7"]
    assert lines[4].strip() == "accepted: binds port 80"
    assert lines[5].split()[:3] == ["info", "host.disk", "-"] and len(lines) == 6   # no hint: no fix line
    # the fix column starts under MESSAGE
    assert lines[2].index("fix:") == lines[0].index("MESSAGE")
    # without any file, no WHERE column; dicts (a JSON report's findings) render the same
    plain = render_table([rows[0].as_dict()])
    assert plain[0].split() == ["SEVERITY", "RULE", "SUBJECT", "MESSAGE"]
    assert plain[1].strip().endswith("missing") and plain[2].strip() == "fix: run the secrets step"
    assert render_table([]) == []
