#!/usr/bin/env bash
# Runtime battery of day0 on the embedded stack (issue 13), bounded to a few minutes:
#   crash consistency (SIGKILL of the ansible process tree at >= BATTERY_KILLS points over env, secrets,
#   tls, data_dirs and compose), concurrency (the run lock), leaks (every secret value searched in
#   every output, .env, state and `docker inspect`), engine fault (dockerd stopped during compose),
#   disk full (secrets, keys and certificates on a full tmpfs). Each part prints its figures.
#   usage: tests/e2e/battery.sh [part,...]    parts: crash,concurrency,leaks,engine,diskfull (default: all)
#   BATTERY_KILLS (default 10) and BATTERY_SEED (default: the time; printed) tune the crash part.
# Runs against a copy of the tracked stack files; holds /tmp/hyhome-stack.lock while it uses the
# stack, and leaves nothing behind (containers, volumes, mounts, files; logs kept on failure).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/hyhome-battery.XXXXXX)

cleanup() {
  local rc=$?
  # battery.py brings the stack down itself; this is for when it could not
  if [ -n "$(docker ps -aq --filter "label=com.docker.compose.project.working_dir=$WORK/stack" 2>/dev/null)" ]; then
    (cd "$WORK/stack" && flock /tmp/hyhome-stack.lock docker compose down -v --remove-orphans -t 5 >/dev/null 2>&1) \
      || echo "[battery] compose down failed" >&2
  fi
  if mountpoint -q "$WORK/tmpfs" 2>/dev/null; then umount -l "$WORK/tmpfs" || echo "[battery] umount failed" >&2; fi
  if [ "$rc" -ne 0 ]; then
    echo "[battery] logs kept in $WORK/logs" >&2
    rm -rf "$WORK/stack/data" "$WORK/tmpfs"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

start=$SECONDS
"$ROOT/.venv/bin/python" "$ROOT/tests/e2e/battery.py" --work "$WORK" ${1:+--parts "$1"}
printf '[battery] passed in %ss\n' "$((SECONDS - start))"
