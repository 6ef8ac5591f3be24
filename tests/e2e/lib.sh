# Shared by the e2e scripts (sourced): checks of the running embedded stack.

# The containers of compose project $1 that are neither running (healthy, or without a healthcheck)
# nor exited 0 (a one-off such as postgres-init): one line each, nothing when all are fine.
unhealthy_containers() {
  docker ps -a --filter "label=com.docker.compose.project=$1" --format '{{.Names}}' | while read -r c; do
    docker inspect --format '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{ index .Config.Labels "com.docker.compose.oneoff" }}' "$c"
  done | awk '!(($2 == "running" && ($4 == "healthy" || $4 == "none")) || ($2 == "exited" && $3 == 0))'
}

# --- A stack under test (day0.sh, runbooks.sh) -------------------------------------------------
# The caller sets: REPO (the copy of the repository), STACK ($REPO/stack), WORK (scratch; the CA lives in
# $WORK/ca), LOG (log directory), PROJECT (compose project name), E2E_TAG (log prefix, default e2e).

say() { printf '\n[%s] %s\n' "${E2E_TAG:-e2e}" "$*"; }
fail() { printf '[%s] FAIL: %s\n' "${E2E_TAG:-e2e}" "$*" >&2; exit 1; }

# The next numbered log path for a step (a counter file: day0 often runs in a $(...) subshell).
next_log() {
  local n
  n=$(( $(cat "$LOG/.n" 2>/dev/null || echo 0) + 1 ))
  echo "$n" >"$LOG/.n"
  printf '%s/%02d-%s.log' "$LOG" "$n" "$1"
}

# Runs day0 (scripts/day0.sh, the README's command) in the copy; output saved per step; echoes the log path.
day0() {
  local log
  log=$(next_log day0)
  if ! (cd "$REPO" && ./scripts/day0.sh -e "tls_ca_dir=$WORK/ca" "$@") >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    fail "day0 $* failed (log: $log)"
  fi
  echo "$log"
}

# Runs a playbook of the copy (playbooks/NAME.yml, with the test's CA dir); echoes the log path.
# playbook NAME [ansible-playbook args...]; fails the test when the playbook fails.
playbook() {
  local name=$1 log
  shift
  log=$(next_log "$name")
  if ! (cd "$REPO" && .venv/bin/ansible-playbook "playbooks/$name.yml" -e "tls_ca_dir=$WORK/ca" "$@") >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    fail "playbook $name $* failed (log: $log)"
  fi
  echo "$log"
}

# The same, for a run that must fail: echoes the log path; fails the test when the playbook succeeds.
playbook_must_fail() {
  local name=$1 log
  shift
  log=$(next_log "$name-refused")
  if (cd "$REPO" && .venv/bin/ansible-playbook "playbooks/$name.yml" -e "tls_ca_dir=$WORK/ca" "$@") >"$log" 2>&1; then
    fail "playbook $name $* succeeded; it should have been refused (log: $log)"
  fi
  echo "$log"
}

# The recap must say changed=0 and failed=0 for every host.
assert_no_change() {
  local log=$1
  grep -E '^[^ ].*: ok=' "$log" >"$log.recap"
  if grep -vqE 'changed=0 .*failed=0' "$log.recap"; then
    grep -E 'changed:' "$log" | head -n 20 >&2
    fail "expected changed=0: $(cat "$log.recap")"
  fi
}

# "service container-id StartedAt" for each container of the project, sorted.
started_at() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    | xargs -r docker inspect --format '{{ index .Config.Labels "com.docker.compose.service" }} {{ .Id }} {{ .State.StartedAt }}' \
    | sort
}

assert_all_healthy() {
  local bad
  bad=$(unhealthy_containers "$PROJECT")
  [ -z "$bad" ] || fail "containers not healthy: $bad"
}

env_get() { grep -E "^$1=" "$STACK/.env" | tail -n1 | cut -d= -f2-; }

https_get() {   # host path -> body; trusts only the project's rootCA.pem
  local host=$1 path=$2 port
  port=$(env_get GATEWAY_HTTPS_PORT)
  curl -fsS --max-time 10 --cacert "$STACK/secrets/certs/rootCA.pem" \
    --resolve "$host:$port:127.0.0.1" "https://$host:$port$path"
}

api_items() {   # [note]: GET /items through the gateway, or POST one note; the JSON body
  local host port
  host="api.$(env_get HYHOME_DOMAIN)"
  port=$(env_get GATEWAY_HTTPS_PORT)
  if [ $# -eq 0 ]; then
    https_get "$host" /items
  else
    curl -fsS --max-time 10 --cacert "$STACK/secrets/certs/rootCA.pem" --resolve "$host:$port:127.0.0.1" \
      -H 'Content-Type: application/json' --data "{\"note\": \"$1\"}" "https://$host:$port/items"
  fi
}

psql_q() {
  (cd "$STACK" && docker compose exec -T postgres psql -U postgres -tAc "$1")
}

# Leaves nothing behind: the stack's containers and volumes, the CA in the trust stores, $WORK
# (kept, with the logs, when the run failed: pass the exit code).
stack_cleanup() {
  local rc=$1
  if [ -d "$STACK" ]; then
    (cd "$STACK" && docker compose down -v --remove-orphans >/dev/null 2>&1) || echo "[${E2E_TAG:-e2e}] compose down failed" >&2
  fi
  if [ -x "$REPO/.venv/bin/ansible-playbook" ]; then
    (cd "$REPO" && .venv/bin/ansible-playbook playbooks/tls.yml -e tls_trust_uninstall=true \
       -e "tls_ca_dir=$WORK/ca" >"$LOG/trust-uninstall.log" 2>&1) || echo "[${E2E_TAG:-e2e}] CA trust uninstall failed" >&2
  fi
  if [ "$rc" -ne 0 ]; then
    echo "[${E2E_TAG:-e2e}] logs kept in $LOG" >&2
  else
    rm -rf "$WORK"
  fi
}
