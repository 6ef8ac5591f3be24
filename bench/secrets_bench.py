#!/usr/bin/env python3
"""Benchmark: 100 secrets with one `hyhome.bootstrap.secret_files` call vs the builtin way,
`lookup('ansible.builtin.password')` + `ansible.builtin.copy` in a loop (force: false, mode 0400),
same machine, same run, first run and re-run. Prints times and ratios; asserts nothing.

    . .venv/bin/activate && python bench/secrets_bench.py [--count 100] [--registry-only]

By default the module derives the 100 secrets from a compose project (one `docker compose config`
call included in its time), as day0 does; `--registry-only` skips Compose. Times are wall-clock times
of whole `ansible-playbook` runs; "net" subtracts a one-`debug`-task playbook (interpreter start-up,
inventory, fork), which both ways pay once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_project(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    lines = ["name: hyhome-secrets-bench", "services:", "  app:", "    image: hyhome/busybox:local",
             '    user: "1000:1000"', "    secrets:"]
    lines += [f"      - s{i:03d}" for i in range(count)]
    lines.append("secrets:")
    for i in range(count):
        lines += [f"  s{i:03d}:", f"    file: ./secrets/s{i:03d}"]
    (root / "compose.yaml").write_text("\n".join(lines) + "\n")


def playbooks(work: Path, count: int, registry_only: bool) -> dict[str, Path]:
    mod_dir = work / "module"
    loop_dir = work / "loop"
    if registry_only:
        (mod_dir / "secrets").mkdir(parents=True)
        reg = "\n".join(f"          s{i:03d}: {{file: s{i:03d}}}" for i in range(count))
        args = f"        secrets_dir: {mod_dir}/secrets\n        derive_from_compose: false\n        registry:\n{reg}\n"
    else:
        write_project(mod_dir, count)
        args = f"        project_dir: {mod_dir}\n"
    module = f"""- name: One module call
  hosts: all
  gather_facts: false
  tasks:
    - name: {count} secrets
      hyhome.bootstrap.secret_files:
{args}"""
    loop = f"""- name: Builtin loop
  hosts: all
  gather_facts: false
  tasks:
    - name: Secrets directory
      ansible.builtin.file:
        path: {loop_dir}/secrets
        state: directory
        mode: "0700"
    - name: {count} secrets, lookup('password') + copy
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.password', '/dev/null', length=32,
                          chars=['ascii_letters','digits']) }}}}"
        dest: "{loop_dir}/secrets/s{{{{ '%03d' | format(item) }}}}"
        mode: "0400"
        owner: "1000"
        group: "1000"
        force: false
      loop: "{{{{ range({count}) | list }}}}"
      no_log: true
"""
    empty = """- name: Baseline
  hosts: all
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.debug:
        msg: baseline
"""
    out = {}
    for name, text in (("module", module), ("loop", loop), ("baseline", empty)):
        p = work / f"{name}.yml"
        p.write_text(text)
        out[name] = p
    return out


def run(playbook: Path) -> float:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    cmd = [os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{playbook.name} failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--registry-only", action="store_true", help="do not derive from a compose project")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hyhome-secrets-bench-"))
    try:
        books = playbooks(work, a.count, a.registry_only)
        base = min(run(books["baseline"]) for _ in range(2))
        t = {}
        for phase in ("first", "rerun"):
            t[("module", phase)] = run(books["module"])
            t[("loop", phase)] = run(books["loop"])
        n_mod = sum(1 for _ in (work / "module" / "secrets").glob("s*"))
        n_loop = sum(1 for _ in (work / "loop" / "secrets").glob("s*"))
        assert n_mod == n_loop == a.count, (n_mod, n_loop)
        src = "registry" if a.registry_only else "compose project (docker compose config)"
        print(f"{a.count} secrets, derived from: {src}; baseline playbook (1 debug task): {base:.2f} s")
        print(f"{'run':<8}{'module':>10}{'loop':>10}{'ratio':>8}{'module net':>12}{'loop net':>10}{'net ratio':>11}")
        for phase in ("first", "rerun"):
            m, lp = t[("module", phase)], t[("loop", phase)]
            mn, ln = max(m - base, 1e-3), max(lp - base, 1e-3)
            print(f"{phase:<8}{m:>9.2f}s{lp:>9.2f}s{lp / m:>7.1f}x{mn:>11.2f}s{ln:>9.2f}s{ln / mn:>10.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
