"""hyhome CLI, the pure parts: events folded into a report, exit codes, usage errors, the masked
command artifact, the JSON schema itself. The runs on fixture playbooks are in test_cli_run.py."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from hyhome_cli import main as cli
from hyhome_cli import render
from hyhome_cli.report import (
    DAY0_STEPS,
    EXIT_BLOCKED,
    EXIT_CANCELED,
    EXIT_CHANGES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Run,
    failure_message,
)
from hyhome_cli.runner import MASK, masked_command

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "hyhome_cli" / "report.schema.json").read_text())


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 0.5
        return self.t


def task(role, name, action="ansible.builtin.copy"):
    return {"event": "playbook_on_task_start",
            "event_data": {"role": role, "task": name, "resolved_action": action}}


def result(kind, role, name, res, host="h1", action="ansible.builtin.copy", **extra):
    return {"event": kind, "event_data": {"role": role, "task": name, "host": host, "res": res,
                                          "resolved_action": action, **extra}}


def stats(**per_host):
    data = {k: {} for k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")}
    for host, counts in per_host.items():
        for k, v in counts.items():
            data[k][host] = v
    return {"event": "playbook_on_stats", "event_data": data}


def fold(events, command="day0", check=False, steps=DAY0_STEPS, canceled=False, rc=0):
    run = Run(command, "day0.yml", expected_steps=steps, check_mode=check, clock=Clock())
    finished = [run.feed(e) for e in events]
    run.finish(canceled=canceled)
    return run, [f for f in finished if f], run.report(rc)


def validate(doc):
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_steps_counts_and_changes_from_events():
    _, finished, doc = fold([
        {"event": "playbook_on_play_start", "event_data": {"play": "Day 0"}},
        task("hyhome.bootstrap.docker_engine", "Install"),
        result("runner_on_skipped", "hyhome.bootstrap.docker_engine", "Install", {}),
        task("hyhome.bootstrap.preflight", "Validating arguments"),
        result("runner_on_ok", "hyhome.bootstrap.project", "Validating arguments", {"changed": False}),
        task("hyhome.bootstrap.preflight", "Check"),
        result("runner_on_ok", "hyhome.bootstrap.preflight", "Check", {"changed": False}),
        result("runner_on_skipped", "hyhome.bootstrap.preflight", "Stop", {}),
        task("hyhome.bootstrap.secrets", "Generate"),
        result("runner_on_ok", "hyhome.bootstrap.secrets", "Generate",
               {"changed": True, "changed_secrets": ["db_password"],
                "secrets": [{"name": "db_password", "action": "generated"}],
                "provided_pending": [{"name": "smtp_password", "path": "/p/smtp", "consumers": ["mail"],
                                      "hint": "from your provider"}],
                "warnings": ["smtp_password holds a placeholder"]},
               action="hyhome.bootstrap.secret_files"),
        stats(h1={"ok": 3, "changed": 1, "skipped": 1}),
    ])
    steps = {s["name"]: s for s in doc["steps"]}
    # the dependency role "project" counts in the step it serves (the first one not yet run)
    assert steps["preflight"]["ok"] == 2 and steps["preflight"]["skipped"] == 1
    assert steps["preflight"]["status"] == "ok"
    assert steps["secrets"]["status"] == "changed"
    assert steps["secrets"]["changes"] == [{"task": "Generate", "host": "h1", "details": ["db_password: generated"]}]
    assert steps["engine"]["skipped"] == 1 and steps["engine"]["status"] == "skipped"
    assert steps["tls"]["status"] == "not_run"
    assert finished == ["engine", "preflight", "secrets"]
    assert doc["pending"][0]["name"] == "smtp_password" and doc["pending"][0]["consumers"] == ["mail"]
    assert doc["warnings"] == [{"step": "secrets", "host": "h1", "message": "smtp_password holds a placeholder"}]
    assert doc["hosts"]["h1"]["changed"] == 1 and doc["stats"]["ok"] == 3
    assert doc["exit_code"] == EXIT_OK and doc["status"] == "ok" and doc["left_undone"] == []
    validate(doc)


def test_verify_health_urls_and_ca_from_module_results():
    verify = {"changed": False, "findings": [
        {"rule": "health", "severity": "info", "service": "web", "message": "healthy"},
        {"rule": "health", "severity": "error", "service": "api", "message": "not ready: unhealthy"},
        {"rule": "security-user", "severity": "warning", "service": "api", "message": "runs as root",
         "hint": "set user:", "accepted": None},
        {"rule": "security-user", "severity": "error", "service": "cadvisor", "message": "root",
         "accepted": "needs the host"}],
        "tls": [{"host": "127.0.0.1", "port": 8443, "server_name": "web.x.localhost", "verified": True},
                {"host": "127.0.0.1", "port": 443, "server_name": "x.localhost", "verified": False}]}
    _, _, doc = fold([
        task("tls", "CA"),
        result("runner_on_ok", "tls", "CA", {"changed": True, "created": True, "ca_dir": "/ca",
                                             "certificate_path": "/ca/rootCA.pem", "fingerprint_sha256": "ab"},
               action="hyhome.bootstrap.local_ca"),
        result("runner_on_ok", "tls", "Trust", {"changed": False, "certificate_path": "/p/rootCA.pem",
                                                "trust": {"system": {"in_bundle": True}, "nss": []}},
               action="hyhome.bootstrap.local_ca"),
        task("verify", "Check"),
        result("runner_on_ok", "verify", "Check", verify, action="hyhome.bootstrap.stack_verify"),
    ], steps=("tls", "verify"))
    assert [(h["service"], h["healthy"]) for h in doc["health"]] == [("web", True), ("api", False)]
    assert [u["url"] for u in doc["urls"]] == ["https://web.x.localhost:8443/", "https://x.localhost/"]
    assert [f["rule"] for f in doc["findings"]] == ["security-user"]   # accepted exceptions are not findings
    assert doc["ca"]["certificate_path"] == "/p/rootCA.pem" and doc["ca"]["ca_dir"] == "/ca"
    assert doc["ca"]["trusted_here"] is True
    assert doc["steps"][0]["changes"][0]["details"] == ["local CA created"]
    validate(doc)


def test_failure_shows_module_message_without_traceback():
    crash = {"failed": True, "msg": "MODULE FAILURE\nSee stdout/stderr for the exact error",
             "module_stderr": "Traceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n"
                              "RuntimeError: boom\n"}
    assert failure_message(crash) == "MODULE FAILURE\nSee stdout/stderr for the exact error: RuntimeError: boom"
    _, _, doc = fold([task("data_dirs", "Dirs"),
                      result("runner_on_failed", "data_dirs", "Dirs", {"msg": "owned by 0", "hint": "chown it"}),
                      stats(h1={"ok": 0, "failures": 1})], rc=2)
    assert doc["failure"] == {"step": "data_dirs", "task": "Dirs", "host": "h1", "message": "owned by 0",
                              "hint": "chown it"}
    assert doc["exit_code"] == EXIT_FAILED and doc["status"] == "failed"
    assert doc["left_undone"] == ["engine", "preflight", "env", "secrets", "tls", "validate", "compose", "verify"]
    text = "\n".join(render.summary_lines(doc))
    assert "Failed at step data_dirs, task \"Dirs\" on h1:" in text and "fix: chown it" in text
    assert "Traceback" not in text
    validate(doc)


def test_ignored_errors_are_not_failures():
    _, _, doc = fold([task("env", "Probe"),
                      result("runner_on_failed", "env", "Probe", {"msg": "nope"}, ignore_errors=True)],
                     steps=("env",))
    assert doc["failure"] is None and doc["exit_code"] == EXIT_OK


@pytest.mark.parametrize(("events", "kwargs", "rc", "code", "status"), [
    ([], {}, 0, EXIT_OK, "ok"),
    ([task("env", "x"), result("runner_on_ok", "env", "x", {"changed": True})], {"check": True}, 0,
     EXIT_CHANGES, "changes"),
    ([task("env", "x"), result("runner_on_ok", "env", "x", {"changed": True})], {}, 0, EXIT_OK, "ok"),
    ([task("preflight", "Stop"), result("runner_on_failed", "preflight", "Stop", {"msg": "blocked"})], {}, 2,
     EXIT_BLOCKED, "blocked"),
    ([task("env", "x"), result("runner_on_unreachable", "env", "x", {"msg": "ssh: no route"})], {}, 4,
     EXIT_FAILED, "failed"),
    ([{"event": "verbose", "stdout": "[ERROR]: the playbook could not be parsed"}], {}, 4, EXIT_FAILED, "failed"),
    ([task("compose", "Up")], {"canceled": True}, 254, EXIT_CANCELED, "canceled"),
])
def test_every_exit_code(events, kwargs, rc, code, status):
    _, _, doc = fold(events, rc=rc, **kwargs)
    assert (doc["exit_code"], doc["status"]) == (code, status)
    validate(doc)


def test_playbook_error_before_any_task_is_reported():
    _, _, doc = fold([{"event": "verbose", "stdout": "[ERROR]: the playbook could not be parsed\nmore"}], rc=4)
    assert doc["failure"]["step"] is None
    assert doc["failure"]["message"] == "[ERROR]: the playbook could not be parsed"


def test_cancel_marks_the_running_step_and_what_was_left_undone():
    _, _, doc = fold([task("preflight", "x"), result("runner_on_ok", "preflight", "x", {}),
                      task("env", "y")], canceled=True, rc=254)
    steps = {s["name"]: s["status"] for s in doc["steps"]}
    assert steps["preflight"] == "ok" and steps["env"] == "canceled"
    assert doc["left_undone"] == ["engine", "env", "secrets", "tls", "data_dirs", "validate", "compose", "verify"]
    assert "Left undone: engine, env, secrets" in "\n".join(render.summary_lines(doc))


def test_preflight_block_keeps_first_line_and_lists_findings():
    pre = {"changed": False, "blocks_boot": True, "findings": [
        {"rule": "host.ports", "severity": "error", "subject": "443", "message": "port 443 in use",
         "hint": "free it", "fixed_by": None, "file": "compose.yaml", "line": 3},
        {"rule": "project.secrets", "severity": "error", "subject": "pw", "message": "pw missing",
         "hint": "run secrets", "fixed_by": "secrets", "file": None, "line": None}]}
    _, _, doc = fold([task("preflight", "Check"),
                      result("runner_on_ok", "preflight", "Check", pre, action="hyhome.bootstrap.compose_preflight"),
                      result("runner_on_failed", "preflight", "Stop", {"msg": "Preflight: 2 error(s)\ntable..."})],
                     command="preflight", steps=("preflight",), rc=2)
    assert doc["failure"]["message"] == "Preflight: 2 error(s)"
    text = "\n".join(render.summary_lines(doc))
    assert "error: port 443 in use (compose.yaml:3)" in text and "fix: free it" in text
    assert "error: pw missing" in text   # stand-alone preflight: what a later step fixes still blocks


def test_masked_command_keeps_no_value():
    doc = {"command": ["ansible-playbook", "-i", "inv", "-e", '{"pw": "hunter2"}', "-e", "@vars.yml",
                       "--extra-vars=pw=hunter2", "-epw=hunter2", "play.yml"],
           "cwd": "/r", "env": {"TOKEN": "hunter2", "PATH": "/bin"}}
    masked = masked_command(doc)
    assert "hunter2" not in json.dumps(masked)
    assert masked["command"] == ["ansible-playbook", "-i", "inv", "-e", MASK, "-e", "@vars.yml",
                                 "--extra-vars=" + MASK, "-e" + MASK, "play.yml"]
    assert masked["env"] == ["PATH", "TOKEN"]
    assert masked_command(masked) == masked   # idempotent


@pytest.mark.parametrize("argv", [
    [],
    ["bogus"],
    ["rotate"],
    ["day0", "--keep-runs", "0"],
    ["day0", "-i", "/nonexistent/inventory.yml"],
    ["day0", "-e", "@/nonexistent/vars.yml"],
    ["rotate", "bad/name"],
    ["day0", "--root", "/nonexistent-root"],
])
def test_bad_usage_exits_4(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(cli.main(argv))
    assert exc.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err.strip()


def test_rotate_passes_the_name_and_limits_steps(tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "secrets.yml").write_text("[]\n")
    args = cli.build_parser().parse_args(["rotate", "redis_password", "--root", str(tmp_path)])
    inv, steps = cli.invocation(args)
    assert inv.playbook == "playbooks/secrets.yml" and steps == ("secrets",)
    assert json.loads(inv.extravars[-1]) == {"secrets_rotate": ["redis_password"], "secrets_apply": False}
    args = cli.build_parser().parse_args(["rotate", "redis_password", "--apply", "--root", str(tmp_path)])
    assert cli.invocation(args)[1] == ("secrets", "compose")


def test_check_is_check_plus_diff_and_tags_narrow_the_steps(tmp_path):
    (tmp_path / "day0.yml").write_text("[]\n")
    args = cli.build_parser().parse_args(["check", "--tags", "secrets,tls", "-l", "node1", "--root", str(tmp_path)])
    inv, steps = cli.invocation(args)
    assert inv.check and inv.diff and inv.tags == "secrets,tls" and inv.limit == "node1"
    assert steps == ("secrets", "tls")
    assert "--check" in inv.cmdline() and "--diff" in inv.cmdline()
