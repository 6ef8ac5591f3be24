# Runbook rollout (playbooks/rollout.yml), sourced by tests/e2e/runbooks.sh:
#   - a bounded load probe (load_probe.py: ~20 requests/s through the gateway to the API, a new TLS
#     connection each, trusting only the project's CA) runs during each API rollout;
#   - api -> a new release (the same build under a new tag): 0 failed requests, X-Hyhome-Version seen
#     going old -> new, no other container restarted; then day0 changes nothing and keeps the release;
#   - api -> a broken release (its healthcheck fails): rolled back, 0 failed requests, the old version
#     still answers, release.env unchanged, no other container restarted;
#   - web -> a new release: /cgi-bin/version answers the new X-Hyhome-Version;
#   - bad input (an unknown service, a service without a healthcheck) is refused with a clear message and
#     nothing changes (the other refusals are unit-tested: tests/unit/test_rollout.py);
#   - api and web are rolled out back to the release they started with, and release.env restored.
# Prints the request counts and each rollout's duration.

ROLLOUT_PROBE_RATE=20

rollout_version() {   # host path -> the X-Hyhome-Version header
  local port
  port=$(env_get GATEWAY_HTTPS_PORT)
  curl -fsS --max-time 10 -o /dev/null -D - --cacert "$STACK/secrets/certs/rootCA.pem" \
    --resolve "$1:$port:127.0.0.1" "https://$1:$port$2" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-hyhome-version" {print $2}'
}

others_started() {   # started_at without the lines of service $1
  started_at | awk -v s="$1" '$1 != s'
}

image_of() {   # service -> the image reference its container runs
  docker inspect --format '{{ .Config.Image }}' \
    "$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1")"
}

# rollout_under_load NAME MUST_FAIL(0|1) ARGS... : runs playbooks/rollout.yml with the probe on; leaves
# the probe's summary in $WORK/probe-NAME.json and the playbook log path in ROLLOUT_LOG.
rollout_under_load() {
  local name=$1 must_fail=$2 stop="$WORK/probe-$1.stop" out="$WORK/probe-$1.json" pid t
  shift 2
  rm -f "$stop" "$out"
  "$REPO/.venv/bin/python" "$REPO/tests/e2e/runbooks/load_probe.py" \
    --url "https://api.$(env_get HYHOME_DOMAIN):$(env_get GATEWAY_HTTPS_PORT)/healthz" \
    --cacert "$STACK/secrets/certs/rootCA.pem" --rate "$ROLLOUT_PROBE_RATE" \
    --stop-file "$stop" --max-seconds 300 --out "$out" 2>/dev/null &
  pid=$!
  sleep 2   # some requests before the rollout starts
  t=$SECONDS
  if [ "$must_fail" = 1 ]; then
    ROLLOUT_LOG=$(playbook_must_fail rollout "$@")
  else
    ROLLOUT_LOG=$(playbook rollout "$@")
  fi
  ROLLOUT_SECONDS=$((SECONDS - t))
  touch "$stop"
  wait "$pid" || fail "the load probe failed"
  [ -s "$out" ] || fail "the load probe wrote no summary"
}

probe_field() {   # name expr -> a value of the probe's summary
  "$REPO/.venv/bin/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' \
    "$WORK/probe-$1.json" "$2"
}

runbook_test() {
  local domain old_version old_image old_web_image old_web release_before before log seq pid t
  domain=$(env_get HYHOME_DOMAIN)
  release_before=$(cat "$STACK/app/release.env")
  old_version=$(rollout_version "api.$domain" /healthz)
  old_image=$(image_of api)
  old_web_image=$(image_of web)
  old_web=$(rollout_version "web.$domain" /cgi-bin/version)
  [ -n "$old_version" ] || fail "the API answers no X-Hyhome-Version header"
  [ -n "$old_web" ] || fail "web's /cgi-bin/version answers no X-Hyhome-Version header"
  say "api answers version $old_version ($old_image), web $old_web ($old_web_image)"

  say "bad input is refused"
  log=$(playbook_must_fail rollout -e service=nope -e tag=x)
  grep -q "unknown service ''nope'': the project''s services are" "$log" || fail "unknown service: no clear message (log: $log)"
  log=$(playbook_must_fail rollout -e service=postgres-init -e tag=x)
  grep -q "service ''postgres-init'' has no healthcheck" "$log" || fail "no healthcheck: no clear message (log: $log)"
  [ "$(cat "$STACK/app/release.env")" = "$release_before" ] || fail "a refused rollout changed release.env"

  say "api: $old_version -> e2e-2 under load"
  docker tag "$old_image" "${old_image%:*}:e2e-2"
  before=$(others_started api)
  rollout_under_load good 0 -e service=api -e tag=e2e-2
  say "rollout api -> e2e-2: $ROLLOUT_SECONDS s; probe: $(probe_field good 'f"{requests} requests ({rate}/s), {failed} failed, versions {sequence}, seen at {seen}"')"
  [ "$(probe_field good failed)" = 0 ] || fail "requests failed during the rollout: $(probe_field good failures)"
  # Answers complete out of order across the probe's clients, and for a moment after a reload the old
  # nginx workers still accept connections: old and new may interleave briefly; the first answer must be
  # the old version, the last the new one, and nothing else.
  seq=$(probe_field good '",".join(sequence)')
  [ "$(probe_field good "set(versions) == {'$old_version', 'e2e-2'} and sequence[0] == '$old_version' \
        and sequence[-1] == 'e2e-2'")" = True ] || fail "the probe saw versions '$seq', expected '$old_version' then 'e2e-2'"
  [ "$(rollout_version "api.$domain" /healthz)" = e2e-2 ] || fail "the API does not answer version e2e-2"
  [ "$(others_started api)" = "$before" ] || fail "the rollout restarted other containers"
  grep -q '^HYHOME_API_VERSION=e2e-2$' "$STACK/app/release.env" || fail "release.env does not record e2e-2"

  say "day0 after the rollout: changed=0, the release kept"
  assert_no_change "$(day0)"
  [ "$(rollout_version "api.$domain" /healthz)" = e2e-2 ] || fail "day0 flipped the API back"

  say "api: e2e-2 -> e2e-broken (healthcheck fails) under load: automatic rollback"
  printf 'FROM %s\nUSER root\nRUN rm -rf /usr/lib/python3/dist-packages/psycopg2\nUSER 1000:1000\n' "$old_image" \
    | docker build -q -t "${old_image%:*}:e2e-broken" - >"$LOG/build-e2e-broken.log" 2>&1 \
    || fail "cannot build the broken image (log: $LOG/build-e2e-broken.log)"
  before=$(started_at)
  rollout_under_load broken 1 -e service=api -e tag=e2e-broken -e health_timeout=10
  say "rollout api -> e2e-broken, rolled back: $ROLLOUT_SECONDS s; probe: $(probe_field broken 'f"{requests} requests ({rate}/s), {failed} failed, versions {sequence}"')"
  grep -q "rolled back: .* keeps serving version e2e-2" "$ROLLOUT_LOG" || fail "no rollback message (log: $ROLLOUT_LOG)"
  [ "$(probe_field broken failed)" = 0 ] || fail "requests failed during the rollback: $(probe_field broken failures)"
  [ "$(probe_field broken '",".join(sequence)')" = e2e-2 ] || fail "the probe saw $(probe_field broken sequence)"
  [ "$(rollout_version "api.$domain" /healthz)" = e2e-2 ] || fail "the old version does not answer after the rollback"
  [ "$(started_at)" = "$before" ] || fail "the rollback left a container changed"
  grep -q '^HYHOME_API_VERSION=e2e-2$' "$STACK/app/release.env" || fail "the rollback changed release.env"

  say "web: $old_web -> e2e-2"
  docker tag "$old_web_image" "${old_web_image%:*}:e2e-2"
  before=$(others_started web)
  t=$SECONDS
  playbook rollout -e service=web -e tag=e2e-2 >/dev/null
  say "rollout web -> e2e-2: $((SECONDS - t)) s"
  [ "$(rollout_version "web.$domain" /cgi-bin/version)" = e2e-2 ] || fail "web does not answer version e2e-2"
  [ "$(others_started web)" = "$before" ] || fail "the web rollout restarted other containers"

  say "back to the starting releases (api and web at the same time: each touches only its own upstream)"
  t=$SECONDS
  playbook rollout -e service=api -e "tag=${old_image##*:}" -e "version=$old_version" >/dev/null &
  pid=$!
  playbook rollout -e service=web -e "tag=${old_web_image##*:}" -e "version=$old_web" >/dev/null
  wait "$pid" || fail "the rollout of api back to $old_version failed"
  say "two rollouts back, in parallel: $((SECONDS - t)) s"
  printf '%s\n' "$release_before" >"$STACK/app/release.env"
  [ "$(rollout_version "api.$domain" /healthz)" = "$old_version" ] || fail "the API is not back at $old_version"
  docker rmi "${old_image%:*}:e2e-2" "${old_image%:*}:e2e-broken" "${old_web_image%:*}:e2e-2" >/dev/null
}
