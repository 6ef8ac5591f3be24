"""Tests for plugins/module_utils/procs.py with real process trees (no fakes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs
from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _gone_soon(pid: int, within: float = 10.0) -> bool:
    """Poll until ``pid`` is gone; the kernel delivers SIGKILL asynchronously."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _tree_script(pidfile, trap_term: bool = False) -> list[str]:
    """A shell that starts a grandchild ``sleep`` (which keeps our pipes open), records its pid
    once it runs, and waits for it, like ``docker`` waiting for its compose plugin."""
    trap = "trap '' TERM; " if trap_term else ""
    return ["sh", "-c", f"{trap}sleep 300 & echo $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
                        "echo started; wait"]


def _read_pid(pidfile) -> int:
    with open(pidfile) as fh:
        return int(fh.read())


@pytest.fixture
def reap_leftovers():
    """Kill anything a test leaves behind (only the pids it registers)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_timeout_kills_the_grandchild_too(tmp_path, reap_leftovers):
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(procs.CommandTimeout) as exc:
        procs.run(_tree_script(pidfile), timeout=1.0, grace=0.5)
    grandchild = _read_pid(pidfile)
    reap_leftovers.append(grandchild)
    assert _gone_soon(grandchild), "the grandchild survived the timeout"
    assert exc.value.stdout == "started\n"          # what it printed before is kept
    assert exc.value.timeout == 1.0


def test_grandchild_ignoring_sigterm_gets_sigkill(tmp_path, reap_leftovers):
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(procs.CommandTimeout):
        procs.run(_tree_script(pidfile, trap_term=True), timeout=1.0, grace=0.3)
    grandchild = _read_pid(pidfile)
    reap_leftovers.append(grandchild)
    assert _gone_soon(grandchild)


def test_plain_subprocess_run_leaves_the_grandchild(tmp_path, reap_leftovers):
    """The defect the helper exists for: the control case, so the tests above can fail."""
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(_tree_script(pidfile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=1.0, check=False)
    grandchild = _read_pid(pidfile)
    reap_leftovers.append(grandchild)
    assert _alive(grandchild)


def test_sigterm_grace_lets_the_child_clean_up(tmp_path):
    script = "trap 'echo cleaned; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
    with pytest.raises(procs.CommandTimeout) as exc:
        procs.run(["sh", "-c", script], timeout=1.0, grace=5.0)
    assert "cleaned" in exc.value.stdout


def test_timeout_error_is_one_clear_line():
    with pytest.raises(HyHomeError) as exc:
        procs.run(["sleep", "30"], timeout=0.2, grace=0.2)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg == "'sleep 30' did not finish within 0.2s; it and its child processes were stopped"


def test_long_command_line_is_shortened_in_the_message():
    argv = ["sleep", "30", *(["x" * 50] * 10)]
    with pytest.raises(procs.CommandTimeout) as exc:
        procs.run(["sh", "-c", "sleep 30", *argv], timeout=0.2, grace=0.2)
    assert len(str(exc.value)) < 300
    assert exc.value.argv[:2] == ["sh", "-c"]


def test_normal_completion_returns_output_and_exit_code(tmp_path):
    res = procs.run(["sh", "-c", "pwd; echo err >&2; echo $HY; exit 4"], timeout=30,
                    cwd=str(tmp_path), env={"HY": "home", "PATH": os.environ["PATH"]})
    assert res.returncode == 4
    assert res.stdout == f"{tmp_path}\nhome\n"
    assert res.stderr == "err\n"


def test_input_and_bytes():
    res = procs.run(["cat"], timeout=30, input=b"\x00abc", text=False)
    assert res.stdout == b"\x00abc"
    res = procs.run(["cat"], timeout=30, input="text")
    assert res.stdout == "text"


def test_stdin_is_not_inherited():
    # Without input, stdin is /dev/null: a command that reads it ends at once instead of hanging.
    res = procs.run(["cat"], timeout=30)
    assert res.returncode == 0 and res.stdout == ""


def test_child_runs_in_its_own_session():
    res = procs.run(["sh", "-c", "cut -d' ' -f6 /proc/$$/stat; echo $$"], timeout=30)
    sid, pid = res.stdout.split()
    assert sid == pid
    assert int(sid) != os.getsid(0)


def test_missing_program_raises_oserror_unchanged():
    with pytest.raises(FileNotFoundError):
        procs.run(["/nonexistent/hyhome-binary"], timeout=5)


def test_interrupt_stops_the_group(tmp_path, reap_leftovers, monkeypatch):
    """Any exception while waiting (KeyboardInterrupt here) stops the tree before propagating."""
    pidfile = tmp_path / "grandchild.pid"
    real = subprocess.Popen.communicate
    calls = []

    def interrupted(self, input=None, timeout=None):
        if not calls:
            calls.append(1)
            while not pidfile.exists():
                time.sleep(0.02)
            raise KeyboardInterrupt
        return real(self, input=input, timeout=timeout)

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        procs.run(_tree_script(pidfile), timeout=60, grace=0.3)
    grandchild = _read_pid(pidfile)
    reap_leftovers.append(grandchild)
    assert _gone_soon(grandchild)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_the_caller_stops_the_group(tmp_path, reap_leftovers, sig):
    """A module killed politely (ansible's task timeout, a stopped run) takes compose with it."""
    pidfile = tmp_path / "grandchild.pid"
    code = ("import sys; from ansible_collections.hyhome.bootstrap.plugins.module_utils import procs; "
            f"procs.run({_tree_script(pidfile)!r}, timeout=300, grace=0.3)")
    caller = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = _read_pid(pidfile)
    reap_leftovers.append(grandchild)
    caller.send_signal(sig)
    assert caller.wait(timeout=30) == 128 + sig
    assert _gone_soon(grandchild)


def test_own_signal_handlers_are_left_alone():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        procs.run(["true"], timeout=30)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    before = signal.getsignal(signal.SIGHUP)
    procs.run(["true"], timeout=30)
    assert signal.getsignal(signal.SIGHUP) == before
