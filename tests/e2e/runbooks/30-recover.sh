# Runbook recover-service (playbooks/recover-service.yml), sourced by tests/e2e/runbooks.sh:
#   - the API killed with SIGKILL (docker kill -s KILL: no restart policy brings it back): the finding
#     says killed, the runbook starts it, it is healthy and answers through the gateway; the recovery
#     time is printed;
#   - PostgreSQL made unhealthy on purpose (its postmaster stopped with SIGSTOP: health checks time out):
#     the API's diagnosis names postgres as the root cause (hung), the runbook kills and starts postgres,
#     then waits for the API; the API reads the database again;
#   - an unknown service is refused with the list of known ones, and nothing changes.

container_of() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"
}

wait_health() {   # container status-wanted timeout-seconds
  local c=$1 want=$2 deadline=$((SECONDS + $3)) got
  while :; do
    got=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c")
    [ "$got" = "$want" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "$c is $got after $3 s, expected $want"
    sleep 1
  done
}

runbook_test() {
  local api pg log before t domain
  domain=$(env_get HYHOME_DOMAIN)

  say "kill -9 the API"
  api=$(container_of api)
  docker kill -s KILL "$api" >/dev/null
  [ "$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$api")" = "exited 137" ] || fail "the API did not die"
  t=$SECONDS
  log=$(playbook recover-service -e service=api)
  grep -q "api: killed: exited 137" "$log" || fail "the finding does not say the API was killed (log: $log)"
  grep -qE "api recovered from killed" "$log" || fail "no recovery report (log: $log)"
  say "API killed: $(grep -oE '(time to recovery|outage) \([a-z -]*\): [0-9.]+ s' "$log" | paste -sd';')"
  say "recover-service api (killed): $((SECONDS - t)) s wall"
  https_get "api.$domain" /readyz | grep -q '"ok"' || fail "the API does not answer through the gateway after recovery"

  say "PostgreSQL made unhealthy on purpose (postmaster stopped)"
  pg=$(container_of postgres)
  (cd "$STACK" && docker compose exec -T postgres sh -c 'kill -STOP "$(head -n1 "$PGDATA/postmaster.pid")"')
  t=$SECONDS
  wait_health "$pg" unhealthy 120
  say "postgres unhealthy after $((SECONDS - t)) s"
  t=$SECONDS
  log=$(playbook recover-service -e service=api)
  grep -q "root cause postgres: hung" "$log" || fail "the finding does not name postgres as the cause (log: $log)"
  grep -q "postgres: hung -> kill" "$log" || fail "the report does not show postgres' recovery (log: $log)"
  grep -qE "api recovered from dependency-down" "$log" || fail "no recovery report (log: $log)"
  say "postgres hung: $(grep -oE '(time to recovery|outage) \([a-z -]*\): [0-9.]+ s' "$log" | paste -sd';')"
  say "recover-service api (postgres hung): $((SECONDS - t)) s wall"
  wait_health "$(container_of postgres)" healthy 60
  https_get "api.$domain" /readyz | grep -q '"ok"' || fail "the API does not read the database after recovery"

  say "unknown service: refused, nothing changed"
  before=$(started_at)
  log=$(playbook_must_fail recover-service -e service=no-such-service)
  grep -q "unknown service 'no-such-service' in project $PROJECT: known services are " "$log" \
    || fail "unclear refusal (log: $log)"
  [ "$before" = "$(started_at)" ] || fail "a refused recovery restarted a container"
}
