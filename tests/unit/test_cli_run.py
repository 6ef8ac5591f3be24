"""hyhome on the fixture project (tests/fixtures/cli/project, no Docker), in a pseudo-terminal
(pexpect) and without one: progress lines, summary, the JSON report against its schema, every exit
code, Ctrl-C (clean exit, summary, nothing half-written), artifact rotation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pexpect
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "cli" / "project"
SCHEMA = json.loads((REPO / "hyhome_cli" / "report.schema.json").read_text())
DAY0 = ["engine", "preflight", "env", "secrets", "tls", "data_dirs", "validate", "compose", "verify"]

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env_for(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTEST_"))}
    env.update({"HYHOME_ROOT": str(root), "TERM": "xterm-256color", "COLUMNS": "160"})
    return env


def hyhome(root: Path, fx: Path, *args: str, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyhome_cli", *args, "-e", f"fx_dir={fx}"], cwd=root,
                          env={**env_for(root), **env}, capture_output=True, text=True, timeout=timeout, check=False)


def report_of(proc: subprocess.CompletedProcess) -> dict:
    doc = json.loads(proc.stdout)   # the whole of stdout is one JSON document
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    return doc


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "project"
    shutil.copytree(FIXTURE, path, ignore=shutil.ignore_patterns(".hyhome"))
    return path


@pytest.fixture(scope="module")
def converged(root, tmp_path_factory):
    """One full day0 --json run on a fresh directory; later tests run on the converged result."""
    fx = tmp_path_factory.mktemp("fx")
    proc = hyhome(root, fx, "day0", "--json")
    return fx, proc


def test_day0_json_report(root, converged):
    fx, proc = converged
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = report_of(proc)
    assert proc.stderr == ""
    assert doc["command"] == "day0" and doc["status"] == "ok" and doc["exit_code"] == 0
    assert [s["name"] for s in doc["steps"]] == DAY0
    assert {s["name"]: s["status"] for s in doc["steps"]} == {
        "engine": "ok", "preflight": "ok", "env": "changed", "secrets": "changed", "tls": "changed",
        "data_dirs": "changed", "validate": "ok", "compose": "changed", "verify": "ok"}
    secrets = next(s for s in doc["steps"] if s["name"] == "secrets")
    assert secrets["changes"][0]["details"] == ["db_password: generated", "smtp_password: placeholder-written"]
    assert doc["hosts"]["localhost"]["failed"] == 0 and doc["stats"]["changed"] == 6
    assert [(h["service"], h["healthy"]) for h in doc["health"]] == [("web", True), ("api", True)]
    assert [u["url"] for u in doc["urls"]] == ["https://web.fixture.localhost:8443/", "https://fixture.localhost/"]
    assert doc["ca"]["certificate_path"] == str(fx / "ca" / "rootCA.pem")
    assert doc["ca"]["trusted_here"] is False   # the fixture never installs trust
    assert "update-ca-certificates" in doc["ca"]["trust_command"]
    assert [(p["name"], p["path"]) for p in doc["pending"]] == [
        ("smtp_password", str(fx / "secrets" / "smtp_password"))]
    assert any("smtp_password holds a placeholder" in w["message"] for w in doc["warnings"])
    assert [(f["rule"], f["severity"], f["fixed_by"]) for f in doc["findings"]] == [
        ("host.ports", "warning", None), ("project.secrets", "error", "secrets")]
    assert doc["failure"] is None and doc["left_undone"] == []
    assert Path(doc["artifacts"]).parent == root / ".hyhome" / "runner" / "artifacts"


def test_rerun_plain_summary(root, converged):
    fx, _ = converged
    proc = hyhome(root, fx, "day0", "--plain")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    # one progress line per step, in order, then the summary
    steps = [m.group(1) for m in map(re.compile(r"\[ *[0-9.]+s\] (\S+) ").match, lines) if m]
    assert steps == DAY0
    assert all(" changed=0 " in line for line in lines if line.startswith("["))
    text = proc.stdout
    assert "hyhome day0: done in" in text and "(exit 0)" in text
    assert "localhost : ok=" in text and "changed=0" in text
    assert "Nothing changed." in text
    assert "Services:" in text and "api" in text and "healthy" in text
    assert "Open:\n  https://web.fixture.localhost:8443/\n  https://fixture.localhost/   (TLS check failed)" in text
    assert f"Local CA: {fx}/ca/rootCA.pem (NOT trusted by this host)" in text
    assert "trust it on another machine: ssh OTHER-HOST" in text
    assert f"write the real value of smtp_password into {fx}/secrets/smtp_password" in text
    assert "fix: stop what listens on 8443" in text
    assert "\x1b[" not in text   # no terminal escapes when stdout is not a terminal


def test_check_on_converged_host_exits_0(root, converged):
    fx, _ = converged
    proc = hyhome(root, fx, "check", "--plain", "--tags", "env,secrets,tls")
    assert proc.returncode == 0, proc.stdout
    assert "Nothing would change." in proc.stdout


def test_check_with_changes_exits_2_and_writes_nothing(root, tmp_path):
    proc = hyhome(root, tmp_path, "check", "--json", "--tags", "env,data_dirs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    doc = report_of(proc)
    assert doc["status"] == "changes" and doc["check_mode"] is True
    assert [s["name"] for s in doc["steps"]] == ["env", "data_dirs"]
    assert list(tmp_path.iterdir()) == []


def test_failure_exits_1_with_step_message_and_no_traceback(root, converged):
    fx, _ = converged
    proc = hyhome(root, fx, "day0", "--plain", "--tags", "data_dirs", "-e", "fx_fail=data_dirs")
    assert proc.returncode == 1
    assert f'Failed at step data_dirs, task "Fail on purpose" on localhost:\n  data_dirs: {fx}/data/db is owned' \
        in proc.stdout
    assert "Full Ansible output: " in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_module_crash_shows_the_error_line_not_the_traceback(root, converged):
    fx, _ = converged
    proc = hyhome(root, fx, "day0", "--json", "--tags", "secrets", "-e", "fx_crash=secrets")
    assert proc.returncode == 1
    doc = report_of(proc)
    assert doc["failure"]["step"] == "secrets" and doc["failure"]["task"] == "A module with a bug"
    assert "fixture module crashed on purpose" in doc["failure"]["message"]
    assert "Traceback" not in doc["failure"]["message"]


def test_preflight_blocked_exits_3(root, tmp_path):
    proc = hyhome(root, tmp_path, "preflight", "--plain", "-e", "fx_block=true")
    assert proc.returncode == 3, proc.stdout
    assert "hyhome preflight: BLOCKED by preflight" in proc.stdout
    assert "error: port 8443 is in use by another process (compose.yaml:7)" in proc.stdout
    assert "fix: stop what listens on 8443 or set GATEWAY_HTTPS_PORT" in proc.stdout


def test_verify_reports_an_unhealthy_service(root, tmp_path):
    proc = hyhome(root, tmp_path, "verify", "--json", "-e", "fx_unhealthy=true")
    doc = report_of(proc)
    assert [(h["service"], h["healthy"]) for h in doc["health"]] == [("web", True), ("api", False)]


def test_rotate(root, converged):
    fx, _ = converged
    before = (fx / "secrets" / "db_password").read_bytes()
    proc = hyhome(root, fx, "rotate", "db_password", "--json")
    assert proc.returncode == 0, proc.stdout
    doc = report_of(proc)
    assert doc["command"] == "rotate" and [s["name"] for s in doc["steps"]] == ["secrets"]
    assert doc["steps"][0]["changes"][0]["details"] == ["db_password: rotated"]
    assert (fx / "secrets" / "db_password").read_bytes() != before


def test_artifacts_are_rotated(root, tmp_path):
    for _ in range(2):
        # the venv's ansible-playbook is found with the venv not activated (PATH without its bin)
        proc = hyhome(root, tmp_path, "validate", "--json", "--keep-runs", "2", PATH="/usr/bin:/bin")
        assert proc.returncode == 0, proc.stdout
    runs = list((root / ".hyhome" / "runner" / "artifacts").iterdir())
    assert len(runs) == 2
    assert report_of(proc)["artifacts"] in {str(p) for p in runs}


def test_pty_live_progress_and_summary(root, converged):
    fx, _ = converged
    child = pexpect.spawn(sys.executable, ["-m", "hyhome_cli", "day0", "--tags", "env,validate", "-e", f"fx_dir={fx}"],
                          cwd=str(root), env=env_for(root), encoding="utf-8", timeout=300, dimensions=(40, 160))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    raw = child.before
    out = ANSI.sub("", raw)
    assert raw != out   # rich drew on the terminal
    assert re.search(r"step +state +ok +changed +failed +skipped +time", out)   # the live table
    assert re.search(r"env +\S* +running", out)   # a step shown while it runs
    # what stays after the live display: one line per step, then the summary
    assert re.search(r"\] env +ok +ok=1 changed=0 failed=0 skipped=0\r?\n.*\] validate +ok ", out)
    assert re.search(r"hyhome day0: done in [0-9.]+s \(exit 0\)", out)
    assert "localhost : ok=" in out and "Nothing changed." in out


def sleepers(seconds: str) -> list[int]:
    """Processes running ``sleep <seconds>`` (the fixture's slow compose task)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def assert_clean_cancel(fx: Path, root: Path, seconds: str) -> None:
    # the first atomic write is whole, the second never started, nothing half-written anywhere
    assert (fx / "state-1").read_text() == "x" * 20000 + "\n"
    assert not (fx / "state-2").exists()
    assert sorted(p.name for p in fx.iterdir()) == ["state-1"]
    leftovers = [p for p in (root / ".hyhome" / "runner").rglob("*") if p.name.endswith(("-partial.json", ".tmp"))]
    assert leftovers == []
    deadline = time.monotonic() + 10
    while sleepers(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers(seconds) == []   # the run's processes are gone


def test_ctrl_c_in_a_terminal(root, tmp_path):
    child = pexpect.spawn(sys.executable, ["-m", "hyhome_cli", "day0", "--tags", "compose",
                                           "-e", f"fx_dir={tmp_path}", "-e", "fx_sleep=171"],
                          cwd=str(root), env=env_for(root), encoding="utf-8", timeout=300, dimensions=(40, 160))
    child.expect("Bring the stack up")   # the live display names the current task
    child.sendintr()
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 130
    out = ANSI.sub("", child.before)
    assert "hyhome day0: CANCELED" in out and "(exit 130)" in out
    assert "Left undone: compose" in out
    assert "Traceback" not in out
    assert_clean_cancel(tmp_path, root, "171")


def test_sigint_without_a_terminal(root, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "hyhome_cli", "day0", "--json", "--tags", "compose,verify",
                             "-e", f"fx_dir={tmp_path}", "-e", "fx_sleep=173"], cwd=root, env=env_for(root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not sleepers("173") and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert doc["status"] == "canceled"
    assert {s["name"]: s["status"] for s in doc["steps"]} == {"compose": "canceled", "verify": "not_run"}
    assert doc["left_undone"] == ["compose", "verify"]
    assert_clean_cancel(tmp_path, root, "173")
