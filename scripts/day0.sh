#!/usr/bin/env bash
# The main job from a clean clone: set up what is missing, then run `hyhome day0` (day0.yml through
# the hyhome command: live progress, then a summary; `ansible-playbook day0.yml` does the same work).
# Extra arguments go to hyhome (e.g. --tags secrets,tls, -e hyhome_project_dir=/srv/app, --json);
# --check (with or without --diff) runs `hyhome check` instead: exit 2 when something would change.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh" runtime
cd "$ROOT"
cmd=day0
for a in "$@"; do case $a in --check | -C) cmd=check ;; esac; done
args=()
for a in "$@"; do
  case $a in
    --check | -C) ;;
    --diff | -D) [ "$cmd" = check ] || args+=("$a") ;;   # check always shows diffs
    *) args+=("$a") ;;
  esac
done
exec "$ROOT/.venv/bin/hyhome" "$cmd" ${args[@]+"${args[@]}"}
