# Copyright: Hy-Home Bootstrap maintainers
# Apache License 2.0
"""The day0 run lock: one run at a time on a project, held for the whole run, never left stale.

The lock is ``flock(LOCK_EX)`` on ``<project>/.hyhome/run.lock``. The ``hyhome.bootstrap.run_lock``
action takes it in the task's worker process (so waiting and refusing are an ordinary task result),
then hands the locked file descriptor to the ``ansible-playbook`` main process over a Unix socket
the ``hyhome.bootstrap.run_lock`` callback opened there before any worker was forked. A descriptor
in flight or received keeps the lock, so the lock lives exactly as long as the main process (and
any worker still running): when the run ends, fails or is SIGKILLed, the kernel releases it. There
is no lock file to clean up; the file only says who holds it (pid and start time, for the message).

Pure logic (no Ansible) lives here so it is unit-tested directly:

    acquire(path, wait, create, own_pid, info) -> fd | THIS_RUN | None    (raises RunLockBusy)
    holder_text(raw) -> "pid N, started T" | ""
    holder_info(pid, started) -> bytes
    hand_over(fd, path) / receive() -> {path: fd}                        (the socket to the main process)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import time

LOCK_NAME = "run.lock"
MAX_INFO = 4096           # the lock file is a few bytes; anything larger is not ours
POLL = 0.1                # seconds between two tries while waiting
GRACE = 1.0               # a new holder writes its pid right after locking: give it this long
THIS_RUN = -2             # acquire(): the holder is this very run (another host's task of the same run)

_STARTED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

# Set in the main process by the callback (inherited by every forked worker):
# the socket pair the workers hand locked descriptors over, and what the main process holds.
CHANNEL: tuple[socket.socket, socket.socket] | None = None
HELD: dict[str, int] = {}


class RunLockBusy(Exception):
    """Another run holds the lock (after waiting as long as asked)."""


class RunLockError(Exception):
    """The lock file cannot be used (a symlink, not a regular file, another user's, unreadable)."""


def holder_info(pid: int, started: float | None = None) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if started is None else started))
    return json.dumps({"pid": pid, "started": stamp}).encode() + b"\n"


def _holder(raw: bytes) -> tuple[int | None, str]:
    """(pid, started) from a lock file's content; (None, "") when it is not what holder_info writes.
    The file is in the project, so its content is untrusted: only an int and a timestamp come out."""
    try:
        doc = json.loads(raw[:MAX_INFO].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, ""
    if not isinstance(doc, dict):
        return None, ""
    pid, started = doc.get("pid"), doc.get("started")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None, ""
    return pid, started if isinstance(started, str) and _STARTED.fullmatch(started) else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def holder_text(raw: bytes) -> str:
    pid, started = _holder(raw)
    if pid is None:
        return ""
    return f"pid {pid}, started {started}" if started else f"pid {pid}"


def busy_message(path: str, raw: bytes, waited: float) -> str:
    who = holder_text(raw)
    run = f"another day0 run ({who})" if who else "another day0 run"
    after = f" (waited {waited:g} s)" if waited > 0 else ""
    return (f"{run} holds {path}{after}; wait for it or stop it "
            "(hyhome_run_lock_wait=<seconds> or HYHOME_RUN_LOCK_WAIT waits that long for it)")


def _open(path: str, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise RunLockError(f"cannot create the run lock {path}: its directory is missing") from None
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunLockError(f"the run lock {path} is a symlink; remove it") from None
        raise RunLockError(f"cannot open the run lock {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise RunLockError(f"the run lock {path} is not a regular file of this user; remove it")
    return fd


def _read(fd: int) -> bytes:
    try:
        return os.pread(fd, MAX_INFO, 0)
    except OSError:
        return b""


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire(path: str, wait: float, create: bool, own_pid: int, info: bytes,
            clock=time.monotonic, sleep=time.sleep) -> int | None:
    """Lock ``path`` exclusively, waiting up to ``wait`` seconds (0: refuse at once).

    Returns the locked descriptor (the file then says who holds it: ``info``), ``THIS_RUN`` when the
    holder is ``own_pid`` (the same run, for another host), or None when the file is absent and
    ``create`` is false (check mode writes nothing). Raises RunLockBusy with a message naming the
    holder, or RunLockError when the file is not a lock we can use.
    """
    fd = _open(path, create)
    if fd is None:
        return None
    start = clock()
    try:
        while True:
            if not _try_lock(fd):
                raw = _read(fd)
                pid = _holder(raw)[0]
                if pid == own_pid:
                    os.close(fd)
                    return THIS_RUN
                waited = clock() - start
                # A new holder writes its pid right after locking: until then the file may still name
                # an earlier, finished run, so only a live holder is named at once.
                known = pid is not None and _alive(pid)
                if waited >= max(wait, 0) and (known or waited >= GRACE):
                    raise RunLockBusy(busy_message(path, raw if known else b"", max(wait, 0)))
                sleep(POLL)
                continue
            try:   # who holds it, for the message of the next run; the lock does not depend on it
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
            except OSError:   # a full disk: the next run's message names no holder
                pass
            return fd
    except BaseException:
        os.close(fd)
        raise


# ------------------------------------------------------------------ the channel to the main process

def open_channel() -> None:
    """In the main process, before any worker forks: the socket pair workers hand descriptors over."""
    global CHANNEL
    if CHANNEL is None:
        CHANNEL = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        CHANNEL[0].setblocking(False)


def hand_over(fd: int, path: str) -> None:
    """In a worker: send the locked descriptor to the main process, which then holds the lock."""
    if CHANNEL is None:
        raise RunLockError("the run lock needs the callback hyhome.bootstrap.run_lock")
    socket.send_fds(CHANNEL[1], [os.fsencode(path)], [fd])


def receive() -> dict[str, int]:
    """In the main process: take every descriptor handed over so far into HELD (path -> fd)."""
    if CHANNEL is None:
        return HELD
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(CHANNEL[0], 4096, 4)
        except (BlockingIOError, InterruptedError):
            return HELD
        path = os.fsdecode(data)
        for fd in fds:
            if path in HELD:   # already held by this run: the extra descriptor is not needed
                os.close(fd)
            else:
                HELD[path] = fd
