"""Dev profile only (stack/compose.dev.yaml): run a command and restart it when its source changes.

    python3 reloader.py WATCH_DIR -- COMMAND [ARG...]

`docker compose watch` syncs edited files into the container (action `sync`); this restarts the
process inside the container (a new interpreter reads the new code) instead of restarting the
container, which costs a network and mount set-up (about 1 s of the 2 s budget on a busy host).
Polls WATCH_DIR's *.py files (mtime, size, inode) every POLL seconds: no inotify dependency, and a
sync replaces files in ways inotify watchers sometimes miss. SIGTERM/SIGINT stop the child and exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL = 0.1          # seconds between scans
STOP_GRACE = 5.0    # seconds the old process gets to exit before SIGKILL


def snapshot(root: str) -> dict[str, tuple[int, int, int]]:
    """(mtime_ns, size, inode) of every *.py file under ``root``."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue        # removed between listing and stat
                seen[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return seen


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: reloader.py WATCH_DIR -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    root, command = argv[0], argv[2:]
    child = subprocess.Popen(command)

    def _exit(signum, _frame):
        stop(child)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    seen = snapshot(root)
    while True:
        time.sleep(POLL)
        now = snapshot(root)
        if now != seen:
            changed = sorted(p for p in now.keys() | seen.keys() if now.get(p) != seen.get(p))
            seen = now
            print(f"reloader: {', '.join(os.path.relpath(p, root) for p in changed)} changed: restarting",
                  flush=True)
            stop(child)
            child = subprocess.Popen(command)
        # A server that died by itself (a syntax error in the new code, say) is not restarted until
        # the next edit: the container and the watch session stay up, the healthcheck shows it.


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
