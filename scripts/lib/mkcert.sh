#!/usr/bin/env bash
# Install the real mkcert (Debian's package) so the TLS parity tests and benchmark can compare
# against it. Idempotent: does nothing when `mkcert -version` already answers.
# Usage: bash scripts/lib/mkcert.sh        (root, or a user with sudo)
set -euo pipefail

log() { printf '[mkcert] %s\n' "$*" >&2; }

if command -v mkcert >/dev/null 2>&1 && mkcert -version >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    log "root (or sudo) is needed to install mkcert"; exit 1; fi
else SUDO=; fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "no apt-get: install mkcert 1.4.4 with your package manager"; exit 1
fi

log "installing mkcert from the distribution"
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mkcert >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mkcert >/dev/null
fi
log "$(mkcert -version)"
