#!/bin/sh
# PostgreSQL entrypoint (the Debian package has none): on the first start, initialise the cluster in
# the bind-mounted data directory with the superuser password read from the secret file; on later
# starts, set the superuser password from the file again (rotation); then run the server in the
# foreground (tini is PID 1). The password is never passed on a command line.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres_password}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ ! -w "$PGDATA" ]; then
    echo "postgres: $PGDATA is not writable by uid $(id -u): create stack/data/postgres owned by 999:999 (data_dirs role)" >&2
    exit 1
  fi
  if [ ! -s "$POSTGRES_PASSWORD_FILE" ]; then
    echo "postgres: $POSTGRES_PASSWORD_FILE is missing or empty (secrets role)" >&2
    exit 1
  fi
  echo "postgres: initialising a new cluster in $PGDATA"
  initdb --pgdata="$PGDATA" --username=postgres --pwfile="$POSTGRES_PASSWORD_FILE" \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Any client on the internal network must authenticate with a SCRAM password.
  printf '%s\n' 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
elif [ -s "$POSTGRES_PASSWORD_FILE" ]; then
  # Existing cluster: the secret file is the source of truth, so a rotated secret takes effect on
  # the restart that follows the rotation. Single-user mode, fed on stdin (never an argument).
  pw=$(head -n1 "$POSTGRES_PASSWORD_FILE" | sed "s/'/''/g")
  printf "ALTER ROLE postgres WITH PASSWORD '%s';\n" "$pw" \
    | postgres --single -D "$PGDATA" -c shared_buffers=16MB -c password_encryption=scram-sha-256 postgres >/dev/null
  unset pw
fi

if [ "${1:-}" = "postgres" ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql \
    -c password_encryption=scram-sha-256 "$@"
fi
exec "$@"
