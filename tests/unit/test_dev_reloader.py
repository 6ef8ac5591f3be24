"""stack/app/dev/reloader.py (the dev profile's in-container reloader): what it watches, and that an edit
restarts the command."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RELOADER = Path(__file__).resolve().parents[2] / "stack" / "app" / "dev" / "reloader.py"
spec = importlib.util.spec_from_file_location("hyhome_dev_reloader", RELOADER)
reloader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reloader)


def test_snapshot_sees_python_files_only_and_skips_pycache(tmp_path):
    (tmp_path / "server.py").write_text("A = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("B = 1\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "server.cpython-311.py").write_text("")
    assert sorted(os.path.relpath(p, tmp_path) for p in reloader.snapshot(str(tmp_path))) == ["pkg/mod.py", "server.py"]


def test_snapshot_changes_on_edit_add_and_remove(tmp_path):
    src = tmp_path / "server.py"
    src.write_text("A = 1\n")
    first = reloader.snapshot(str(tmp_path))
    src.write_text("A = 22\n")        # a new size, whatever the clock's resolution
    second = reloader.snapshot(str(tmp_path))
    assert second != first
    (tmp_path / "extra.py").write_text("")
    assert reloader.snapshot(str(tmp_path)) != second
    (tmp_path / "extra.py").unlink()
    assert reloader.snapshot(str(tmp_path)) == second


def test_usage_error(capsys):
    assert reloader.main(["/tmp"]) == 2
    assert reloader.main(["/tmp", "python3"]) == 2
    assert "usage:" in capsys.readouterr().err


def _starts(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _wait(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_an_edit_restarts_the_command_and_sigterm_stops_it(tmp_path):
    src = tmp_path / "app"
    src.mkdir()
    (src / "server.py").write_text("VERSION = 1\n")
    log = tmp_path / "starts.log"
    child = ("import sys, time; open(sys.argv[1], 'a').write('start\\n'); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, str(RELOADER), str(src), "--", sys.executable, "-c", child, str(log)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: _starts(log) == 1), "the command did not start"
        (src / "server.py").write_text("VERSION = 22\n")
        assert _wait(lambda: _starts(log) == 2), "an edit did not restart the command"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert "server.py changed: restarting" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", ["notes.txt", "__pycache__/x.py"])
def test_other_files_do_not_restart(tmp_path, name):
    (tmp_path / "server.py").write_text("A = 1\n")
    before = reloader.snapshot(str(tmp_path))
    target = tmp_path / name
    target.parent.mkdir(exist_ok=True)
    target.write_text("changed")
    assert reloader.snapshot(str(tmp_path)) == before
