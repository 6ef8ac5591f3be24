"""Run a command in its own process group, and on timeout stop the whole group.

``subprocess.run(timeout=...)`` kills only the child it started. ``docker compose`` is a CLI
that execs a plugin (``docker-compose``) as its own child, so a timed-out ``subprocess.run``
leaves the plugin running (and holding memory, locks and the engine) after we gave up. ``run``
starts the child as the leader of a new session (hence of a new process group) and, on timeout
or on any interruption, sends SIGTERM to the group, waits a short grace period, then SIGKILLs
what is left. Interruptions: KeyboardInterrupt, and SIGTERM/SIGHUP sent to us while we wait
(turned into SystemExit when they would otherwise kill us silently). A new session no longer
receives the terminal's Ctrl-C nor a kill of our process group: that is why we forward both.
A SIGKILL of this process cannot be forwarded; whoever sends it must kill the process tree.

Pure core: no AnsibleModule. OSError from starting the program (FileNotFoundError, ...)
propagates unchanged, so callers keep their own "docker not found" messages.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading

from ansible_collections.hyhome.bootstrap.plugins.module_utils.errors import HyHomeError

GRACE_SECONDS = 2.0     # between SIGTERM and SIGKILL: lets compose release its locks


class CommandTimeout(HyHomeError):
    """The command did not finish within its timeout; its whole process group was stopped.

    ``stdout``/``stderr`` hold what it printed before that (may be empty)."""

    def __init__(self, argv, timeout: float, stdout="", stderr=""):
        self.argv = list(argv)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        cmd = shlex.join(str(a) for a in self.argv)
        if len(cmd) > 200:
            cmd = cmd[:197] + "..."
        super().__init__(f"'{cmd}' did not finish within {timeout:g}s; "
                         f"it and its child processes were stopped")


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process of the group is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its uid (setuid helper): nothing more we are allowed to do.
        return False
    return True


def _stop_group(proc: subprocess.Popen, grace: float):
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; returns (stdout, stderr)."""
    pgid = proc.pid                     # leader of its own session: pgid == pid
    out = err = None
    if _signal_group(pgid, signal.SIGTERM):
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, err = proc.communicate(timeout=grace)
    # SIGKILL the group even if the leader obeyed: a member may have ignored SIGTERM.
    _signal_group(pgid, signal.SIGKILL)
    if out is None:
        try:
            out, err = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            # Only a process that left our group (setsid) can still hold the pipes: stop reading.
            proc.kill()
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            proc.wait()
    return out, err


@contextlib.contextmanager
def _fatal_signals_raise():
    """While waiting, make SIGTERM/SIGHUP (default action: die at once) raise SystemExit instead,
    so the caller's cleanup stops the child's group. Only possible in the main thread, and only
    done when nobody installed a handler of their own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired = []

    def _raise(signum, _frame):
        if not fired:               # a second signal must not interrupt the cleanup of the first
            fired.append(signum)
            raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(argv, *, timeout: float | None, cwd=None, env=None, input=None, text: bool = True,
        grace: float = GRACE_SECONDS) -> subprocess.CompletedProcess:
    """Run ``argv`` to completion and return its CompletedProcess (stdout/stderr captured).

    Never raises on a non-zero exit (callers read ``returncode``). ``timeout`` (seconds, or None
    for no limit) is explicit on purpose. On timeout the whole process group is stopped and
    CommandTimeout is raised. stdin is ``input`` when given, else /dev/null (a compose command
    must never wait for a terminal)."""
    with _fatal_signals_raise():
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, text=text, start_new_session=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stdout, stderr = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _stop_group(proc, grace)
            empty = "" if text else b""
            raise CommandTimeout(argv, timeout, out or empty, err or empty) from None
        except BaseException:
            _stop_group(proc, grace)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
