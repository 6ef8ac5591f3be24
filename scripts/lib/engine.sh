#!/usr/bin/env bash
# Install and start Docker Engine + the Compose v2 plugin on Debian/Ubuntu when missing.
# Idempotent: when `docker info` answers and `docker compose version` is v2, it does nothing.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
log() { printf '[engine] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      log "root (or sudo) is needed to install Docker Engine"; exit 1; fi
  else SUDO=; fi
}

compose_v2_ok() {
  docker compose version --short 2>/dev/null | grep -qE '^v?2\.'
}

engine_up() { docker info >/dev/null 2>&1; }

install_engine_packages() {
  if [ -x /usr/sbin/dockerd ] || [ -x /usr/bin/dockerd ]; then return 0; fi
  log "installing docker.io from the distribution"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    docker.io cgroupfs-mount >/dev/null
}

install_compose_v2() {
  if compose_v2_ok; then return 0; fi
  local tmp mirror deb
  tmp=$(mktemp -d)
  chmod 755 "$tmp"   # apt's _apt user downloads into it
  mirror=$(debian_mirror)
  log "fetching the Compose v2 plugin from Debian trixie ($mirror) without adding trixie to apt sources"
  mkdir -p "$tmp/sources.list.d" "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$tmp/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/sources.list.d"
              -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Get::List-Cleanup=0)
  $SUDO apt-get "${opts[@]}" update -qq
  (cd "$tmp" && $SUDO apt-get "${opts[@]}" download -qq 'docker-compose=2.*')
  deb=$(ls "$tmp"/docker-compose_2*.deb)
  $SUDO dpkg -i "$deb" >/dev/null
  rm -rf "$tmp"
}

start_engine() {
  if engine_up; then return 0; fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    log "starting docker with systemd"
    $SUDO systemctl enable --now docker >/dev/null
  else
    log "no systemd: starting dockerd in the background (log: /var/log/dockerd.log)"
    command -v cgroupfs-mount >/dev/null 2>&1 && $SUDO cgroupfs-mount >/dev/null 2>&1 || :
    $SUDO setsid /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do engine_up && return 0; sleep 0.5; done
  log "dockerd did not answer within 30 s; last log lines:"; tail -n 20 /var/log/dockerd.log >&2 || :
  exit 1
}

main() {
  if engine_up && compose_v2_ok; then return 0; fi
  need_root
  install_engine_packages
  start_engine
  install_compose_v2
  log "$(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'), compose $(docker compose version --short)"
}

main "$@"
