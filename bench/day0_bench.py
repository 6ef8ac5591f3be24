#!/usr/bin/env python3
"""Benchmark: day0 against a bare `docker compose up -d --wait` of the same prepared project.

Side by side in one run, images already built (the build is done first and not timed):

  1. day0 first run on a fresh copy of the embedded stack (secrets, CA + certificate, directories,
     .env, validate, bring-up with health wait, verify);
  2. the same containers from scratch with bare Compose: `docker compose down -v`, the data
     directories emptied (their owners kept), then `docker compose up -d --wait`;
  3. day0 no-op re-run on the converged host (median of three), and a bare `docker compose up -d
     --wait` no-op;
  4. project-context computations (`docker compose config` runs, counted from the modules'
     `project_context` results): in the first run, in a no-op run, and in a no-op run whose context
     cache was deleted first (one computation per run when .env does not change mid-run).

Targets: first-run overhead <= 15 s beyond Compose (issue 6); no-op re-run <= 5 s and one
project-context computation per run (issue 9). Prints figures; asserts nothing.

    . .venv/bin/activate && python bench/day0_bench.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = "hyhome"


def sh(cmd: list[str], cwd: Path, log: Path | None = None, env: dict | None = None) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                         env=None if env is None else {**os.environ, **env})
    elapsed = time.perf_counter() - t
    if log is not None:
        log.write_text(out.stdout)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}")
    return elapsed


# Results as JSON (-v prints every registered result), to count the modules' project_context fields.
VERBOSE_JSON = {"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}


def computations(log: Path) -> tuple[int, int]:
    """(misses, hits) of the project context over one verbose day0 run."""
    found = re.findall(r'"project_context": \{"cache": "(hit|miss|off)"', log.read_text())
    return found.count("miss"), found.count("hit")


def running_project() -> bool:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                         capture_output=True, text=True, check=True)
    return bool(out.stdout.strip())


def empty_dir_keep_owner(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the stack running and the copy in place")
    args = ap.parse_args()
    if running_project():
        sys.exit(f"a compose project named {PROJECT!r} already exists on this engine; bring it down first")

    work = Path(tempfile.mkdtemp(prefix="hyhome-day0-bench."))
    stack = work / "stack"
    shutil.copytree(REPO / "stack", stack, ignore=shutil.ignore_patterns("secrets", "data", ".env", ".hyhome"))
    playbook = [str(REPO / ".venv/bin/ansible-playbook"), "day0.yml", "-e", f"hyhome_project_dir={stack}",
                "-e", f"tls_ca_dir={work}/ca", "-e", "tls_trust_install=false"]
    compose = ["docker", "compose", "--project-directory", str(stack)]
    try:
        # Untimed: make sure every image exists, so neither side pays for a build.
        shutil.copy(stack / ".env.example", stack / ".env")
        sh([*compose, "build", "-q"], stack)
        (stack / ".env").unlink()

        first = sh([*playbook, "-v"], REPO, work / "day0-first.log", VERBOSE_JSON)
        first_ctx = computations(work / "day0-first.log")
        noops = sorted(sh(playbook, REPO, work / f"day0-noop{i}.log") for i in range(3))
        noop = noops[1]
        sh([*playbook, "-v"], REPO, work / "day0-noop-verbose.log", VERBOSE_JSON)
        noop_ctx = computations(work / "day0-noop-verbose.log")
        (stack / ".hyhome" / "project-context.json").unlink(missing_ok=True)
        cold = sh([*playbook, "-v"], REPO, work / "day0-noop-cold.log", VERBOSE_JSON)
        cold_ctx = computations(work / "day0-noop-cold.log")

        sh([*compose, "down", "-v"], stack)
        for d in ("data/postgres", "data/prometheus", "data/alertmanager"):
            if (stack / d).is_dir():
                empty_dir_keep_owner(stack / d)
        bare = sh([*compose, "up", "-d", "--wait"], stack)
        bare_noop = sh([*compose, "up", "-d", "--wait"], stack)
        converge_after_bare = sh(playbook, REPO, work / "day0-after-bare.log")
    finally:
        if not args.keep:
            subprocess.run([*compose, "down", "-v"], cwd=stack, capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)

    print(f"day0 benchmark on {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} (images prebuilt)")
    print(f"{'':44}{'seconds':>9}")
    print(f"{'day0 first run (everything)':44}{first:9.1f}")
    print(f"{'bare docker compose up -d --wait (from empty)':44}{bare:9.1f}")
    print(f"{'  day0 overhead beyond compose':44}{first - bare:9.1f}   target <= 15")
    print(f"{'day0 no-op re-run (median of 3)':44}{noop:9.1f}   target <= 5   (runs: "
          + ", ".join(f"{x:.1f}" for x in noops) + ")")
    print(f"{'day0 no-op, context cache deleted first':44}{cold:9.1f}")
    print(f"{'bare docker compose up -d --wait (no-op)':44}{bare_noop:9.1f}")
    print(f"{'day0 after a bare compose up (adopts it)':44}{converge_after_bare:9.1f}")
    print("project-context computations (docker compose config runs) per day0 run, target 1:")
    for label, (miss, hit) in (("first run (.env written mid-run: 2)", first_ctx), ("no-op re-run", noop_ctx),
                               ("no-op, context cache deleted first", cold_ctx)):
        print(f"  {label:42}{miss:9d}   (reused by {hit} step(s))")
    if args.keep:
        print(f"kept: {work}")


if __name__ == "__main__":
    main()
