#!/usr/bin/env bash
# Runbooks end to end (issue 11), on this machine's Docker engine and the embedded stack:
#   1. copies the WORKING TREE (uncommitted work included; no .git, .venv, secrets, data, .env, caches)
#      to /tmp/hyhome-runbooks.XXXXXX/repo and gives it a thin venv over the main .venv (no install);
#   2. runs day0 once: every service healthy;
#   3. runs each tests/e2e/runbooks/NN-*.sh in lexical order (or only the names given), printing
#      `[runbooks] <name>: passed in Ns` (or failed), and checks the stack is healthy after each;
#   4. cleans up: compose down -v, CA trust uninstall, the copy removed (logs kept on failure).
#   usage: tests/e2e/runbooks.sh [name ...]      name: 10-rotate, 10-rotate.sh or rotate
# The whole run holds /tmp/hyhome-stack.lock (compose project "hyhome", gateway on 8443/8080).
# For development beside other runs: RUNBOOKS_PROJECT=hyhome-<you> RUNBOOKS_PORTS=<https>,<http> gives a
# private stack (that compose project, those gateway ports, its own trust name) and takes no lock.
#
# Contract for tests/e2e/runbooks/NN-<name>.sh (NN orders them; keep each bounded, print figures):
#   - defines one function, `runbook_test`, and runs nothing when sourced;
#   - runbook_test runs in a subshell under `set -euo pipefail`, from $REPO; any failing command or
#     `fail "why"` fails the test (beware: `local x=$(...)` and `if f; then` hide a failure);
#   - it finds REPO (the copy), STACK ($REPO/stack), WORK (scratch dir; the CA is $WORK/ca), LOG (logs),
#     PROJECT (hyhome, or the private one), ROOT (the main working tree: read only) and TEST (its own name), and the functions
#     of tests/e2e/lib.sh: say, fail, day0 [args] (the README's day0 in the copy; echoes its log),
#     playbook NAME [args] / playbook_must_fail NAME [args] (playbooks/NAME.yml in the copy; echo the
#     log), next_log, started_at, assert_all_healthy, assert_no_change, env_get, https_get, psql_q;
#   - it leaves the stack as it found it: every service healthy (the driver checks; after a failure
#     the driver re-runs day0 before the next test), nothing of its own left running;
#   - never run scripts/setup.sh's venv step against the main tree, `docker rm -f` other projects'
#     containers, or take /tmp/hyhome-stack.lock (the driver holds it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCK=/tmp/hyhome-stack.lock
PROJECT=${RUNBOOKS_PROJECT:-hyhome}
if [ "$PROJECT" != hyhome ]; then
  [[ "$PROJECT" =~ ^hyhome-[a-z0-9]+$ ]] || { echo "[runbooks] RUNBOOKS_PROJECT must be hyhome-<letters/digits>" >&2; exit 2; }
  [[ "${RUNBOOKS_PORTS:-}" =~ ^[0-9]+,[0-9]+$ ]] || { echo "[runbooks] a private project needs RUNBOOKS_PORTS=<https>,<http>" >&2; exit 2; }
  export COMPOSE_PROJECT_NAME=$PROJECT
elif [ "${HYHOME_RUNBOOKS_LOCKED:-}" != "$LOCK" ]; then   # the whole run under the stack lock
  flock -n "$LOCK" true 2>/dev/null || echo "[runbooks] waiting for $LOCK" >&2
  exec env HYHOME_RUNBOOKS_LOCKED="$LOCK" flock "$LOCK" bash "$0" "$@"
fi

E2E_TAG=runbooks
source "$ROOT/tests/e2e/lib.sh"
total_start=$SECONDS

# The tests to run, checked before anything starts.
tests=()
if [ "$#" -eq 0 ]; then
  for f in "$ROOT"/tests/e2e/runbooks/[0-9][0-9]-*.sh; do [ -e "$f" ] && tests+=("$f"); done
else
  for name in "$@"; do
    name=${name%.sh}
    match=("$ROOT/tests/e2e/runbooks/$name.sh")
    [ -e "${match[0]}" ] || match=("$ROOT"/tests/e2e/runbooks/[0-9][0-9]-"$name".sh)
    [ -e "${match[0]}" ] || fail "no runbook test named '$name' in tests/e2e/runbooks/"
    tests+=("${match[0]}")
  done
fi
[ "${#tests[@]}" -gt 0 ] || fail "no runbook test in tests/e2e/runbooks/"

WORK=$(mktemp -d /tmp/hyhome-runbooks.XXXXXX)
REPO="$WORK/repo"
STACK="$REPO/stack"
LOG="$WORK/logs"
mkdir -p "$LOG" "$REPO"
trap 'stack_cleanup $?' EXIT

say "copy of the working tree $ROOT"
t=$SECONDS
tar -C "$ROOT" -cf - --exclude=./.git --exclude=./.venv --exclude=./stack/secrets --exclude=./stack/data \
  --exclude=./stack/.env --exclude=.hyhome --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache \
  --exclude=./.cache --exclude=./tests/output . | tar -C "$REPO" -xf -
# A thin venv: the main .venv's packages (site.addsitedir), but this copy's hyhome command and
# hyhome.bootstrap collection, so that scripts/setup.sh in the copy finds everything installed.
main_site=$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
base_python=$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
"$base_python" -m venv --without-pip "$REPO/.venv"
site=$("$REPO/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$REPO" >"$site/00-hyhome-copy.pth"
echo "import site; site.addsitedir('$main_site')" >"$site/zz-main-venv.pth"
cp -p "$ROOT"/.venv/.installed-* "$REPO/.venv/" 2>/dev/null || :
for f in "$ROOT"/.venv/bin/*; do   # the console scripts, on this venv's interpreter
  n=${f##*/}
  [ -e "$REPO/.venv/bin/$n" ] && continue
  if head -n1 "$f" | grep -q "^#!$ROOT/.venv/bin/python"; then
    sed "1s|.*|#!$REPO/.venv/bin/python3|" "$f" >"$REPO/.venv/bin/$n"
    chmod 0755 "$REPO/.venv/bin/$n"
  fi
done
mkdir -p "$site/ansible_collections/hyhome"
for c in "$main_site"/ansible_collections/*; do
  [ "${c##*/}" = hyhome ] || ln -s "$c" "$site/ansible_collections/"
done
ln -s "$REPO" "$site/ansible_collections/hyhome/bootstrap"
(cd "$WORK" && "$REPO/.venv/bin/python" - "$REPO") <<'PY' || fail "the copy's venv does not run the copy"
import sys, hyhome_cli
assert hyhome_cli.__file__.startswith(sys.argv[1] + "/"), hyhome_cli.__file__
PY
if [ "$PROJECT" != hyhome ]; then   # the copy's inventory: other gateway ports, its own trust anchor
  "$REPO/.venv/bin/python" - "$REPO/inventory/group_vars/all" "$PROJECT" "${RUNBOOKS_PORTS%,*}" "${RUNBOOKS_PORTS#*,}" <<'PY'
import sys, yaml
d, project, https, http = sys.argv[1:]
env = dict(yaml.safe_load(open(f"{d}/main.yml")).get("env_values") or {})
env.update(GATEWAY_HTTPS_PORT=https, GATEWAY_HTTP_PORT=http)
with open(f"{d}/zz-runbooks-private.yml", "w") as fh:
    yaml.safe_dump({"env_values": env, "tls_trust_name": f"{project}-local-ca", "verify_tls_port": int(https)},
                   fh, explicit_start=True)
PY
fi
copy_s=$((SECONDS - t))

say "day0 in the copy"
t=$SECONDS
day0 >/dev/null
assert_all_healthy
day0_s=$((SECONDS - t))
say "day0: $day0_s s (copy: $copy_s s)"

failed=()
for f in "${tests[@]}"; do
  TEST=$(basename "$f" .sh)
  say "$TEST"
  t=$SECONDS
  set +e
  (
    set -euo pipefail
    cd "$REPO"
    source "$f"
    declare -F runbook_test >/dev/null || fail "$f defines no runbook_test function"
    runbook_test
  )
  rc=$?
  set -e
  if [ "$rc" -eq 0 ] && bad=$(unhealthy_containers "$PROJECT") && [ -n "$bad" ]; then
    echo "[runbooks] $TEST left containers unhealthy: $bad" >&2
    rc=1
  fi
  if [ "$rc" -eq 0 ]; then
    printf '[runbooks] %s: passed in %ss\n' "$TEST" "$((SECONDS - t))"
  else
    printf '[runbooks] %s: FAILED in %ss\n' "$TEST" "$((SECONDS - t))"
    failed+=("$TEST")
    say "re-converging the stack after $TEST"
    day0 >/dev/null
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  fail "${#failed[@]} of ${#tests[@]} runbook tests failed (${failed[*]}) in $((SECONDS - total_start))s; logs: $LOG"
fi
printf '[runbooks] %s tests passed in %ss (copy %ss, day0 %ss)\n' "${#tests[@]}" "$((SECONDS - total_start))" "$copy_s" "$day0_s"
