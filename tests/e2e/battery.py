"""Runtime battery of day0 on the embedded stack (issue 13): crash consistency, concurrency, leaks,
engine fault, disk full. Each part prints its figures and its duration; any failed check exits 1.

Run through tests/e2e/battery.sh (which holds the shared stack lock around each stack part and
cleans up). Runs the repository's day0.yml with its own venv against a copy of the tracked stack
files in a work directory (-e hyhome_project_dir), with the CA in that work directory too.

    battery.py --work DIR [--parts crash,concurrency,leaks,engine,diskfull] [--kills N] [--seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "day0.yml"
ANSIBLE = ROOT / ".venv" / "bin" / "ansible-playbook"
STACK_LOCK = "/tmp/hyhome-stack.lock"
PROJECT = "hyhome"
TEMP_MARK = ".tmp.hyhome-"
CA_LOCK = ".hyhome-ca.lock"   # local_ca's creation lock (plugins/module_utils/tls_files.py)
STEPS = ("env", "secrets", "tls", "data_dirs", "compose")
# The task of each step that writes (the kill lands after it starts).
WRITERS = {
    "env": ("Render .env",),
    "secrets": ("Generate missing secret files",),
    "tls": ("Local CA on the controller", "Gateway certificate in the project"),
    "data_dirs": ("Create bind-mount paths",),
    "compose": ("Bring the project to present",),
}
RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def say(msg: str) -> None:
    print(f"[battery] {msg}", flush=True)


class Failed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


@contextlib.contextmanager
def stack_lock():
    """The shared lock of the embedded stack (compose project "hyhome"), held for one part."""
    with open(STACK_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------- processes

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def kill_tree(root: int) -> int:
    """SIGKILL a process and every descendant. Ansible's workers call setsid() (their own process group
    and session), so a process-group kill misses them: freeze the tree first (SIGSTOP until no new
    process appears), then kill all of it at once. Returns the number of processes killed."""
    frozen: set[int] = set()
    while True:
        tree = _children()
        todo, found = [root], set()
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(tree.get(pid, []))
        new = found - frozen
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(frozen)


class Run:
    """One ansible-playbook day0.yml run, its output teed to a log file and scanned for TASK lines."""

    counter = 0

    def __init__(self, bat: Battery, name: str, *extra: str, env: dict | None = None):
        Run.counter += 1
        self.log = bat.logs / f"{Run.counter:03d}-{name}.log"
        self.argv = [str(ANSIBLE), str(PLAYBOOK), *bat.project_args, *extra]
        self.task = ""
        self.tasks: list[str] = []
        self.started = time.monotonic()
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **bat.env, **(env or {})}, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        with open(self.log, "wb") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if line.startswith(b"TASK ["):
                    with self._seen:
                        self.task = line[6:].split(b"]")[0].decode(errors="replace")
                        self.tasks.append(self.task)
                        self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_task(self, role: str, names: tuple[str, ...] = ("",), timeout: float = 300) -> bool:
        """Until a task of ``hyhome.bootstrap.<role>`` whose name starts with one of ``names`` starts;
        False when the run ended first."""
        deadline = time.monotonic() + timeout
        want = tuple(f"hyhome.bootstrap.{role} : {n}" for n in names)
        with self._seen:
            while True:
                if any(t.startswith(want) and "Validating arguments" not in t for t in self.tasks):
                    return True
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return False
                self._seen.wait(0.05)

    def kill(self) -> int:
        return kill_tree(self.proc.pid)

    def wait(self) -> Run:
        self.proc.wait()
        self._reader.join()
        self.rc = self.proc.returncode
        self.seconds = time.monotonic() - self.started
        self.out = self.log.read_text(errors="replace")
        return self

    def recap(self) -> tuple[int, int]:
        """(changed, failed) summed over the hosts of the recap."""
        rows = RECAP.findall(self.out)
        check(bool(rows), f"no recap in {self.log}")
        return sum(int(r[0]) for r in rows), sum(int(r[1]) + int(r[2]) for r in rows)


# ------------------------------------------------------------------------------------- checks

def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(dirs: list[Path]) -> dict[str, str]:
    """Hash of every regular file (temp files aside) under the given directories."""
    out = {}
    for base in dirs:
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.is_symlink() and TEMP_MARK not in path.name:
                out[str(path)] = sha(path)
    return out


class Consistency:
    """Every secret, key and certificate is absent or complete and valid; nothing pre-existing changed."""

    def __init__(self, stack: Path, ca: Path):
        self.stack, self.ca = stack, ca
        registry = yaml.safe_load((stack / "hyhome-secrets.yml").read_text())
        self.registry = registry if isinstance(registry, dict) else {}

    def dirs(self) -> list[Path]:
        return [self.stack / "secrets", self.ca]

    def problems(self, before: dict[str, str], removed: set[str]) -> tuple[list[str], set[str]]:
        """(problems, our temp files present: a kill may leave them, the next run must remove them)."""
        problems, temps = [], set()
        for base in self.dirs():
            if not base.is_dir():
                continue
            for path in base.rglob("*"):
                if not path.is_file() or path.is_symlink():
                    continue
                if TEMP_MARK in path.name:
                    temps.add(str(path))
                    continue
                if path.name == CA_LOCK:   # local_ca's creation lock: empty by design
                    continue
                why = self.invalid(path)
                if why:
                    problems.append(f"{path}: {why}")
        for name, digest in before.items():
            path = Path(name)
            if name in removed:
                continue
            if not path.exists():
                problems.append(f"{path}: existed before the run and is gone")
            elif sha(path) != digest and not self.follows_the_ca(path):
                problems.append(f"{path}: a pre-existing value changed")
        problems += self.pairs()
        return problems, temps

    def follows_the_ca(self, path: Path) -> bool:
        """The project's copy of the CA certificate, rewritten to the CA's current one. A kill between a new
        CA (the tls part may remove the CA) and the copy leaves the old copy; the next run catches up. A public
        certificate following its source, not a value that changed."""
        ca_cert = self.ca / "rootCA.pem"
        return (path == self.stack / "secrets" / "certs" / "rootCA.pem" and ca_cert.is_file()
                and path.read_bytes() == ca_cert.read_bytes())

    def invalid(self, path: Path) -> str:
        data = path.read_bytes()
        if not data:
            return "empty"
        name = path.parent.name if ".history" in path.parts else path.name
        spec = self.registry.get(name)
        if path.suffix == ".pem" or data.startswith(b"-----BEGIN"):
            return self._pem(data)
        if isinstance(spec, dict) and spec.get("kind") == "password":
            length = int(spec.get("length", 32))
            if not re.fullmatch(rb"[A-Za-z0-9]{%d}" % length, data):
                return f"not {length} alphanumeric characters ({len(data)} bytes)"
        elif b"\0" in data:
            return "holds a NUL byte"
        return ""

    @staticmethod
    def _pem(data: bytes) -> str:
        try:
            if b"PRIVATE KEY" in data:
                serialization.load_pem_private_key(data, password=None)
            else:
                x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            return f"PEM does not parse ({exc.__class__.__name__})"
        return ""

    def pairs(self) -> list[str]:
        """cert.pem matches key.pem and was signed by the CA; the CA's certificate matches its key."""
        out = []
        certs = self.stack / "secrets" / "certs"
        ca_key, ca_cert = self.ca / "rootCA-key.pem", self.ca / "rootCA.pem"
        leaf_key, leaf_cert = certs / "key.pem", certs / "cert.pem"
        loaded = {}
        for path in (ca_key, ca_cert, leaf_key, leaf_cert):
            if path.is_file() and not self._pem(path.read_bytes()):
                data = path.read_bytes()
                loaded[path] = (serialization.load_pem_private_key(data, None) if b"PRIVATE KEY" in data
                                else x509.load_pem_x509_certificate(data))

        def pub(obj):
            key = obj.public_key() if hasattr(obj, "public_key") else obj
            return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

        if ca_key in loaded and ca_cert in loaded and pub(loaded[ca_key]) != pub(loaded[ca_cert]):
            out.append(f"{ca_cert}: does not match {ca_key}")
        if leaf_key in loaded and leaf_cert in loaded and pub(loaded[leaf_key]) != pub(loaded[leaf_cert]):
            out.append(f"{leaf_cert}: does not match {leaf_key} (key written, certificate not yet)")
        if leaf_cert in loaded and ca_cert in loaded:
            try:
                loaded[leaf_cert].verify_directly_issued_by(loaded[ca_cert])
            except (ValueError, TypeError, Exception) as exc:   # InvalidSignature is no ValueError
                out.append(f"{leaf_cert}: not issued by {ca_cert} ({exc.__class__.__name__})")
        return out


# ------------------------------------------------------------------------------------- the battery

class Battery:
    def __init__(self, work: Path, seed: int):
        self.work = work
        self.stack = work / "stack"
        self.ca = work / "ca"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        # No CA in the host's trust stores: the battery tests files, and leaves the host as it was.
        self.project_args = ["-e", f"hyhome_project_dir={self.stack}", "-e", f"tls_ca_dir={self.ca}",
                             "-e", "tls_trust_install=false"]
        self.env = {"PYTHONUNBUFFERED": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
        self.consistency = Consistency(self.stack, self.ca) if self.stack.is_dir() else None
        self.values: set[bytes] = set()
        self.figures: list[str] = []
        self.temps: set[str] = set()   # temp files already reported by the crash part

    # --- helpers

    def copy_stack(self) -> None:
        """The tracked files of the embedded stack, as a fresh clone has them."""
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "stack"], capture_output=True,
                               check=True).stdout.split(b"\0")
        for name in filter(None, files):
            src, dst = ROOT / os.fsdecode(name), self.work / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        self.consistency = Consistency(self.stack, self.ca)

    def run(self, name: str, *extra: str, env: dict | None = None) -> Run:
        return Run(self, name, *extra, env=env).wait()

    def converge(self, name: str, *extra: str) -> Run:
        run = self.run(name, *extra)
        if run.rc != 0:
            print(run.out[-4000:], file=sys.stderr)
        check(run.rc == 0, f"{name}: day0 failed (rc {run.rc}, log {run.log})")
        self.collect_values()
        return run

    def collect_values(self) -> None:
        """Every secret value present now (kept for the leak search, which also covers replaced values)."""
        for base in (self.stack / "secrets", self.ca):
            if not base.is_dir():
                continue
            for path in base.rglob("*"):
                if not path.is_file() or TEMP_MARK in path.name:
                    continue
                data = path.read_bytes()
                if path.name.endswith(".pem") and b"PRIVATE KEY" not in data:
                    continue   # certificates are public
                if b"PRIVATE KEY" in data:   # a distinctive line of the key body
                    lines = [ln for ln in data.splitlines() if ln and not ln.startswith(b"-----")]
                    self.values.update(ln for ln in lines[1:3] if len(ln) >= 40)
                elif len(data.strip()) >= 12 and not data.startswith(b"hyhome-placeholder:"):
                    self.values.add(data.strip())

    def assert_healthy(self) -> None:
        """Every container of the project running healthy, or exited 0 (tests/e2e/lib.sh, as day0.sh checks)."""
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                             capture_output=True, text=True, check=True).stdout.split()
        check(bool(ids), "no container of the project")
        bad = subprocess.run(["bash", "-c", f'source "{ROOT}/tests/e2e/lib.sh" && unhealthy_containers {PROJECT}'],
                             capture_output=True, text=True, check=True).stdout.strip()
        check(not bad, f"containers not healthy: {bad}")

    def compose(self, *args: str) -> None:
        subprocess.run(["docker", "compose", *args], cwd=self.stack, capture_output=True, check=False)

    def figure(self, text: str) -> None:
        self.figures.append(text)
        say(text)

    # --- crash consistency

    def give_work(self, step: str, stack_up: bool) -> set[str]:
        """Remove some of what ``step`` writes, so the killed run has work to do there. Returns the removed
        files (they may come back with new values)."""
        secrets = self.stack / "secrets"
        removed: list[Path] = []
        if step == "env":
            removed.append(self.stack / ".env")
        elif step == "secrets":
            names = ["cache/redis_password"] + ([] if stack_up else ["postgres/app_db_password"])
            removed += [secrets / n for n in names]
        elif step == "tls":
            removed += [secrets / "certs" / "cert.pem", secrets / "certs" / "key.pem"]
            if not stack_up and self.rng.random() < 0.5:   # a new CA as well: only before anything trusts it
                shutil.rmtree(self.ca, ignore_errors=True)
        elif step == "data_dirs":
            if stack_up:
                subprocess.run(["chown", "-R", "0:0", str(self.stack / "data")], check=False)
            else:
                shutil.rmtree(self.stack / "data", ignore_errors=True)
        elif step == "compose":
            removed += [secrets / "certs" / "cert.pem"]   # a new certificate: the gateway is recreated
            self.compose("stop", "-t", "2", "web")
        gone = set()
        for path in removed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            gone.add(str(path))
        return gone

    def crash(self, kills: int) -> None:
        t0 = time.monotonic()
        self.copy_stack()
        plan = self._kill_plan(kills)
        landed, consistent, by_step = 0, 0, {s: 0 for s in STEPS}
        temps: set[str] = set()
        stack_up = False
        problems_all = []
        for i, step in enumerate(plan):
            if landed >= kills:
                break
            removed = self.give_work(step, stack_up)
            before = snapshot(self.consistency.dirs())
            if step == "compose":
                stack_up = True   # from now on the database may hold data: its secrets are not removed
                extra = []
            else:   # only the step (and env when .env is missing: every step reads the project through it)
                tags = step if step == "env" or (self.stack / ".env").exists() else f"env,{step}"
                extra = ["--tags", tags]
            run = Run(self, f"crash-{i:02d}-{step}", *extra)
            writer = (self.rng.choice(WRITERS[step]),)
            if not run.wait_task(step, writer):
                run.wait()
                say(f"kill {i}: the run ended before {step} (rc {run.rc}, log {run.log}); not counted")
                continue
            time.sleep(self.rng.uniform(0, 8.0 if step == "compose" else 0.3))
            at = run.task
            n = run.kill()
            run.wait()
            if run.rc != -signal.SIGKILL and run.rc != 0:
                say(f"kill {i}: the run failed before the kill (rc {run.rc}, log {run.log})")
            if run.rc == 0:
                say(f"kill {i}: the run ended before the kill; not counted")
                continue
            landed += 1
            step_at = at.split(" : ")[0].replace("hyhome.bootstrap.", "")
            by_step[step_at] = by_step.get(step_at, 0) + 1
            problems, left = self.consistency.problems(before, removed)
            new_temps = left - temps
            temps |= left
            say(f"kill {i}: SIGKILL of {n} processes after {run.seconds:.1f} s, during [{at}]: "
                f"{'consistent' if not problems else 'INCONSISTENT'}"
                f"{f', temp file(s) left: {sorted(new_temps)}' if new_temps else ''}")
            for p in problems:
                say(f"    {p}")
            problems_all += [f"kill {i} ({at}): {p}" for p in problems]
            consistent += not problems
            self.collect_values()
        # a plain run converges, healthy, and leaves no temp file
        before = snapshot(self.consistency.dirs())
        run = self.converge("crash-converge")
        self.assert_healthy()
        problems, left = self.consistency.problems(before, set())
        leftovers = [p for p in problems if "a pre-existing value changed" not in p]
        converged = not leftovers and not left
        self.temps = left
        self.figure(f"crash consistency: kills {landed} / consistent {consistent} / converged "
                    f"{'yes' if converged else 'NO'} (re-run {run.seconds:.0f} s; temp files left by kills "
                    f"{len(temps)}, after the re-run {len(left)}; kills per step {by_step}) "
                    f"in {time.monotonic() - t0:.0f} s")
        check(landed >= kills, f"only {landed} kills landed mid-run (wanted {kills})")
        check(not problems_all, "inconsistent state after a kill:\n  " + "\n  ".join(problems_all))
        check(converged, f"the re-run after the kills did not converge cleanly: {leftovers}; "
              f"temp files the re-run did not remove: {sorted(left)}")

    def _kill_plan(self, kills: int) -> list[str]:
        """Prepare-only kills spread over env, secrets, tls and data_dirs, then two during compose."""
        early = [STEPS[i % 4] for i in range(max(kills - 2, 0))]
        self.rng.shuffle(early)
        # spare points: a run that ends before its kill is not counted, the next one takes its place
        spare = [STEPS[i % 4] for i in range(4)]
        self.rng.shuffle(spare)
        return [*early, "compose", "compose", *spare]

    # --- concurrency

    def concurrency(self) -> None:
        t0 = time.monotonic()
        before = snapshot(self.consistency.dirs())
        # at -vvv: the run that gets the lock is also the leak part's normal run
        runs = [Run(self, f"concurrent-{n}", "-vvv") for n in "ab"]
        runs = [r.wait() for r in runs]
        rcs = sorted(r.rc for r in runs)
        refused = [r for r in runs if r.rc != 0]
        check(rcs == [0, 2], f"two runs at once: exit codes {rcs}, expected one 0 and one 2 "
              f"(logs {[str(r.log) for r in runs]})")
        msg = re.search(r"another day0 run \(pid \d+, started [0-9TZ:-]+\) holds \S+/\.hyhome/run\.lock; "
                        r"wait for it or stop it", refused[0].out)
        check(msg is not None, f"the refused run does not say why (log {refused[0].log})")
        check(all("Traceback" not in r.out for r in runs), "a traceback in a concurrent run")
        changed, _failed = next(r for r in runs if r.rc == 0).recap()
        check(changed == 0, f"the run that got the lock on the converged stack reported changed={changed}")
        self.assert_healthy()
        problems, left = self.consistency.problems(before, set())
        check(not problems and not left - self.temps, f"state after two concurrent runs: {problems}, "
              f"temp files {sorted(left - self.temps)}")
        # with a wait, the second one waits for the first and both succeed
        # (an unknown tag: only the lock, which is tagged always, and the roles' argument checks run)
        waiting = [Run(self, f"concurrent-wait-{n}", "--tags", "battery-lock-only",
                       env={"HYHOME_RUN_LOCK_WAIT": "300"}) for n in "ab"]
        waiting = [r.wait() for r in waiting]
        check([r.rc for r in waiting] == [0, 0],
              f"two runs with HYHOME_RUN_LOCK_WAIT: exit codes {[r.rc for r in waiting]}")
        problems, left = self.consistency.problems(before, set())
        check(not problems and not left - self.temps, f"state after two waiting runs: {problems}, "
              f"temp files {sorted(left - self.temps)}")
        self.figure(f"concurrency: refused 1 of 2 at once with rc 2 and the message \"{msg.group(0)[:60]}...\"; "
                    f"with a wait both passed ({waiting[0].seconds:.0f} s, {waiting[1].seconds:.0f} s); "
                    f"state unchanged in {time.monotonic() - t0:.0f} s")

    # --- leaks

    def leaks(self) -> None:
        t0 = time.monotonic()
        self.converge("leak-check-vvv", "-vvv", "--check", "--diff")
        if not any(self.logs.glob("*-concurrent-*.log")):   # else the concurrency part's -vvv run was the normal run
            self.converge("leak-normal-vvv", "-vvv")
        self.collect_values()
        check(len(self.values) >= 3, f"only {len(self.values)} secret values found to search for")
        places: dict[str, bytes] = {}
        for log in sorted(self.logs.glob("*.log")):
            places[f"log {log.name}"] = log.read_bytes()
        env = self.stack / ".env"
        if env.exists():
            places[".env"] = env.read_bytes()
        for path in (self.stack / ".hyhome").rglob("*"):
            if path.is_file():
                places[f"state {path.relative_to(self.stack)}"] = path.read_bytes()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                             capture_output=True, text=True, check=True).stdout.split()
        for doc in json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                             check=True).stdout) if ids else []:
            cfg = doc.get("Config") or {}
            seen = {"Env": cfg.get("Env"), "Labels": cfg.get("Labels"), "Cmd": cfg.get("Cmd"),
                    "Entrypoint": cfg.get("Entrypoint"), "Path": doc.get("Path"), "Args": doc.get("Args")}
            places[f"docker inspect {doc['Name']}"] = json.dumps(seen).encode()
        hits = [f"{where} holds the value of a secret" for where, data in places.items()
                for value in self.values if value in data]
        for h in hits:
            say(f"    LEAK: {h}")
        self.figure(f"leaks: {len(self.values)} secret values searched in {len(places)} places "
                    f"(every log of the battery incl. -vvv --check --diff and -vvv, .env, .hyhome state, "
                    f"docker inspect of {len(ids)} containers): {len(hits)} hits in {time.monotonic() - t0:.0f} s")
        check(not hits, f"{len(hits)} secret value(s) leaked")

    # --- engine fault

    def engine(self) -> None:
        t0 = time.monotonic()
        self.compose("stop", "-t", "2", "web", "api")
        run = Run(self, "engine-fault", env={})
        reached = run.wait_task("compose")
        time.sleep(self.rng.uniform(0.5, 2.0))
        stopped = stop_engine()
        time.sleep(2)
        start_engine()
        run.wait()
        say(f"engine fault: dockerd {'stopped' if stopped else 'NOT stopped'} during compose (reached: {reached}); "
            f"the run ended rc {run.rc}{' with a traceback' if 'Traceback' in run.out else ''}")
        check(reached and stopped, "the engine was not stopped during the compose step")
        check("Traceback" not in run.out, f"the run that lost its engine printed a traceback (log {run.log})")
        t1 = time.monotonic()
        self.converge("engine-rerun")
        self.assert_healthy()
        self.figure(f"engine fault: run during compose ended rc {run.rc}; daemon back, re-run converged healthy "
                    f"in {time.monotonic() - t1:.0f} s (part {time.monotonic() - t0:.0f} s)")

    # --- disk full

    def diskfull(self) -> None:
        t0 = time.monotonic()
        mnt = self.work / "tmpfs"
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "hyhome-battery", str(mnt)], check=True)
        try:
            self._diskfull(mnt)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        say(f"disk full: {time.monotonic() - t0:.0f} s")

    def _diskfull(self, mnt: Path) -> None:
        stack, ca = mnt / "stack", mnt / "ca"
        args = ["-e", f"hyhome_project_dir={stack}", "-e", f"tls_ca_dir={ca}", "-e", "hyhome_start_stack=false",
                "-e", "tls_trust_install=false", "--tags", "secrets,tls"]
        if (self.stack / "secrets").is_dir() and (self.ca / "rootCA.pem").exists():   # the values of the stack parts
            shutil.copytree(self.stack, stack, ignore=shutil.ignore_patterns("data"), symlinks=True)
            shutil.copytree(self.ca, ca)
        else:   # on its own: generate them first
            shutil.copytree(self.stack, stack, ignore=shutil.ignore_patterns("data", "secrets", ".hyhome", ".env"))
            first = Run(self, "diskfull-baseline", *args[:-2], "--tags", "env,secrets,tls").wait()
            check(first.rc == 0, f"disk full: baseline run on the tmpfs failed (log {first.log})")
        consistency = Consistency(stack, ca)
        secrets = stack / "secrets"
        removed = {str(secrets / "cache" / "redis_password"), str(secrets / "certs" / "cert.pem"),
                   str(secrets / "certs" / "key.pem")}
        for path in removed:
            Path(path).unlink()
        before = snapshot(consistency.dirs())
        results = []
        for free_pages in (0, 1):   # full from the start; full after one more page (one file)
            filler = mnt / "filler"
            fill(filler)
            size = filler.stat().st_size
            os.truncate(filler, max(size - free_pages * 4096, 0))
            run = Run(self, f"diskfull-{free_pages}-pages", *args).wait()
            problems, left = consistency.problems(before, removed)
            nospace = re.search(r"(?m)^.*(No space left on device|ENOSPC|disk full).*$", run.out)
            results.append((free_pages, run.rc, bool(nospace), problems, len(left)))
            say(f"disk full with {free_pages} free page(s): rc {run.rc}; message: "
                f"{nospace.group(0).strip()[:200] if nospace else '(none)'}; "
                f"{problems if problems else 'consistent'}; temp files left {sorted(left)}")
            check("Traceback" not in run.out, f"disk full: traceback (log {run.log})")
            filler.unlink()
        fine = Run(self, "diskfull-space-back", *args).wait()
        problems, left = consistency.problems(before, removed)
        missing = [p for p in removed if not Path(p).exists()]
        self.figure(f"disk full: {len(results)} runs on a full 2 MB tmpfs: failed clearly "
                    f"{sum(1 for r in results if r[1] != 0 and r[2])}, consistent "
                    f"{sum(1 for r in results if not r[3])}, partial/temp files left {sum(r[4] for r in results)}; "
                    f"space back: rc {fine.rc}, restored {len(removed) - len(missing)}/{len(removed)}")
        for free_pages, rc, clear, problems, left in results:
            check(rc != 0, f"disk full ({free_pages} free pages): the run did not fail")
            check(clear, f"disk full ({free_pages} free pages): no clear 'No space left on device' message")
            check(not problems, f"disk full ({free_pages} free pages): {problems}")
            check(left == 0, f"disk full ({free_pages} free pages): {left} temp file(s) left")
        check(fine.rc == 0 and not missing and not problems, f"disk full: with space back the run did not converge "
              f"(rc {fine.rc}, missing {missing}, {problems}, log {fine.log})")


def fill(path: Path) -> None:
    """Fill the file system holding ``path``, to the last page."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------- the engine

def dockerd_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False).stdout.split()
    return int(out[0]) if out else None


def stop_engine(timeout: float = 60) -> bool:
    pid = dockerd_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.2)
    return False


def start_engine() -> None:
    """scripts/lib/engine.sh starts the daemon the way this machine runs it (systemd, or dockerd in the background)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "lib" / "engine.sh")], check=True, stdout=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--parts", default="crash,concurrency,leaks,engine,diskfull")
    parser.add_argument("--kills", type=int, default=int(os.environ.get("BATTERY_KILLS", "10")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("BATTERY_SEED", str(int(time.time())))))
    args = parser.parse_args()
    bat = Battery(args.work.resolve(), args.seed)
    parts = [p for p in args.parts.split(",") if p]
    say(f"parts {','.join(parts)}, seed {args.seed} (BATTERY_SEED={args.seed} repeats the kill points)")
    t0 = time.monotonic()
    failures = []

    def part(name: str, body) -> None:
        start = time.monotonic()
        try:
            body()
        except Failed as exc:
            failures.append(f"{name}: {exc}")
            say(f"FAIL {name}: {exc}")
        say(f"{name}: {time.monotonic() - start:.0f} s")

    stack_parts = [p for p in parts if p != "diskfull"]
    if stack_parts:
        # One hold for every part on the stack: the compose project "hyhome" and its ports are shared with
        # the other e2e scripts, which must not take it over between two parts.
        with stack_lock():
            try:
                for name in stack_parts:
                    if name != "crash" and not (bat.stack / "secrets").is_dir():
                        part(name, lambda n=name: check(False, f"{n} needs the crash part first"))
                        continue
                    part(name, (lambda: bat.crash(args.kills)) if name == "crash" else getattr(bat, name))
            finally:
                if bat.stack.is_dir():
                    bat.compose("down", "-v", "--remove-orphans", "-t", "5")
    if "diskfull" in parts:
        if bat.consistency is None:
            bat.copy_stack()
        part("diskfull", bat.diskfull)
    say(f"all parts in {time.monotonic() - t0:.0f} s")
    for f in bat.figures:
        print(f"  {f}")
    if failures:
        say(f"{len(failures)} part(s) failed; logs in {bat.logs}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
