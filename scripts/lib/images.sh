#!/usr/bin/env bash
# Build, without any registry, the local images the project needs:
#   debian:bookworm-slim          minbase Debian from Debian's archive (mmdebstrap), for FROM lines
#   hyhome/molecule-debian:bookworm  Molecule target (dev): that base + python3, python3-apt, sudo
#   hyhome/molecule-debian:trixie    (dev) a Debian 13 target with no Docker (molecule/docker_engine)
#   hyhome/busybox:local          (dev) a 2 MB static busybox image for compose tests
# The rootfs tarball is cached outside the repo (key: suite + recipe hash + ISO week) and every
# image is labelled with its key, so a re-run costs ~0 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${HYHOME_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyhome-bootstrap}
SUITE=${HYHOME_SUITE:-bookworm}
PROFILE=${1:-dev}   # runtime: only the base image the stack builds FROM; dev: also the test images
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
log() { printf '[images] %s\n' "$*" >&2; }
mkdir -p "$CACHE"

label_of() { docker image inspect --format '{{ index .Config.Labels "org.hyhome.key" }}' "$1" 2>/dev/null || :; }


# --- 1. minbase Debian, tagged as the name Dockerfiles expect -------------------------------
base_image() {   # base_image SUITE: debian:SUITE-slim; sets $base and $key
  local suite=$1 recipe tarball mirror
  recipe="mmdebstrap --variant=minbase merged-usr excludes=man,doc,locale include=ca-certificates $suite"
  key="$suite-$(printf '%s' "$recipe" | sha256sum | cut -c1-12)-$(date +%G%V)"
  base="debian:$suite-slim"
  # A real upstream image (not labelled by us) is kept as it is; otherwise try the registry first.
  if docker image inspect "$base" >/dev/null 2>&1 && [ -z "$(label_of "$base")" ]; then
    log "using the existing $base"
  elif [ "$(label_of "$base")" != "$key" ] && timeout 60 docker pull -q "$base" >/dev/null 2>&1; then
    log "pulled $base from its registry"
  elif [ "$(label_of "$base")" != "$key" ]; then
    tarball="$CACHE/rootfs-$key.tar"
    if [ ! -s "$tarball" ]; then
      apt_need mmdebstrap
      mirror=$(debian_mirror)
      log "no registry reachable for $base: building it from Debian's archive ($mirror) with mmdebstrap"
      mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --include=ca-certificates "$suite" "$tarball.tmp.tar" "$mirror"
      mv "$tarball.tmp.tar" "$tarball"
      find "$CACHE" -maxdepth 1 -name "rootfs-$suite-*.tar" ! -name "rootfs-$key.tar" -delete
    fi
    log "importing $base"
    docker import --change 'CMD ["bash"]' --change "LABEL org.hyhome.key=$key" "$tarball" "$base" >/dev/null
  fi
}

# --- 2. Molecule targets: the base + what Ansible needs on a target ------------------------
target_image() {   # target_image SUITE PACKAGE...
  local suite=$1; shift
  base_image "$suite"
  local target="hyhome/molecule-debian:$suite" tkey
  tkey="$key-$(printf '%s' "$*" | sha256sum | cut -c1-8)"
  if [ "$(label_of "$target")" != "$tkey" ]; then
    log "building $target"
    docker build -q -t "$target" --label "org.hyhome.key=$tkey" - >/dev/null <<DOCKERFILE
FROM $base
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $* \\
    && rm -rf /var/lib/apt/lists/*
CMD ["sleep", "infinity"]
DOCKERFILE
  fi
}

base_image "$SUITE"
[ "$PROFILE" = dev ] || { log "ready: $base"; exit 0; }

target_image "$SUITE" python3 python3-apt python3-yaml python3-docker yamllint sudo procps
# Debian 13 with only what Ansible needs: the docker_engine role installs everything else.
target_image trixie python3 python3-apt sudo procps

# --- 3. busybox ------------------------------------------------------------------------------
bb="hyhome/busybox:local"
if [ -z "$(label_of "$bb")" ]; then
  apt_need busybox-static
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/tmp"
  cp /bin/busybox "$tmp/bin/busybox"
  for a in $("$tmp/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$tmp/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\napp:x:1000:\n' >"$tmp/etc/group"
  chmod 1777 "$tmp/tmp"
  tar -C "$tmp" -c . | docker import --change 'CMD ["sh"]' --change 'LABEL org.hyhome.key=busybox' - "$bb" >/dev/null
  rm -rf "$tmp"
fi
log "ready: debian:$SUITE-slim, hyhome/molecule-debian:{$SUITE,trixie}, $bb"
