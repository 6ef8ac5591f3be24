#!/usr/bin/env bash
# day0 end to end, on this machine's Docker engine, from a clean clone of the committed tree:
#   0. --check on the fresh host succeeds and writes nothing;
#   1. first run (`hyhome day0 --json`; scripts/day0.sh, the README's command, runs it too) -> every service
#      healthy, and the JSON report agrees with the running stack (health, URLs answering, CA);
#      the gateway answers over TLS trusting only rootCA.pem; web and API answer through it;
#      the init sidecar exited 0 and its role exists in PostgreSQL;
#   2. second run -> changed=0 and no container's StartedAt changed; --check -> changed=0;
#   3. drift battery, each fixed by one re-run;
#   4. a persistent secret deleted after the database holds data -> refused, then restored.
# Leaves nothing behind: containers, volumes, data, CA trust and the clone are removed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d /tmp/hyhome-e2e.XXXXXX)
REPO="$WORK/repo"
STACK="$REPO/stack"
PROJECT=hyhome
LOG="$WORK/logs"
mkdir -p "$LOG"

source "$ROOT/tests/e2e/lib.sh"
trap 'stack_cleanup $?' EXIT

# The hyhome --json report against the running stack: every container's service reported healthy,
# every URL answering over TLS with only rootCA.pem trusted, the CA where it says and trusted here.
check_report() {
  local services
  services=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --format '{{ .Label "com.docker.compose.service" }}' | sort -u | tr '\n' ' ')
  "$REPO/.venv/bin/python" - "$1" "$services" <<'PY' || fail "the hyhome report disagrees with the stack (report: $1)"
import json, subprocess, sys
doc = json.load(open(sys.argv[1]))
assert doc["status"] == "ok" and doc["exit_code"] == 0 and doc["failure"] is None, doc["status"]
assert [s["name"] for s in doc["steps"]][:2] == ["engine", "preflight"] and all(
    s["status"] in ("ok", "changed") for s in doc["steps"]), [(s["name"], s["status"]) for s in doc["steps"]]
health = {h["service"]: h["healthy"] for h in doc["health"]}
running = set(sys.argv[2].split())
assert running and running <= set(health) and all(health.values()), (health, running)
assert doc["urls"], "no URL in the report"
ca = doc["ca"]["certificate_path"]
assert open(ca).read().startswith("-----BEGIN CERTIFICATE-----") and doc["ca"]["trusted_here"] is True, doc["ca"]
for u in doc["urls"]:
    assert u["verified"], u
    code = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", ca,
                           "--resolve", f"{u['server_name']}:{u['port']}:{u['address']}", u["url"]],
                          capture_output=True, text=True).stdout
    assert code.isdigit() and code != "000", (u["url"], code)
print(f"[e2e] report: {len(health)} services healthy, {len(doc['urls'])} URLs answering, CA {ca} trusted")
PY
}

say "clean clone of $ROOT at $(git -C "$ROOT" rev-parse --short HEAD)"
git clone -q "$ROOT" "$REPO"

say "0. --check on the fresh host: succeeds and writes nothing"
snap() {   # the clone's untracked and ignored files (the venv aside), the CA dir, the project's containers
  # .venv and the hyhome command's run records (.hyhome/ at the repository root) are not the project's
  (cd "$REPO" && git status --porcelain --ignored | grep -v -e '^!! \.venv/$' -e '^!! \.hyhome/$' || :)
  ls -A "$WORK/ca" 2>/dev/null || :
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
}
(cd "$REPO" && bash scripts/setup.sh runtime >/dev/null)
fresh=$(snap)
rc=0
(cd "$REPO" && ./scripts/day0.sh -e "tls_ca_dir=$WORK/ca" --check --diff) >"$(next_log check-fresh)" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--check on a fresh host exited $rc, expected 2 (hyhome check: changes to make)"
[ "$fresh" = "$(snap)" ] || fail "--check on a fresh host wrote something: $(diff <(echo "$fresh") <(snap) | head -5)"

say "1. first day0 run (hyhome day0 --json)"
t=$SECONDS
log=$(next_log day0-json)
(cd "$REPO" && .venv/bin/hyhome day0 --json -e "tls_ca_dir=$WORK/ca") >"$log.json" 2>"$log" \
  || { cat "$log" "$log.json" | tail -n 60 >&2; fail "hyhome day0 --json failed (report: $log.json)"; }
say "first run: $((SECONDS - t)) s"
assert_all_healthy
check_report "$log.json"
domain=$(env_get HYHOME_DOMAIN)
https_get "web.$domain" / | grep -qi 'hy-home' || fail "web did not answer through the gateway"
https_get "api.$domain" /readyz | grep -q '"ok"' || fail "api (with its database check) did not answer through the gateway"
for v in 1.0 1.1; do
  if curl -fsS --max-time 5 --tlsv$v --tls-max $v --cacert "$STACK/secrets/certs/rootCA.pem" \
       --resolve "web.$domain:$(env_get GATEWAY_HTTPS_PORT):127.0.0.1" "https://web.$domain:$(env_get GATEWAY_HTTPS_PORT)/" >/dev/null 2>&1; then
    fail "gateway accepted TLS $v"
  fi
done
init=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=postgres-init")
[ -n "$init" ] || fail "no postgres-init container"
[ "$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$init")" = "exited 0" ] || fail "postgres-init did not exit 0"
app_user=$(env_get APP_DB_USER)
[ "$(psql_q "select 1 from pg_roles where rolname = '$app_user'")" = 1 ] || fail "role $app_user missing in PostgreSQL"
grep -q . "$STACK/.env" && ! grep -qiE '^[A-Z_]*(PASSWORD|SECRET|TOKEN)[A-Z_]*=.+' "$STACK/.env" || fail ".env holds a secret"

say "2. second run: nothing changes, nothing restarts"
before=$(started_at)
t=$SECONDS
log=$(day0)
say "no-op re-run: $((SECONDS - t)) s"
assert_no_change "$log"
[ "$before" = "$(started_at)" ] || fail "a container restarted on a no-change run"
log=$(day0 --check --diff)
assert_no_change "$log"
[ "$before" = "$(started_at)" ] || fail "--check touched a container"

say "3. drift battery"
# (a) a secret made world-readable
chmod 0644 "$STACK/secrets/cache/redis_password"
day0 >/dev/null
[ "$(stat -c %a "$STACK/secrets/cache/redis_password")" = 400 ] || fail "secret mode not restored"
# (b) a data directory chowned wrong
chown -R 0:0 "$STACK/data/postgres"
day0 >/dev/null
[ "$(stat -c %u "$STACK/data/postgres")" = 999 ] || fail "data dir owner not restored"
# (c) cert.pem deleted: re-issued, and the gateway (which mounts it) recreated
gw_before=$(started_at | awk '$1 == "gateway" {print $2}')
rm -f "$STACK/secrets/certs/cert.pem"
day0 >/dev/null
[ -s "$STACK/secrets/certs/cert.pem" ] || fail "cert.pem not re-issued"
[ "$gw_before" != "$(started_at | awk '$1 == "gateway" {print $2}')" ] || fail "gateway not recreated for the new certificate"
https_get "web.$domain" / >/dev/null || fail "gateway does not serve the re-issued certificate"
# (d) a container stopped
(cd "$STACK" && docker compose stop -t 5 web >/dev/null 2>&1)
day0 >/dev/null
assert_all_healthy
# (e) a .env value edited
sed -i 's/^PROMETHEUS_RETENTION=.*/PROMETHEUS_RETENTION=1d/' "$STACK/.env"
day0 >/dev/null
[ "$(env_get PROMETHEUS_RETENTION)" = 7d ] || fail ".env drift not corrected"
assert_all_healthy
# (f) a secret rotated: exactly its consumers are recreated
before=$(started_at)
old=$(sha256sum "$STACK/secrets/cache/redis_password")
log=$(day0 -e '{"secrets_rotate": ["redis_password"]}')
[ "$old" != "$(sha256sum "$STACK/secrets/cache/redis_password")" ] || fail "redis_password not rotated"
compgen -G "$STACK/secrets/.history/cache/redis_password/*-rotated-out" >/dev/null || fail "no rotation history for redis_password"
after=$(started_at)
# Services whose container id or StartedAt differ (diff exits 1 when they do; that is expected).
changed_services=$(comm -13 <(echo "$before") <(echo "$after") | awk '{print $1}' | sort -u | tr '\n' ' ')
[ "$changed_services" = "cache cache-exporter " ] || fail "rotation recreated '$changed_services', expected 'cache cache-exporter ' (log: $log)"
assert_all_healthy
# A final re-run after the battery is a no-op again.
assert_no_change "$(day0)"

say "4. a persistent secret lost after the database holds data"
pw="$STACK/secrets/postgres/postgres_password"
saved=$(sha256sum <"$pw")
before=$(started_at)
# (a) with its history present: restored from the history, the same value, nothing restarted
rm -f "$pw"
log=$(day0)
grep -q 'postgres_password.*restored from history' "$log" || fail "no warning that postgres_password was restored"
[ "$(sha256sum <"$pw")" = "$saved" ] || fail "postgres_password came back with a different value"
[ "$before" = "$(started_at)" ] || fail "restoring the same value restarted a container"
# (b) file and history both gone: refused, nothing generated, the reason names the data
cp -p "$pw" "$WORK/postgres_password.saved"
rm -rf "$pw" "$STACK/secrets/.history/postgres/postgres_password"
log=$(next_log day0-refused)
if (cd "$REPO" && ./scripts/day0.sh -e "tls_ca_dir=$WORK/ca") >"$log" 2>&1; then
  fail "day0 silently replaced a lost persistent secret"
fi
grep -q 'postgres_password is missing and has no history' "$log" || fail "the refusal does not say why (log: $log)"
[ ! -e "$pw" ] || fail "a new postgres_password was generated"
# Putting the value back (from a backup) converges again without restarting anything.
cp -p "$WORK/postgres_password.saved" "$pw"
log=$(day0)
[ "$before" = "$(started_at)" ] || fail "putting the same value back restarted a container"
assert_no_change "$(day0)"

say "passed"
