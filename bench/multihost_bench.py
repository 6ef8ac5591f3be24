#!/usr/bin/env python3
"""Benchmark: day0 on two bare hosts over SSH against day0 on one.

Uses the `multihost` Molecule scenario's targets (Debian 12 containers reached over SSH, each with its own
nested Docker engine, nothing installed): `molecule create` makes them bare, then

  1. day0 on BOTH hosts at once (forks) until both stacks are healthy;
  2. targets recreated bare; day0 on ONE host (`--limit hyhome-mh1`);

and prints both wall times and their ratio. Goal (issue 10): two hosts <= 1.3 x one host. Each run is
full day0 from bare: engine install (apt), project and images delivery, secrets, CA + leaf on the
controller, data dirs, compose up with the health wait, verify. Prints figures; asserts nothing.

    . .venv/bin/activate && python bench/multihost_bench.py [--keep]

It uses the scenario's container names: not while `molecule test -s multihost` runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "multihost"


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run cmd from the repo root, append its output to log, return the wall time; exit on failure."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
    took = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"failed ({rc}) after {took:.0f}s: {' '.join(cmd)}; see {log}")
    return took


def ephemeral_dir() -> Path:
    """The scenario's ephemeral directory (Molecule's, the most recent one of this scenario)."""
    found = sorted(Path.home().glob(f".ansible/tmp/molecule.*.{SCENARIO}"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no ephemeral directory of the {SCENARIO} scenario under ~/.ansible/tmp")
    return found[-1]


def saved(log: Path) -> str:
    """Whether the last run saved the image archive on the controller (a cold cache: that run paid for it)."""
    last = log.read_text().rsplit("$ ansible-playbook", 1)[-1]
    task = last.split("TASK [hyhome.bootstrap.project : Save them on the controller", 1)[1:]
    paid = bool(task) and "changed:" in task[0].split("TASK [", 1)[0]
    return " (the image archive was saved in this run: cold cache)" if paid else ""


def day0(log: Path, eph: Path, *extra: str) -> float:
    env = dict(
        os.environ,
        MOLECULE_EPHEMERAL_DIRECTORY=str(eph),
        MOLECULE_PROJECT_DIRECTORY=str(REPO),
        MOLECULE_SCENARIO_NAME=SCENARIO,
        ANSIBLE_CONFIG=str(eph / "ansible.cfg"),
    )
    return run(["ansible-playbook", "-i", str(eph / "inventory"), "day0.yml", *extra], log, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the targets running at the end")
    parser.add_argument("--log", default="/tmp/hyhome-multihost-bench.log")
    args = parser.parse_args()
    log = Path(args.log)
    log.write_text("")

    def fresh() -> Path:
        run(["molecule", "destroy", "-s", SCENARIO], log)
        took = run(["molecule", "create", "-s", SCENARIO], log)
        print(f"  targets created bare in {took:.1f}s", flush=True)
        return ephemeral_dir()

    try:
        eph = fresh()
        two = day0(log, eph)
        print(f"two hosts, bare to healthy: {two:.1f}s{saved(log)}", flush=True)

        eph = fresh()
        one = day0(log, eph, "--limit", "hyhome-mh1")
        print(f"one host,  bare to healthy: {one:.1f}s{saved(log)}", flush=True)
        print(f"ratio two/one: {two / one:.2f} (goal <= 1.30)")
    finally:
        if not args.keep:
            run(["molecule", "destroy", "-s", SCENARIO], log)
    print(f"log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
