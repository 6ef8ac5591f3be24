#!/usr/bin/env bash
# Run every test from a clean clone: set up (engine, images, venv, collections), lint, render the
# module docs, unit tests, every Molecule scenario on the real engine, then day0 end to end.
#   usage: scripts/test.sh [stage ...]    stages: lint docs sanity unit molecule e2e (default: all)
#   MOLECULE_SCENARIOS="secrets tls" limits the molecule stage. With both molecule and e2e, the Molecule
#   scenarios run in the background alongside the stack's e2e tests (HYHOME_TEST_SERIAL=1: one after the other).
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
  # In parallel (pytest-xdist): the tests are mostly waits on ansible-playbook, docker and compose
  # subprocesses, and each uses its own temp tree and project names. 2 workers halve the stage here
  # (411 s -> 207 s on 2 cores); HYHOME_UNIT_WORKERS=0 runs them in this one process.
  local workers=${HYHOME_UNIT_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
  python -m pytest -q -n "$workers"
}

molecule_scenarios() {
  if [ -n "${MOLECULE_SCENARIOS:-}" ]; then printf '%s\n' $MOLECULE_SCENARIOS
  else
    local s
    for s in molecule/*/molecule.yml; do basename "$(dirname "$s")"; done
  fi
}

molecule_run() {   # scenario ... (one after the other)
  local s start
  for s in "$@"; do
    start=$SECONDS
    molecule test -s "$s"
    printf '[test] molecule %s: passed in %ss\n' "$s" "$((SECONDS - start))"
  done
}

stage_molecule() {
  local scenarios
  mapfile -t scenarios < <(molecule_scenarios)
  molecule_run "${scenarios[@]}"
}

# The embedded stack's end-to-end tests (project "hyhome", one at a time).
e2e_stack() {
  bash tests/e2e/day0.sh
  bash tests/e2e/realistic.sh
  local start=$SECONDS
  bash tests/e2e/runbooks.sh   # day-2 runbooks: rotate, renew, recover, rollout, registry, dev profile, backup/restore
  printf '[test] e2e runbooks: passed in %ss\n' "$((SECONDS - start))"
}

# Crash consistency, concurrency, leaks, engine fault (it stops dockerd: nothing else may run), disk full.
e2e_battery() {
  local start=$SECONDS
  bash tests/e2e/battery.sh
  printf '[test] e2e battery: passed in %ss\n' "$((SECONDS - start))"
}

stage_e2e() {
  e2e_stack
  e2e_battery
}

# molecule and e2e together: while the embedded stack's tests run, the Molecule scenarios run in the
# background in two streams (their own containers, engines and compose projects): the scenarios that
# install an engine or packages in their targets (apt through NAT) in one, the rest in the other. Then the
# battery, alone. The work is mostly waiting on apt, health checks and the engine, so the three overlap
# well on 2 cores. HYHOME_TEST_SERIAL=1 runs everything one after the other.
NESTED_SCENARIOS=" multihost docker_engine registry "
stage_molecule_e2e() {
  local s nested=() other=() logs=() pids=() rc=0 i
  while read -r s; do
    if [[ "$NESTED_SCENARIOS" == *" $s "* ]]; then nested+=("$s"); else other+=("$s"); fi
  done < <(molecule_scenarios)
  # The stack's images, built once before anything runs in parallel (the multihost scenario sends them to its
  # hosts, the e2e tests run them): two concurrent builds of one tag would race. Cached: a few seconds.
  docker compose --project-directory stack --env-file stack/.env.example build --quiet
  set -m   # each background stream gets its own process group, so a failure here stops all of it
  for i in 0 1; do
    logs[i]=$(mktemp /tmp/hyhome-molecule.XXXXXX.log)
    if [ "$i" -eq 0 ]; then molecule_run ${nested[@]+"${nested[@]}"} >"${logs[i]}" 2>&1 &
    else molecule_run ${other[@]+"${other[@]}"} >"${logs[i]}" 2>&1 &
    fi
    pids[i]=$!
  done
  set +m
  trap 'for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || :; done' EXIT
  e2e_stack
  printf '\n[test] e2e stack tests done; waiting for the molecule streams (logs: %s)\n' "${logs[*]}"
  for i in 0 1; do
    wait "${pids[i]}" || rc=$?
    printf '\n[test] ===== molecule stream %s (ran alongside e2e) =====\n' "$((i + 1))"
    cat "${logs[i]}"
    [ "$rc" -eq 0 ] || break
  done
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || :; done
    printf '[test] molecule stage failed (rc %s)\n' "$rc"; exit "$rc"
  fi
  rm -f "${logs[@]}"
  e2e_battery
}

# Both molecule and e2e asked for: run them together (see stage_molecule_e2e).
if [ -z "${HYHOME_TEST_SERIAL:-}" ] && [[ " ${stages[*]} " == *" molecule "* ]] && [[ " ${stages[*]} " == *" e2e "* ]]; then
  merged=()
  for st in "${stages[@]}"; do
    case $st in molecule) merged+=(molecule_e2e) ;; e2e) ;; *) merged+=("$st") ;; esac
  done
  stages=("${merged[@]}")
fi

for st in "${stages[@]}"; do run_stage "$st"; done
printf '\n[test] all passed in %ss\n' "$((SECONDS - t0))"
printf '  %s\n' "${summary[@]}"
