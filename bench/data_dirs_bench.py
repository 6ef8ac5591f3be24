#!/usr/bin/env python3
"""Benchmark: data_dirs drift correction vs GNU ``chown -R`` vs ``ansible.builtin.file recurse``.

Builds a tree of N files (default 1,000,000; 1,000 per directory) under /tmp, owned 1000:1000 the
way the module wants it, then measures each contender twice: on a tree with a handful of wrong
entries (owners, world-writable modes) and on a tree that is already right. Every contender runs
as its own process so wall time and peak RSS (``wait4``) are its own:

  core check      the module's pure core (plan + one-pass walk), check mode: counts, changes nothing
  core fix        the same, fixing
  chown -R        GNU coreutils, the floor (it fixes owners only, and chowns every entry)
  file recurse    a playbook with ansible.builtin.file owner/group recurse=true (owners only); on a
                  smaller tree when --file-recurse-files is below --files, extrapolated linearly
  playbook        ansible-playbook with hyhome.bootstrap.data_dirs recurse=true on a compose project
                  mounting the tree (includes Ansible start-up and `docker compose config`)

The tree is removed afterwards, also on Ctrl-C. Caches are warm (nothing is dropped). Usage:

  . .venv/bin/activate && python bench/data_dirs_bench.py                 # 1,000,000 files
  python bench/data_dirs_bench.py --files 100000 --file-recurse-files 100000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UID = GID = 1000
PER_DIR = 1000
MAX_FILES = 3_000_000
BROKEN = 10


# ------------------------------------------------------------------------------------------ tree

def make_tree(tree: str, files: int) -> int:
    """Create ``files`` empty files, PER_DIR per directory, owned UID:GID; returns the entry count."""
    os.mkdir(tree, 0o750)
    os.chown(tree, UID, GID)
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
    entries, made, d = 1, 0, 0
    while made < files:
        sub = os.path.join(tree, f"d{d:05d}")
        os.mkdir(sub, 0o755)
        os.chown(sub, UID, GID)
        dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(min(PER_DIR, files - made)):
                fd = os.open(f"f{i:04d}", flags, 0o644, dir_fd=dfd)
                os.fchown(fd, UID, GID)
                os.close(fd)
                made += 1
                entries += 1
        finally:
            os.close(dfd)
        entries += 1
        d += 1
    return entries


def broken_entries(tree: str, files: int) -> list[str]:
    ndirs = (files + PER_DIR - 1) // PER_DIR
    picks = [os.path.join(tree, f"d{(k * 7919) % ndirs:05d}", f"f{(k * 104729) % min(PER_DIR, files):04d}")
             for k in range(BROKEN - 2)]
    return [*picks, os.path.join(tree, f"d{ndirs // 3:05d}"), os.path.join(tree, f"d{2 * ndirs // 3:05d}")]


def break_tree(paths: list[str]) -> None:
    """A handful of drift: wrong owners, and world-writable modes."""
    for i, p in enumerate(paths):
        if i % 3 == 2 and os.path.isfile(p):
            os.chmod(p, 0o666)  # noqa: S103 - the drift under test
        else:
            os.chown(p, 0, 0)


def make_right(paths: list[str]) -> None:
    for p in paths:
        os.chown(p, UID, GID)
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)


# ----------------------------------------------------------------------------------- measuring

def run(cmd: list[str], env=None, cwd=None) -> dict:
    """Run a process, return wall seconds, peak RSS in MB (its whole process tree) and output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"seconds": secs, "rss_mb": usage.ru_maxrss / 1024, "output": text}


def core_child(project_dir: str, tree: str, check: bool) -> None:
    """Child process: the module's core (plan + apply recurse) on a hand-built one-service project."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils import data_dirs as dd
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_model import Mount, Project, Service

    mounts = [Mount("bind", "/data", False, tree)]
    project = Project("bench", project_dir, [], services={
        "app": Service("app", "hyhome/busybox:local", None, f"{UID}:{GID}", mounts=mounts)})
    t0 = time.perf_counter()
    result = dd.apply(dd.plan(project, {}), check=check, recurse=True)
    secs = time.perf_counter() - t0
    print(json.dumps({"walk_seconds": secs, **result["totals"]}))


def playbook(path: str, task: str) -> None:
    with open(path, "w") as fh:
        fh.write("- name: bench\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
                 "  vars:\n    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n"
                 f"  tasks:\n    - name: bench task\n{task}")


def ansible_env() -> dict:
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return env


def recap_changed(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("localhost") and "changed=" in line:
            return line.split("changed=")[1].split()[0]
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--file-recurse-files", type=int, default=None,
                    help="tree size for ansible.builtin.file recurse (default: min(--files, 100000)); its "
                         "per-entry time (total minus a no-op playbook) is extrapolated linearly")
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--core-child", nargs=3, metavar=("PROJECT", "TREE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.core_child:
        core_child(args.core_child[0], args.core_child[1], args.core_child[2] == "check")
        return
    if not 1000 <= args.files <= MAX_FILES:
        raise SystemExit(f"--files must be between 1000 and {MAX_FILES}")
    fr_files = min(args.file_recurse_files or 100_000, args.files)
    vfs = os.statvfs(args.dir)
    if vfs.f_favail < 2 * args.files or vfs.f_bavail * vfs.f_frsize < 4096 * (args.files // PER_DIR + 10) * 2:
        raise SystemExit(f"not enough free inodes or space in {args.dir}")

    work = tempfile.mkdtemp(prefix="hyhome-data-dirs-bench-", dir=args.dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench(work, args.files, fr_files)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", work], check=False)
        print(f"removed {work}")


def bench(work: str, files: int, fr_files: int) -> None:
    os.chmod(work, 0o755)  # noqa: S103 - a parent of the tree, like a project directory
    tree = os.path.join(work, "data")
    t0 = time.perf_counter()
    entries = make_tree(tree, files)
    print(f"tree: {files:,} files in {entries - files - 1:,} directories ({entries:,} entries) under {tree}, "
          f"built in {time.perf_counter() - t0:.1f} s; {BROKEN} entries broken per 'needs fixing' run "
          f"(owners 0:0 and 0666 modes); warm caches; {os.cpu_count()} CPUs")
    broken = broken_entries(tree, files)
    with open(os.path.join(work, "compose.yaml"), "w") as fh:
        fh.write(f"services:\n  app:\n    image: hyhome/busybox:local\n    user: \"{UID}:{GID}\"\n"
                 "    volumes:\n      - ./data:/data\n")
    pb_module = os.path.join(work, "module.yml")
    playbook(pb_module, f"      hyhome.bootstrap.data_dirs:\n        project_dir: {work}\n        recurse: true\n")
    env = ansible_env()
    py = sys.executable
    me = os.path.abspath(__file__)
    pb_noop = os.path.join(work, "noop.yml")
    playbook(pb_noop, "      ansible.builtin.debug:\n        msg: start-up only\n")
    noop = min(run(["ansible-playbook", "-i", "localhost,", pb_noop], env=env)["seconds"] for _ in range(2))
    print(f"ansible-playbook start-up (no-op playbook, best of 2): {noop:.2f} s")

    rows = []   # (label, state, seconds, rss, note, extrapolated)

    def measure(label, state, cmd, note_fn=None, scale=1.0, env_=None, drift=broken):
        if state == "needs fixing":
            break_tree(drift)
        else:
            make_right(drift)
        r = run(cmd, env=env_)
        note = note_fn(r) if note_fn else ""
        secs = r["seconds"]
        if scale != 1.0:    # start-up once, per-entry work scaled
            note += f" measured {secs:.2f} s on {fr_files:,} files"
            secs = noop + (secs - noop) * scale
        rows.append((label, state, secs, r["rss_mb"], note, scale != 1.0))
        print(f"  {label:<46} {state:<13} {secs:8.2f} s  {r['rss_mb']:7.1f} MB  {note}", flush=True)
        if "own" in r:      # the module's own work: plan + walk, without interpreter start-up
            rows.append((label.replace("module core", "module's own work"), state, r["own"], r["rss_mb"], "", False))

    def core_note(r):
        d = json.loads(r["output"].strip().splitlines()[-1])
        r["own"] = d["walk_seconds"]
        return f"own work {d['walk_seconds']:.2f} s, checked {d['checked']:,}, fixed {d['fixed']}"

    def pb_note(r):
        return f"changed={recap_changed(r['output'])}"

    # ansible.builtin.file recurse: on the same tree, or on a smaller one and extrapolated linearly.
    fr_tree, fr_broken = tree, broken
    if fr_files < files:
        fr_tree = os.path.join(work, "small")
        make_tree(fr_tree, fr_files)
        fr_broken = broken_entries(fr_tree, fr_files)
    pb_file = os.path.join(work, "file.yml")
    playbook(pb_file, f"      ansible.builtin.file:\n        path: {fr_tree}\n        state: directory\n"
                      f"        owner: \"{UID}\"\n        group: \"{GID}\"\n        recurse: true\n")
    fr_scale = files / fr_files
    fr_label = "playbook: ansible.builtin.file recurse" + (f" (x{fr_scale:g})" if fr_scale != 1 else "")

    print(f"\n  {'contender':<46} {'tree':<13} {'time':>10}  {'peak RSS':>10}")
    for state in ("needs fixing", "already right"):
        measure("module core, check mode", state, [py, me, "--core-child", work, tree, "check"], core_note)
        measure("module core, fix", state, [py, me, "--core-child", work, tree, "fix"], core_note)
        measure("GNU chown -R (owners only)", state, ["chown", "-R", f"{UID}:{GID}", tree])
        measure("playbook: hyhome.bootstrap.data_dirs --check", state,
                ["ansible-playbook", "-i", "localhost,", "--check", pb_module], pb_note, env_=env)
        measure("playbook: hyhome.bootstrap.data_dirs", state,
                ["ansible-playbook", "-i", "localhost,", pb_module], pb_note, env_=env)
        measure(fr_label, state, ["ansible-playbook", "-i", "localhost,", pb_file], pb_note,
                scale=fr_scale, env_=env, drift=fr_broken)

    print(f"\nSummary ({files:,} files; ratios against GNU chown -R on the same tree state):")
    for state in ("needs fixing", "already right"):
        base = next(r[2] for r in rows if r[0].startswith("GNU chown") and r[1] == state)
        print(f"  {state}:")
        for label, st, secs, rss, _note, extrap in rows:
            if st == state:
                print(f"    {label:<46} {secs:8.2f} s  {secs / base:5.2f}x  {rss:7.1f} MB"
                      + (f"  (extrapolated from {fr_files:,} files: start-up + per-entry time x{fr_scale:g}; "
                         "RSS as measured there)" if extrap else ""))


if __name__ == "__main__":
    main()
