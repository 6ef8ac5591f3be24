#!/bin/sh
# redis-server entrypoint: write a config with the password from the secret file into the tmpfs
# (mode 0600, never on a command line), then run redis in the foreground (tini is PID 1).
set -eu
file=${REDIS_PASSWORD_FILE:-/run/secrets/redis_password}
if [ ! -s "$file" ] || [ ! -r "$file" ]; then
  echo "cache: $file is missing, empty or unreadable by uid $(id -u) (secrets role)" >&2
  exit 1
fi
umask 077
conf=/tmp/redis.conf
# Escape backslashes and double quotes for redis' quoted-string syntax.
password=$(head -n1 "$file" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
cat > "$conf" <<CONF
bind 0.0.0.0
port 6379
protected-mode yes
save ""
appendonly no
dir /tmp
maxmemory ${REDIS_MAXMEMORY:-48mb}
maxmemory-policy allkeys-lru
requirepass "$password"
CONF
unset password
exec redis-server "$conf"
