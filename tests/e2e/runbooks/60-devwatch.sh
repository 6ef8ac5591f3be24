# Dev profile (stack/compose.dev.yaml, docs/runbooks/dev-profile.md), sourced by tests/e2e/runbooks.sh:
#   - `docker compose -f compose.yaml -f compose.dev.yaml watch api` replaces the api with the dev one
#     (image hyhome/api-dev, source synced by develop.watch, server restarted by the reloader);
#   - an edit of app/api/server.py is served through the gateway: the time from the write to the
#     first response carrying the edit is printed, for DEVWATCH_EDITS edits (default 3);
#   - after the watch stops and the source is put back, day0 restores the production api (its image,
#     its read-only bind mount), and a second day0 changes nothing.

DEVWATCH_EDITS=${DEVWATCH_EDITS:-3}
DEVWATCH_WAIT=${DEVWATCH_WAIT:-20}     # seconds an edit may take before the test fails

# X-Hyhome-Version of GET /healthz on api.<domain> through the gateway (empty when it fails).
api_version_header() {
  local port host
  port=$(env_get GATEWAY_HTTPS_PORT)
  host="api.$(env_get HYHOME_DOMAIN)"
  curl -sS --max-time 2 -o /dev/null -D - --cacert "$STACK/secrets/certs/rootCA.pem" \
    --resolve "$host:$port:127.0.0.1" "https://$host:$port/healthz" 2>/dev/null \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "x-hyhome-version" {print $2}'
}

# Seconds (3 decimals) from now until the gateway answers with X-Hyhome-Version $1; fails after $2 s.
wait_for_version() {
  local want=$1 limit=$2 start now
  start=$EPOCHREALTIME
  while :; do
    [ "$(api_version_header)" = "$want" ] && break
    now=$EPOCHREALTIME
    if awk -v a="$start" -v b="$now" -v l="$limit" 'BEGIN {exit !(b - a > l)}'; then
      return 1
    fi
    sleep 0.05
  done
  now=$EPOCHREALTIME
  awk -v a="$start" -v b="$now" 'BEGIN {printf "%.3f\n", b - a}'
}

api_image() {
  docker inspect --format '{{.Config.Image}}' \
    "$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter label=com.docker.compose.service=api)"
}

devwatch_stop() {   # the watch session this test started, by its pid
  if [ -n "${watch_pid:-}" ] && kill -0 "$watch_pid" 2>/dev/null; then
    kill -TERM "$watch_pid" 2>/dev/null || :
    for _ in $(seq 50); do kill -0 "$watch_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  watch_pid=
}

runbook_test() {
  local src backup wlog t i took times=() marker log
  src="$STACK/app/api/server.py"
  backup="$WORK/server.py.orig"
  cp -p "$src" "$backup"
  grep -q '^if __name__ == "__main__":' "$src" || fail "$src has no __main__ guard to insert the edit before"
  trap 'devwatch_stop; cp -p "$backup" "$src"' EXIT

  say "docker compose watch api (dev profile)"
  wlog=$(next_log devwatch)
  t=$SECONDS
  (cd "$STACK" && exec setsid docker compose -f compose.yaml -f compose.dev.yaml watch api) \
    >"$wlog" 2>&1 </dev/null &
  watch_pid=$!
  for _ in $(seq 240); do
    grep -q "Watch enabled" "$wlog" && [ "$(api_image)" = "hyhome/api-dev:$(env_get HYHOME_IMAGE_TAG)" ] \
      && [ -n "$(api_version_header)" ] && break
    kill -0 "$watch_pid" 2>/dev/null || { tail -n 30 "$wlog" >&2; fail "docker compose watch exited (log: $wlog)"; }
    sleep 0.5
  done
  [ -n "$(api_version_header)" ] || { tail -n 30 "$wlog" >&2; fail "the dev api does not answer (log: $wlog)"; }
  say "dev api up in $((SECONDS - t)) s (image $(api_image))"

  for i in $(seq "$DEVWATCH_EDITS"); do
    marker="dev-$i-$RANDOM"
    # The edit a developer makes: the version the API reports, read at each response.
    python3 - "$src" "$backup" "$marker" <<'PY'
import os, sys
src, orig, marker = sys.argv[1:]
text = open(orig, encoding="utf-8").read()
guard = '\nif __name__ == "__main__":'
text = text.replace(guard, f'\nVERSION = "{marker}"  # dev edit\n\n{guard}', 1)
tmp = src + ".tmp"
with open(tmp, "w", encoding="utf-8") as fh:
    fh.write(text)
os.replace(tmp, src)
PY
    took=$(wait_for_version "$marker" "$DEVWATCH_WAIT") \
      || { tail -n 20 "$wlog" >&2; fail "edit $i not live after ${DEVWATCH_WAIT}s (log: $wlog)"; }
    times+=("$took")
    say "edit $i live through the gateway in ${took}s"
    sleep 1
  done
  printf '[runbooks] devwatch: edit-to-response seconds: %s (max %s)\n' "${times[*]}" \
    "$(printf '%s\n' "${times[@]}" | sort -n | tail -n1)"

  say "back to production: stop the watch, restore the source, day0"
  devwatch_stop
  cp -p "$backup" "$src"
  trap - EXIT
  t=$SECONDS
  day0 >/dev/null
  [ "$(api_image)" = "hyhome/api:$(env_get HYHOME_IMAGE_TAG)" ] || fail "day0 left the api on image $(api_image)"
  docker inspect --format '{{range .Mounts}}{{.Destination}}:{{.RW}} {{end}}' \
    "$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter label=com.docker.compose.service=api)" \
    | grep -q '/opt/hyhome/api:false' || fail "the production api lost its read-only source bind mount"
  assert_all_healthy
  say "production api restored by day0 in $((SECONDS - t)) s"
  log=$(day0)
  assert_no_change "$log"
}
