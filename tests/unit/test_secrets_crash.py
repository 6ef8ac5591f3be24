"""Crash safety: SIGKILL the writer at random points, many times.

After every kill: no secret file or history record is ever partial or corrupt, values that exist
before the run never change unless rotated, and a rotated value's predecessor is always in the
history before the new value replaces it. A final clean run leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
from ansible_collections.hyhome.bootstrap.plugins.module_utils import secrets as core

ITERATIONS = 200
TIME_BUDGET = 30.0       # seconds; stop early rather than exceed CI's 60 s on a loaded machine
FORMATS = {
    "password": re.compile(rb"[A-Za-z0-9]{32}"),
    "hex": re.compile(rb"[0-9a-f]{64}"),
    "token": re.compile(rb"[A-Za-z0-9_-]{43}"),
}
KIND_OF = {"stable": "password", "fresh": "hex", "rot": "token"}


def registry():
    reg = {}
    for group, kind in KIND_OF.items():
        for i in range(8):
            reg[f"{group}_{i}"] = {"kind": kind, "file": f"{group}/{group}_{i}"}
    return reg


def valid(kind: str, value: bytes) -> bool:
    return bool(FORMATS[kind].fullmatch(value))


def child(secrets_dir: str, specs, rotate, go_fd: int):
    try:
        os.write(go_fd, b"1")
        p = core.plan(specs, secrets_dir, rotate=rotate)
        core.apply(p)
    finally:
        os._exit(0)


def check_tree(secrets_dir: str, specs, stable: dict, last_rot: dict):
    for s in specs:
        group = s.name.split("_")[0]
        kind = KIND_OF[group]
        if os.path.exists(s.path):
            value = Path(s.path).read_bytes()
            assert valid(kind, value), f"{s.name} is partial or corrupt after a kill"
            if group == "stable":
                assert value == stable[s.name], f"{s.name} changed"
            if group == "rot" and value != last_rot[s.name]:
                kept = [Path(h).read_bytes() for h in core.history_entries(secrets_dir, s.relpath)]
                assert last_rot[s.name] in kept, f"{s.name} was replaced before its old value reached the history"
                last_rot[s.name] = value
        else:
            assert group == "fresh", f"{s.name} disappeared"
        for h in core.history_entries(secrets_dir, s.relpath):
            assert valid(kind, Path(h).read_bytes()), f"history record {h} is partial or corrupt"


@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_partial_files(tmp_path):
    rnd = random.Random(os.getpid())
    secrets_dir = str(tmp_path / "secrets")
    specs = core.build_specs(None, registry(), secrets_dir, persistent_default=False)
    by_group = {g: [s for s in specs if s.name.startswith(g)] for g in KIND_OF}

    # Baseline: stable and rot secrets exist; fresh ones are missing.
    core.apply(core.plan(by_group["stable"] + by_group["rot"], secrets_dir))
    stable = {s.name: Path(s.path).read_bytes() for s in by_group["stable"]}
    last_rot = {s.name: Path(s.path).read_bytes() for s in by_group["rot"]}

    def timed_full_run() -> float:
        """How long one full run takes now (the machine's load varies), to spread kill points over it."""
        t0 = time.monotonic()
        core.apply(core.plan(specs, secrets_dir, rotate=[s.name for s in by_group["rot"]]))
        took = max(time.monotonic() - t0, 0.005)
        for s in by_group["rot"]:
            last_rot[s.name] = Path(s.path).read_bytes()
        for s in by_group["fresh"]:
            os.unlink(s.path)
        return took

    full = timed_full_run()

    started = time.monotonic()
    killed_mid_run = 0
    runs = 0
    for n in range(ITERATIONS):
        if time.monotonic() - started > TIME_BUDGET:
            break
        if n and n % 25 == 0:
            full = timed_full_run()
        runs += 1
        # Every few runs, delete fresh secrets so generation (not only rotation) is interrupted too.
        if rnd.random() < 0.5:
            for s in by_group["fresh"]:
                if os.path.exists(s.path) and rnd.random() < 0.5:
                    os.unlink(s.path)
        rotate = [s.name for s in by_group["rot"] if rnd.random() < 0.6]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(secrets_dir, specs, rotate, w)
        os.close(w)
        os.read(r, 1)           # the child is about to plan and write
        os.close(r)
        time.sleep(rnd.uniform(0, full))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            killed_mid_run += 1
        check_tree(secrets_dir, specs, stable, last_rot)

    assert runs >= 50
    assert killed_mid_run >= runs // 4, f"only {killed_mid_run} of {runs} kills landed mid-run"

    # A clean run finishes the work and removes what crashed writers left behind.
    p = core.plan(specs, secrets_dir)
    core.apply(p)
    check_tree(secrets_dir, specs, stable, last_rot)
    leftovers = [n for _, _, files in os.walk(secrets_dir) for n in files if ".tmp" in n]
    assert leftovers == []
    assert not core.plan(specs, secrets_dir).changed
