"""Run one playbook through ansible-runner's Python API: events in, cancellation out, artifacts kept clean.

Where things go: ``<root>/.hyhome/runner/`` is runner's private data directory (0700, created by the
collection's one state-directory creator, with its ``.gitignore``); each run's artifacts are under
``artifacts/<ident>/`` and only the last ``keep`` runs are kept (runner's ``rotate_artifacts``).

No secret value lands there:
- ``suppress_env_files``: runner writes no ``env/extravars`` / ``env/envvars`` / ``env/passwords``;
- runner's ``command`` artifact (argv, cwd and the whole environment) is rewritten as soon as the
  run starts with the environment reduced to variable names and every inline ``-e`` value masked;
- no fact cache in the artifacts (runner's default ``jsonfile`` cache would store the hosts'
  facts, their environment included);
- job events and ``stdout`` carry what Ansible displays, where ``no_log`` results are censored by
  Ansible itself; a scan test proves it (tests/unit/test_cli_artifacts.py).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

RUNNER_DIR = "runner"
DEFAULT_KEEP = 10
# How often runner polls the cancel callback while ansible-playbook is silent (runner's default: 5 s).
POLL_SECONDS = 0.1
MASK = "********"


class UsageError(Exception):
    """Bad usage detected before anything runs (exit code 4)."""


@dataclass
class Invocation:
    """What to run: a playbook of ``root`` and its ansible-playbook options."""

    root: str
    playbook: str
    inventories: list[str] = field(default_factory=list)
    extravars: list[str] = field(default_factory=list)   # -e values, verbatim, in order
    limit: str | None = None
    tags: str | None = None
    skip_tags: str | None = None
    check: bool = False
    diff: bool = False
    verbosity: int = 0

    def cmdline(self) -> list[str]:
        args: list[str] = []
        for inv in self.inventories:
            args += ["-i", inv]
        for ev in self.extravars:
            args += ["-e", ev]
        if self.check:
            args.append("--check")
        if self.diff:
            args.append("--diff")
        if self.verbosity:
            args.append("-" + "v" * self.verbosity)
        return args


def state_dir(root: str) -> str:
    """``<root>/.hyhome/runner`` (0700), through the collection's one state-directory creator."""
    from ansible_collections.hyhome.bootstrap.plugins.module_utils.project_context import ensure_state_dir

    base = ensure_state_dir(root)
    path = os.path.join(base, RUNNER_DIR)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_json(path: str, doc) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def _settings(private_dir: str) -> None:
    """runner reads its settings only from ``env/settings`` (no secret in it)."""
    env = os.path.join(private_dir, "env")
    os.makedirs(env, mode=0o700, exist_ok=True)
    want = {"pexpect_timeout": POLL_SECONDS, "suppress_ansible_output": True}
    path = os.path.join(env, "settings")
    try:
        with open(path, encoding="utf-8") as fh:
            if json.load(fh) == want:
                return
    except (OSError, ValueError):
        pass
    _write_json(path, want)


def masked_command(doc: dict) -> dict:
    """runner's ``command`` artifact without values: env names only, inline ``-e`` values masked."""
    argv = list(doc.get("command") or [])
    out = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(arg if arg.startswith("@") else MASK)
            mask_next = False
        elif arg in ("-e", "--extra-vars"):
            out.append(arg)
            mask_next = True
        elif arg.startswith("--extra-vars=") and not arg.startswith("--extra-vars=@"):
            out.append("--extra-vars=" + MASK)
        elif arg.startswith("-e") and len(arg) > 2 and not arg.startswith("-e@"):
            out.append("-e" + MASK)
        else:
            out.append(arg)
    env = doc.get("env") or {}
    return {"command": out, "cwd": doc.get("cwd"), "env": sorted(env.keys() if isinstance(env, dict) else env)}


def scrub_command_file(artifact_dir: str) -> None:
    path = os.path.join(artifact_dir, "command")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return
    if isinstance(doc.get("env"), dict) or doc != masked_command(doc):
        _write_json(path, masked_command(doc))


def remove_partials(artifact_dir: str) -> None:
    """Event files a killed run left half-done (runner merges and removes them on a normal run)."""
    for pattern in ("*-partial.json", "*.tmp"):
        for path in glob.glob(os.path.join(artifact_dir, "job_events", pattern)):
            with contextlib.suppress(OSError):
                os.unlink(path)


def descendants(root_pid: int) -> list[int]:
    """Every live descendant of ``root_pid`` (Linux /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], list(children.get(root_pid, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def stop_tree(root_pid: int, grace: float = 3.0) -> None:
    """Stop everything this process started. ansible-runner's cancellation kills ansible-playbook's
    process group only, but Ansible's task workers run in sessions of their own: without this, the
    running module would go on after Ctrl-C. Each descendant's process group gets SIGTERM (modules
    and the commands they run can stop cleanly), then SIGKILL after ``grace`` seconds."""
    own = os.getpgid(0)
    groups = set()
    for pid in descendants(root_pid):
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups.discard(own)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
                time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class Cancel:
    """SIGINT / SIGTERM set a flag that runner's cancel callback reads; on the first poll after it,
    the run's process tree is stopped, then runner kills what is left and reports "canceled"."""

    def __init__(self):
        self.requested = False
        self.stopped = False
        self._previous: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame):
        self.requested = True

    def __call__(self) -> bool:
        if self.requested and not self.stopped:
            self.stopped = True
            stop_tree(os.getpid())
        return self.requested


def ident(command: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}-{command}"


def run(inv: Invocation, command: str, on_event, keep: int = DEFAULT_KEEP, cancel: Cancel | None = None):
    """Run the playbook; ``on_event(event)`` sees each runner event. Returns (runner, artifact_dir)."""
    import ansible_runner

    private_dir = state_dir(inv.root)
    _settings(private_dir)
    cancel = cancel or Cancel()
    artifact_dir: list[str] = []

    def status_handler(data, runner_config=None):
        if data.get("status") == "running" and runner_config is not None:
            artifact_dir.append(runner_config.artifact_dir)
            scrub_command_file(runner_config.artifact_dir)

    def event_handler(event):
        on_event(event)
        return True

    # The ansible-playbook of this interpreter's environment (the venv), even when it is not activated.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
    envvars = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "PATH": path}
    r = ansible_runner.run(
        private_data_dir=private_dir,
        project_dir=inv.root,
        playbook=os.path.join(inv.root, inv.playbook),
        cmdline=" ".join(_quote(a) for a in inv.cmdline()) or None,
        limit=inv.limit,
        tags=inv.tags,
        skip_tags=inv.skip_tags,
        envvars=envvars,
        ident=ident(command),
        rotate_artifacts=keep,
        suppress_env_files=True,
        fact_cache_type="memory",
        quiet=True,
        event_handler=event_handler,
        status_handler=status_handler,
        cancel_callback=cancel,
    )
    adir = artifact_dir[0] if artifact_dir else r.config.artifact_dir
    scrub_command_file(adir)
    remove_partials(adir)
    return r, adir


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
