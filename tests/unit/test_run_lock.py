"""The day0 run lock: refuse or wait with a message naming the holder, never stale, held for the whole run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.plugin_utils import run_lock as rl

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = 0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += 1


@pytest.fixture
def lock(tmp_path):
    return str(tmp_path / "run.lock")


def take(path, pid=111, wait=0, create=True, **kw):
    return rl.acquire(path, wait, create=create, own_pid=pid, info=rl.holder_info(pid, 0), **kw)


@pytest.fixture
def held(lock):
    """The lock, held by this process (as the run of pid os.getpid()) for the test."""
    fd = take(lock, pid=os.getpid())
    yield fd
    with contextlib.suppress(OSError):
        os.close(fd)


def test_first_run_locks_and_names_itself(lock, held):
    assert held >= 0
    assert json.loads(Path(lock).read_text()) == {"pid": os.getpid(), "started": "1970-01-01T00:00:00Z"}
    assert os.stat(lock).st_mode & 0o777 == 0o600


def test_second_run_is_refused_at_once_naming_the_holder(lock, held):
    fake = FakeClock()
    with pytest.raises(rl.RunLockBusy) as err:
        take(lock, pid=222, clock=fake.clock, sleep=fake.sleep)
    assert str(err.value).startswith(
        f"another day0 run (pid {os.getpid()}, started 1970-01-01T00:00:00Z) holds {lock}; wait for it or stop it")
    assert fake.slept == 0


def test_second_run_waits_as_long_as_asked_then_refuses(lock, held):
    fake = FakeClock()
    with pytest.raises(rl.RunLockBusy, match=r"\(waited 5 s\)"):
        take(lock, pid=222, wait=5, clock=fake.clock, sleep=fake.sleep)
    assert 5 <= fake.now < 5 + 2 * rl.POLL


def test_waiter_gets_the_lock_when_the_holder_ends(lock, held):
    fake = FakeClock()

    def release_after_three(seconds):
        fake.sleep(seconds)
        if fake.slept == 3:
            os.close(held)

    got = take(lock, pid=222, wait=60, clock=fake.clock, sleep=release_after_three)
    try:
        assert json.loads(Path(lock).read_text())["pid"] == 222   # the file now names the new holder
    finally:
        os.close(got)


def test_the_same_run_for_another_host_is_no_conflict(lock, held):
    assert take(lock, pid=os.getpid()) == rl.THIS_RUN


def test_a_dead_holder_named_in_the_file_is_not_blamed(lock, held):
    """The file may still name a finished run for a moment after a new holder locked it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    os.pwrite(held, rl.holder_info(int(dead.stdout)), 0)
    fake = FakeClock()
    with pytest.raises(rl.RunLockBusy) as err:
        take(lock, pid=222, clock=fake.clock, sleep=fake.sleep)
    assert fake.now >= rl.GRACE
    assert str(err.value).startswith(f"another day0 run holds {lock};")


def test_check_mode_creates_nothing(tmp_path):
    path = tmp_path / "state" / "run.lock"
    assert take(str(path), create=False) is None
    assert not path.parent.exists()


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(rl.RunLockError, match="directory is missing"):
        take(str(tmp_path / "nope" / "run.lock"))


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, lock):
    target = tmp_path / "precious"
    target.write_text("keep")
    os.symlink(target, lock)
    with pytest.raises(rl.RunLockError, match="is a symlink; remove it"):
        take(lock)
    assert target.read_text() == "keep"


def test_a_directory_at_the_lock_path_is_refused(lock):
    os.mkdir(lock)
    with pytest.raises(rl.RunLockError, match="cannot open the run lock"):
        take(lock)


@pytest.mark.parametrize("raw", [
    b"", b"garbage", b"[1]", b'{"pid": "7"}', b'{"pid": true}', b'{"pid": -3}', b"\xff\xfe",
    b'{"pid": 0, "started": "2026-01-01T00:00:00Z"}',
])
def test_hostile_lock_content_names_no_holder(raw):
    assert rl.holder_text(raw) == ""


def test_only_a_well_formed_time_is_repeated():
    raw = json.dumps({"pid": 42, "started": "2026-01-01T00:00:00Z\n[ERROR] forged"}).encode()
    assert rl.holder_text(raw) == "pid 42"
    assert rl.holder_text(rl.holder_info(42, 86400)) == "pid 42, started 1970-01-02T00:00:00Z"


def test_a_sigkilled_holder_leaves_no_stale_lock(lock):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        fake = FakeClock()
        with pytest.raises(rl.RunLockBusy):
            take(lock, pid=222, clock=fake.clock, sleep=fake.sleep)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fd = take(lock, pid=222)
    os.close(fd)


def test_a_handed_over_lock_is_held_by_the_receiving_process(lock, monkeypatch):
    """The worker locks, hands the descriptor over and exits: the main process now holds the lock."""
    monkeypatch.setattr(rl, "CHANNEL", None)
    monkeypatch.setattr(rl, "HELD", {})
    rl.open_channel()
    try:
        child = os.fork()
        if child == 0:   # the worker
            try:
                fd = take(lock, pid=os.getppid())
                rl.hand_over(fd, lock)
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        fake = FakeClock()
        with pytest.raises(rl.RunLockBusy):   # in flight: still held, though the worker is gone
            take(lock, pid=333, clock=fake.clock, sleep=fake.sleep)
        held = rl.receive()
        assert list(held) == [lock]
        with pytest.raises(rl.RunLockBusy):
            take(lock, pid=333, clock=fake.clock, sleep=fake.sleep)
        os.close(held.pop(lock))
        os.close(take(lock, pid=333))
    finally:
        for end in rl.CHANNEL:
            end.close()


def test_hand_over_without_the_callback_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(rl, "CHANNEL", None)
    with pytest.raises(rl.RunLockError, match=r"needs the callback hyhome\.bootstrap\.run_lock"):
        rl.hand_over(0, "/x")


# ---------------------------------------------------------------------- through ansible-playbook

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: lock
      hyhome.bootstrap.run_lock:
        project_dir: "{project}"
        wait: "{{{{ wait | default(0) }}}}"
      register: lock
    - name: report
      ansible.builtin.copy:
        content: "{{{{ lock | to_json }}}}"
        dest: "{out}/{{{{ inventory_hostname }}}}-{{{{ tag }}}}.json"
        mode: "0600"
      check_mode: false
    - name: hold the lock until told
      ansible.builtin.wait_for:
        path: "{out}/release"
        timeout: 60
      when: hold | default(false) | bool
"""


def playbook(tmp_path: Path, project: Path, tag: str, *extra: str, callbacks: str | None = None,
             background: bool = False):
    pb = tmp_path / "pb.yml"
    pb.write_text(PLAYBOOK.format(project=project, out=tmp_path))
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(json.dumps({"all": {"hosts": {"one": local, "two": local}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    if callbacks is not None:
        env["ANSIBLE_CALLBACKS_ENABLED"] = callbacks
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(pb),
            "-e", f"tag={tag}", *extra]
    if background:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_playbook_second_run_refused_while_the_first_holds(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    # check mode on a project never run: nothing locked, nothing written
    proc = playbook(tmp_path, project, "check", "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert json.loads((tmp_path / "one-check.json").read_text())["lock"] is not None
    assert not (project / ".hyhome").exists()

    first = playbook(tmp_path, project, "first", "-e", "hold=true", background=True)
    try:
        for _ in range(300):   # until both hosts report (the second one: held by this same run)
            if (tmp_path / "one-first.json").exists() and (tmp_path / "two-first.json").exists():
                break
            time.sleep(0.1)
        results = [json.loads((tmp_path / f"{h}-first.json").read_text()) for h in ("one", "two")]
        assert all(r["locked"] for r in results)
        assert sorted(r["msg"].startswith("locked ") for r in results) == [False, True]
        second = playbook(tmp_path, project, "second")
        assert second.returncode == 2
        assert f"another day0 run (pid {first.pid}, started " in second.stdout
        assert f"holds {project}/.hyhome/run.lock; wait for it or stop it" in second.stdout
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        (tmp_path / "release").touch()
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out[-3000:]
    # released with the run: the next one locks at once
    os.close(take(str(project / ".hyhome" / "run.lock"), pid=222))


def test_playbook_without_the_callback_fails_clearly(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    proc = playbook(tmp_path, project, "nocb", callbacks="hyhome.bootstrap.preload")
    assert proc.returncode == 2
    assert "the run lock needs the callback hyhome.bootstrap.run_lock" in proc.stdout
