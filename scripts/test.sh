#!/usr/bin/env bash
# Run every test from a clean clone: set up (engine, images, venv, collections), lint, render the
# module docs, unit tests, every Molecule scenario on the real engine, then day0 end to end.
#   usage: scripts/test.sh [stage ...]    stages: lint docs sanity unit molecule e2e (default: all)
#   MOLECULE_SCENARIOS="secrets tls" limits the molecule stage.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=(lint docs sanity unit molecule e2e)

t0=$SECONDS
bash scripts/setup.sh dev
bash scripts/lib/mkcert.sh
source scripts/lib/common.sh
apt_need curl openssl git   # the end-to-end test talks to the gateway and clones the repo
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
printf '[test] set-up done in %ss\n' "$((SECONDS - t0))"

summary=()
run_stage() {
  local name=$1 start=$SECONDS
  printf '\n[test] ===== %s =====\n' "$name"
  "stage_$name"
  summary+=("$(printf '%-9s %4ss' "$name" "$((SECONDS - start))")")
}

stage_lint() {
  ruff check .
  yamllint --strict .
  ansible-lint
}

stage_docs() {
  local m
  for m in plugins/modules/*.py; do
    m=$(basename "$m" .py)
    [ "$m" = __init__ ] && continue
    ansible-doc -t module "hyhome.bootstrap.$m" >/dev/null
    printf 'ansible-doc hyhome.bootstrap.%s: ok\n' "$m"
  done
  for m in plugins/callback/*.py; do
    m=$(basename "$m" .py)
    ansible-doc -t callback "hyhome.bootstrap.$m" >/dev/null
    printf 'ansible-doc -t callback hyhome.bootstrap.%s: ok\n' "$m"
  done
  ansible-doc -t role hyhome.bootstrap.project >/dev/null
  printf 'ansible-doc -t role hyhome.bootstrap.project: ok\n'
}

stage_sanity() {
  bash scripts/sanity.sh   # ansible-test sanity on the collection layout (prints its own duration)
}

stage_unit() {
  python -m pytest -q
}

stage_molecule() {
  local s scenarios
  if [ -n "${MOLECULE_SCENARIOS:-}" ]; then read -r -a scenarios <<<"$MOLECULE_SCENARIOS"
  else
    scenarios=()
    for s in molecule/*/molecule.yml; do scenarios+=("$(basename "$(dirname "$s")")"); done
  fi
  for s in "${scenarios[@]}"; do
    local start=$SECONDS
    molecule test -s "$s"
    printf '[test] molecule %s: passed in %ss\n' "$s" "$((SECONDS - start))"
  done
}

stage_e2e() {
  bash tests/e2e/day0.sh
  bash tests/e2e/realistic.sh
  local start=$SECONDS
  bash tests/e2e/battery.sh   # crash consistency, concurrency, leaks, engine fault, disk full (issue 13)
  printf '[test] e2e battery: passed in %ss\n' "$((SECONDS - start))"
  start=$SECONDS
  bash tests/e2e/runbooks.sh   # day-2 runbooks on the embedded stack: rotate, renew, recover, rollout, registry, dev, backup/restore
  printf '[test] e2e runbooks: passed in %ss\n' "$((SECONDS - start))"
}

for st in "${stages[@]}"; do run_stage "$st"; done
printf '\n[test] all passed in %ss\n' "$((SECONDS - t0))"
printf '  %s\n' "${summary[@]}"
