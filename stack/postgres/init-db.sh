#!/bin/bash
# One-shot init sidecar: create the application role and database, idempotently.
#
#  - waits for PostgreSQL with exponential backoff (0.25 s doubling to 8 s) plus random jitter;
#  - gives up with exit 1 after INIT_TIMEOUT_SECONDS (default 300 s);
#  - creates the role and database only when missing, and sets the role's password only when the
#    secret file no longer matches it (rotation), so a re-run changes nothing;
#  - exits 0 when done. Passwords are read from secret files, never from arguments.
set -euo pipefail

timeout_s=${INIT_TIMEOUT_SECONDS:-300}
deadline=$((SECONDS + timeout_s))
: "${APP_DB_NAME:?}" "${APP_DB_USER:?}" "${POSTGRES_PASSWORD_FILE:?}" "${APP_DB_PASSWORD_FILE:?}"
export PGCONNECT_TIMEOUT=2

log() { echo "postgres-init: $*" >&2; }

for f in "$POSTGRES_PASSWORD_FILE" "$APP_DB_PASSWORD_FILE"; do
  [ -r "$f" ] && [ -s "$f" ] || { log "secret $f is missing, empty or unreadable by uid $(id -u)"; exit 1; }
done
PGPASSWORD=$(head -n1 "$POSTGRES_PASSWORD_FILE")
export PGPASSWORD

delay_ms=250
attempt=0
# Each try is bounded too (an unresolvable host can block a connection for many seconds).
until timeout 3 psql -X -q -t -c 'SELECT 1' >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  remaining=$((deadline - SECONDS))
  if ((remaining <= 0)); then
    log "database ${PGHOST:-postgres} not reachable after ${timeout_s}s ($attempt attempts): giving up"
    exit 1
  fi
  jitter_ms=$((RANDOM % (delay_ms / 2 + 1)))
  sleep_ms=$((delay_ms + jitter_ms))
  ((sleep_ms > remaining * 1000)) && sleep_ms=$((remaining * 1000))
  log "waiting for the database (attempt $attempt, next try in ${sleep_ms} ms)"
  sleep "$((sleep_ms / 1000)).$(printf '%03d' $((sleep_ms % 1000)))"
  delay_ms=$((delay_ms * 2 > 8000 ? 8000 : delay_ms * 2))
done

# Does the application role already log in with the current secret? Then its password is right.
if PGPASSWORD=$(head -n1 "$APP_DB_PASSWORD_FILE") psql -X -q -t -U "$APP_DB_USER" -d postgres \
     -c 'SELECT 1' >/dev/null 2>&1; then
  set_password=off
else
  set_password=on
fi

psql -X -q -v ON_ERROR_STOP=1 -v role="$APP_DB_USER" -v db="$APP_DB_NAME" -v set_password="$set_password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
\if :set_password
\set pw `head -n1 "$APP_DB_PASSWORD_FILE"`
ALTER ROLE :"role" WITH LOGIN PASSWORD :'pw';
\unset pw
\echo 'postgres-init: password set for the application role'
\endif
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
log "role '$APP_DB_USER' and database '$APP_DB_NAME' are in place"
