#!/usr/bin/env bash
# Make Docker Engine + the Compose v2 plugin answer on this machine. The work itself is the
# hyhome.bootstrap.docker_engine role (playbooks/engine.yml, the same role day0's `engine` step runs):
# this script only does what has to happen before Ansible can run it here (the venv), and starts an
# engine that is installed but stopped with the role's own start script.
#   usage: engine.sh [runtime|dev]    (the venv profile to create when it is missing)
# Idempotent: when `docker info` answers and `docker compose version` is v2, it does nothing (~0.3 s).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE=${1:-runtime}
VENV=${HYHOME_VENV:-$ROOT/.venv}
log() { printf '[engine] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1 && docker compose version --short 2>/dev/null | grep -qE '^v?2\.'; then
  exit 0
fi

become=() sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "root (or sudo) is needed to install or start Docker Engine"; exit 1; }
  become=(--become) sudo=(sudo)
fi

# Installed, only the daemon is down (a reboot without systemd, a stopped engine): start it as the role does,
# without reconfiguring an engine that was set up before (day0's engine step leaves it alone too).
if command -v docker >/dev/null 2>&1 && { [ -x /usr/sbin/dockerd ] || [ -x /usr/bin/dockerd ]; } \
   && docker compose version --short 2>/dev/null | grep -qE '^v?2\.'; then
  if [ -d /run/systemd/system ]; then
    log "starting docker with systemd"
    ${sudo[@]+"${sudo[@]}"} systemctl start docker
    for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done
    log "docker did not answer within 60 s (journalctl -u docker)"; exit 1
  fi
  log "starting dockerd (no systemd; log: /var/log/dockerd.log)"
  ${sudo[@]+"${sudo[@]}"} sh "$ROOT/roles/docker_engine/files/dockerd-service.sh" start /run/docker.pid /var/log/dockerd.log 60 >/dev/null
  exit 0
fi

# Ansible first: the venv with ansible-core and this collection (no Docker needed for that).
bash "$ROOT/scripts/lib/venv.sh" "$PROFILE"
log "installing/starting Docker Engine + Compose v2 (ansible-playbook playbooks/engine.yml)"
cd "$ROOT"
"$VENV/bin/ansible-playbook" playbooks/engine.yml -c local -i localhost, \
  -e ansible_python_interpreter="$VENV/bin/python" ${become[@]+"${become[@]}"}
log "$(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'), compose $(docker compose version --short)"
