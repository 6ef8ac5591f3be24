"""The hyhome command's overhead over plain ansible-playbook, for a no-op day0 (target: < 1 s).

Runs the same converged day0 alternately as `ansible-playbook day0.yml` and as `hyhome day0`
(--plain and --json), N times each, and prints the median and minimum wall times and the
difference. Default: the CLI fixture project (tests/fixtures/cli/project, no Docker), converged
once first in a temporary directory. `--real` times the repository's own day0.yml instead: the
embedded stack must be up and converged, and the run must hold the stack lock:

    python bench/cli_bench.py                      # fixture project, 5 runs each
    flock /tmp/hyhome-stack.lock python bench/cli_bench.py --real --runs 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "cli" / "project"
BIN = Path(sys.executable).parent


def timed(argv: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the whole process tree) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="the repository's day0.yml on the running embedded stack")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    with tempfile.TemporaryDirectory(prefix="hyhome-cli-bench-") as tmp:
        if args.real:
            root, extra = REPO, []
        else:
            root = Path(tmp) / "project"
            shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(".hyhome"))
            fx = Path(tmp) / "fx"
            fx.mkdir()
            extra = ["-e", f"fx_dir={fx}"]
        env["HYHOME_ROOT"] = str(root)
        variants = {
            "ansible-playbook day0.yml": [str(BIN / "ansible-playbook"), "day0.yml", *extra],
            "hyhome day0 --plain": [str(BIN / "hyhome"), "day0", "--plain", *extra],
            "hyhome day0 --json": [str(BIN / "hyhome"), "day0", "--json", *extra],
        }
        timed(variants["ansible-playbook day0.yml"], root, env)   # converge (and warm caches)
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, argv in variants.items():   # interleaved: load changes hit every variant alike
                w, c = timed(argv, root, env)
                wall[name].append(w)
                cpu[name].append(c)

    base_wall = statistics.median(wall["ansible-playbook day0.yml"])
    base_cpu = statistics.median(cpu["ansible-playbook day0.yml"])
    print(f"no-op day0 of {'the repository (embedded stack)' if args.real else 'the CLI fixture project'}, "
          f"{args.runs} runs each, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<28} {'wall median':>12} {'wall min':>9} {'wall overhead':>14} {'CPU median':>11} "
          f"{'CPU overhead':>13}")
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<28} {w:>11.2f}s {min(wall[name]):>8.2f}s {w - base_wall:>+13.2f}s {c:>10.2f}s "
              f"{c - base_cpu:>+12.2f}s")
    overhead = max(statistics.median(wall[n]) for n in variants if n.startswith("hyhome")) - base_wall
    cpu_overhead = max(statistics.median(cpu[n]) for n in variants if n.startswith("hyhome")) - base_cpu
    print(f"CLI overhead: wall {overhead:+.2f} s, CPU {cpu_overhead:+.2f} s (target < 1 s); wall time is only "
          "meaningful on an idle machine")

if __name__ == "__main__":
    main()
