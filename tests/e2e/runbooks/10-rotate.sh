# Runbook rotate-secret (playbooks/rotate-secret.yml), sourced by tests/e2e/runbooks.sh:
#   - postgres_password, then app_db_password: a new value, its history kept, the password set inside
#     PostgreSQL before the consumers restart (for app_db_password postgres-init then finds nothing to
#     do: the in-service step did it), exactly the consumers recreated and healthy, and the API still
#     reads the rows written before and writes new ones through the gateway;
#   - the superuser logs in over TCP with the new value and no longer with the old one;
#   - rollback=true puts the previous app_db_password back, and the API still works;
#   - an unknown secret is refused with a clear message, and nothing changed.

# The services whose container changed between two started_at snapshots, space-separated.
changed_services() {
  comm -13 <(echo "$1") <(echo "$2") | awk '{print $1}' | sort -u | tr '\n' ' '
}

# The superuser logs in over TCP with the value given on stdin (exit status of psql).
superuser_login() {
  (cd "$STACK" && docker compose exec -T postgres sh -c \
    'read -r PGPASSWORD; export PGPASSWORD; psql -X -h 127.0.0.1 -U postgres -d postgres -tAc "select 1"' >/dev/null 2>&1)
}

rotate_and_check() {   # secret expected-consumers
  local secret=$1 want=$2 file old before after log t
  file=$(find "$STACK/secrets" -name "$secret" -type f | head -n1)
  [ -n "$file" ] || fail "no file for $secret"
  old=$(sha256sum <"$file")
  before=$(started_at)
  t=$SECONDS
  log=$(playbook rotate-secret -e "secret=$secret")
  say "rotate-secret $secret: $((SECONDS - t)) s"
  [ "$old" != "$(sha256sum <"$file")" ] || fail "$secret was not rotated"
  compgen -G "$STACK/secrets/.history/*/$secret/*-rotated-out" >/dev/null \
    || compgen -G "$STACK/secrets/.history/$secret/*-rotated-out" >/dev/null || fail "no history for $secret"
  grep -q "password of role .* set inside postgres" "$log" || fail "the in-service step did not run (log: $log)"
  after=$(started_at)
  [ "$(changed_services "$before" "$after")" = "$want" ] \
    || fail "rotating $secret recreated '$(changed_services "$before" "$after")', expected '$want' (log: $log)"
  assert_all_healthy
}

runbook_test() {
  local first log before pw_hist rows t
  first="before-rotation-$RANDOM"
  api_items "$first" | grep -q '"id"' || fail "POST /items through the gateway failed"

  say "postgres_password"
  pw_hist=$(mktemp "$WORK/old-pw.XXXXXX")
  cp "$STACK/secrets/postgres/postgres_password" "$pw_hist"
  rotate_and_check postgres_password "postgres postgres-exporter postgres-init "
  superuser_login <"$STACK/secrets/postgres/postgres_password" || fail "the superuser cannot log in with the new value"
  if superuser_login <"$pw_hist"; then fail "the superuser still logs in with the old value"; fi
  rm -f "$pw_hist"
  api_items | grep -q "$first" || fail "the API lost the row written before the rotation"
  api_items "after-postgres-password" | grep -q "$first" || fail "the API cannot write after rotating postgres_password"

  say "app_db_password"
  rotate_and_check app_db_password "api postgres-init "
  init=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=postgres-init")
  if docker logs "$init" 2>&1 | grep -q 'password set for the application role'; then
    fail "postgres-init had to set the application role's password: the in-service step did not"
  fi
  rows=$(api_items "after-app-db-password")
  for n in "$first" after-postgres-password after-app-db-password; do
    grep -q "$n" <<<"$rows" || fail "row $n missing after rotating app_db_password: $rows"
  done

  say "rollback of app_db_password"
  before=$(started_at)
  t=$SECONDS
  log=$(playbook rotate-secret -e secret=app_db_password -e rollback=true)
  say "rotate-secret app_db_password rollback=true: $((SECONDS - t)) s"
  grep -q "app_db_password rolled back" "$log" || fail "no rollback report (log: $log)"
  [ "$(changed_services "$before" "$(started_at)")" = "api postgres-init " ] || fail "rollback recreated other services"
  api_items "after-rollback" | grep -q after-app-db-password || fail "the API does not work after the rollback"

  say "unknown secret: refused, nothing changed"
  before=$(started_at)
  local tree
  tree=$(find "$STACK/secrets" -type f -printf '%p %s %T@\n' | sort | sha256sum)
  log=$(playbook_must_fail rotate-secret -e secret=no_such_secret)
  grep -q "'no_such_secret' is not a managed secret (known: " "$log" || fail "unclear refusal (log: $log)"
  [ "$tree" = "$(find "$STACK/secrets" -type f -printf '%p %s %T@\n' | sort | sha256sum)" ] || fail "a refused rotation changed the secrets"
  [ "$before" = "$(started_at)" ] || fail "a refused rotation restarted a container"
}
