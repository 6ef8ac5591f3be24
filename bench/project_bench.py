#!/usr/bin/env python3
"""Benchmark: preflight and validate on the realistic project (tests/fixtures/realistic/).

On a fresh copy of the project, as a new user would run them before day0 (no .env, no secrets):

  1. `scripts/preflight-compose.sh <copy>` and `scripts/validate-docker-compose.sh <copy>`, the
     stand-alone entry points (Python start-up, one `docker compose config`, every check);
  2. the same two steps as day0 runs them, through their modules in one `ansible-playbook` run
     (`playbooks/preflight.yml`-like tasks, results not failing the play), with the project
     context cold (first step computes it) and warm (both reuse the one from the previous run).

Each figure is the median of --runs runs. Target (issue 9): each < 2 s. Exit codes of the checks
are ignored (the unprepared copy has findings by design). Prints figures; asserts nothing.

    . .venv/bin/activate && python bench/project_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "realistic"

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: preflight
      hyhome.bootstrap.compose_preflight:
        project_dir: "{project}"
        start_stack: false
      register: preflight
    - name: validate
      hyhome.bootstrap.compose_validate:
        project_dir: "{project}"
      register: validate
"""


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                         env=None if env is None else {**os.environ, **env})
    elapsed = time.perf_counter() - t
    if out.returncode not in (0, 1):   # 1 = findings; anything else is a broken run
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}")
    return elapsed, out.stdout


def task_seconds(output: str, name: str) -> float:
    """The task's duration from the profile_tasks callback's recap line."""
    m = re.search(rf"^{re.escape(name)} -+ ([0-9.]+)s$", output, re.MULTILINE)
    if not m:
        sys.exit(f"no timing for task {name!r} in:\n{output[-2000:]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if not (FIXTURE / "docker-compose.yml").is_file():
        sys.exit(f"{FIXTURE} is not there yet")
    work = Path(tempfile.mkdtemp(prefix="hyhome-project-bench."))
    project = work / "realistic"
    shutil.copytree(FIXTURE, project)
    playbook = work / "steps.yml"
    playbook.write_text(PLAYBOOK.format(project=project))
    ansible = [str(REPO / ".venv/bin/ansible-playbook"), str(playbook)]
    profile = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks,hyhome.bootstrap.preload",
               "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    figures: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):
            figures.setdefault("preflight-compose.sh (stand-alone)", []).append(
                timed([str(REPO / "scripts/preflight-compose.sh"), str(project)], REPO)[0])
            figures.setdefault("validate-docker-compose.sh (stand-alone)", []).append(
                timed([str(REPO / "scripts/validate-docker-compose.sh"), str(project)], REPO)[0])
            shutil.rmtree(project / ".hyhome", ignore_errors=True)
            _, cold = timed(ansible, REPO, profile)
            _, warm = timed(ansible, REPO, profile)
            for label, out in (("cold context", cold), ("warm context", warm)):
                for step in ("preflight", "validate"):
                    figures.setdefault(f"{step} module task, {label}", []).append(task_seconds(out, step))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import load_raw

    raw = load_raw(str(FIXTURE))
    services = {name for rf in raw.compose_files for name in ((rf.data or {}).get("services") or {})}
    print(f"preflight and validate on {FIXTURE.relative_to(REPO)} ({len(services)} services, {len(raw.files)} files), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, median of {args.runs}")
    print(f"{'':46}{'seconds':>9}")
    for label, values in figures.items():
        print(f"{label:46}{statistics.median(values):9.2f}   target < 2   (max {max(values):.2f})")


if __name__ == "__main__":
    main()
