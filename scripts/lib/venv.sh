#!/usr/bin/env bash
# Create the project's virtualenv, install pinned Python deps, install the Ansible collections
# (Galaxy when reachable, else extracted from the PyPI `ansible` bundle) and expose this repo
# as the `hyhome.bootstrap` collection. Idempotent; downloads are cached outside the repo.
#   usage: venv.sh [runtime|dev]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE=${1:-runtime}
VENV=${HYHOME_VENV:-$ROOT/.venv}
CACHE=${HYHOME_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyhome-bootstrap}
PY=${HYHOME_PYTHON:-python3}
ANSIBLE_BUNDLE=12.3.0   # the PyPI bundle matching ansible-core 2.19
COLLECTIONS=(community/docker ansible/posix)

log() { printf '[venv] %s\n' "$*" >&2; }
mkdir -p "$CACHE/pip"

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    log "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi

req="$ROOT/requirements.txt"; [ "$PROFILE" = dev ] && req="$ROOT/requirements-dev.txt"
stamp="$VENV/.installed-$PROFILE"
want=$(cat "$ROOT/requirements.txt" "$req" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies ($PROFILE)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --cache-dir "$CACHE/pip" -r "$req"
  echo "$want" >"$stamp"
fi

# The `hyhome` command ([project.scripts] in pyproject.toml), installed editable: it runs this checkout.
if ! "$VENV/bin/python" -c 'import sys, hyhome_cli; sys.exit(hyhome_cli.__file__ != sys.argv[1])' \
     "$ROOT/hyhome_cli/__init__.py" 2>/dev/null || [ ! -x "$VENV/bin/hyhome" ]; then
  log "installing the hyhome command"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
fi

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
AC="$SITE/ansible_collections"
mkdir -p "$AC/hyhome"

missing=()
for c in "${COLLECTIONS[@]}"; do [ -f "$AC/$c/MANIFEST.json" ] || missing+=("$c"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if curl -fsS --max-time 5 -o /dev/null https://galaxy.ansible.com/api/ 2>/dev/null; then
    log "installing collections from Galaxy"
    "$VENV/bin/ansible-galaxy" collection install -r "$ROOT/requirements.yml" -p "$SITE" >/dev/null
  else
    log "Galaxy unreachable: extracting ${missing[*]} from the PyPI ansible==$ANSIBLE_BUNDLE wheel"
    whl=$(ls "$CACHE"/ansible-"$ANSIBLE_BUNDLE"-*.whl 2>/dev/null | head -n1 || :)
    if [ -z "$whl" ]; then
      "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$CACHE" "ansible==$ANSIBLE_BUNDLE"
      whl=$(ls "$CACHE"/ansible-"$ANSIBLE_BUNDLE"-*.whl | head -n1)
    fi
    "$VENV/bin/python" - "$whl" "$SITE" "${missing[@]}" <<'PY'
import sys, zipfile
whl, site, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
prefixes = tuple(f"ansible_collections/{c}/" for c in wanted)
with zipfile.ZipFile(whl) as z:
    z.extractall(site, [n for n in z.namelist() if n.startswith(prefixes)])
PY
  fi
fi

# This repository is the hyhome.bootstrap collection (galaxy.yml at its root).
ln -sfn "$ROOT" "$AC/hyhome/bootstrap"
