#!/usr/bin/env bash
# day0 on the realistic project (tests/fixtures/realistic), prepare-only, on this machine's engine:
#   1. a fresh clone of the project (git-initialised copy); day0 with hyhome_start_stack=false and
#      KAFKA_CLUSTER_ID declared as a generated identifier (env_generated) succeeds in one run;
#   2. `docker compose config -q` passes; every required variable is set; every secret, certificate
#      and data directory exists; the inferred provided secrets hold the marked placeholder and
#      both runs warn about them; the read-only host paths are reported and left untouched;
#   3. data directories carry the owners of the images' real users;
#   4. readability, for real: for every secret and TLS file, a container of the local base image
#      running as each reader's resolved uid:gid (groups, cap_drop ALL) cats it at
#      /run/secrets/<name>; a uid that reads none of them is refused every file, root (without
#      capabilities) every file it has no business reading;
#   5. a second run reports changed=0.
# No image is pulled and no container of the project starts. Logs are kept when it fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FIXTURE="$ROOT/tests/fixtures/realistic"
WORK=$(mktemp -d /tmp/hyhome-realistic.XXXXXX)
PROJECT="$WORK/homelab"
LOG="$WORK/logs"
BASE_IMAGE=debian:bookworm-slim
OUTSIDER=4321:4321           # a uid:gid no service of the project runs as
HOST_PATHS=(/ /sys /var/run /var/lib/docker /dev/disk /etc/machine-id /var/log /var/lib/docker/containers)
mkdir -p "$LOG"
PY="$ROOT/.venv/bin/python"
PLAYBOOK="$ROOT/.venv/bin/ansible-playbook"

say() { printf '\n[realistic] %s\n' "$*"; }
failures=()
check() {   # check <description> <command...>: records a failure instead of stopping, so one run shows all
  local what=$1
  shift
  if ! "$@"; then
    failures+=("$what")
    printf '[realistic] FAIL: %s\n' "$what" >&2
  fi
}
die() { printf '[realistic] FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "[realistic] logs kept in $LOG (project in $PROJECT)" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

command -v docker >/dev/null || die "docker is not installed (run scripts/setup.sh dev)"
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "local image $BASE_IMAGE missing (run scripts/setup.sh dev)"
[ -x "$PLAYBOOK" ] || die "no $PLAYBOOK (run scripts/setup.sh dev)"

host_state() {   # owner, mode and kind of the host paths the project mounts read-only ("absent" when missing)
  local p
  for p in "${HOST_PATHS[@]}"; do
    if [ -e "$p" ]; then stat -c '%n %u:%g %a %F' "$p"; else echo "$p absent"; fi
  done
}

day0() {   # day0 <log name> [ansible-playbook args]: prepare-only run on the copy; echoes the log path
  local log="$LOG/$1.log"
  shift
  if ! (cd "$ROOT" && "$PLAYBOOK" day0.yml -e "hyhome_project_dir=$PROJECT" -e hyhome_start_stack=false \
         -e '{"env_generated": {"KAFKA_CLUSTER_ID": "kafka-cluster-id"}}' \
         -e "tls_ca_dir=$WORK/ca" -e tls_trust_install=false "$@") >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    die "day0 failed (log: $log)"
  fi
  echo "$log"
}

say "fresh clone of tests/fixtures/realistic"
mkdir -p "$PROJECT"
(cd "$FIXTURE" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$PROJECT")
(cd "$PROJECT" && git init -q && git add -A \
   && git -c user.name=e2e -c user.email=e2e@example.org commit -qm "fresh clone")
[ ! -e "$PROJECT/.env" ] && [ ! -e "$PROJECT/data" ] || die "the fixture directory holds generated files"
hosts_before=$(host_state)

say "1. day0, prepare only"
t=$SECONDS
run1=$(day0 run1)
say "first run: $((SECONDS - t)) s"

say "2. the project is ready to start"
check "docker compose config -q passes" \
  docker compose --project-directory "$PROJECT" config -q
env_value() { grep -E "^$1=" "$PROJECT/.env" | tail -n1 | cut -d= -f2-; }
check ".env holds a generated Kafka cluster id (22 base64url characters)" \
  grep -qE '^KAFKA_CLUSTER_ID=[A-Za-z0-9_][A-Za-z0-9_-]{21}$' "$PROJECT/.env"
cluster_id=$(env_value KAFKA_CLUSTER_ID)
for var in TZ HYHOME_DOMAIN SMTP_HOST SMTP_FROM SMTP_USER; do
  check ".env sets $var" test -n "$(env_value "$var")"
done
check ".env holds no secret" bash -c "! grep -qiE '^[A-Z_]*(PASSWORD|SECRET|TOKEN|WEBHOOK)[A-Z_]*=.+' '$PROJECT/.env'"

"$PY" "$ROOT/tests/e2e/realistic_access.py" "$PROJECT" >"$LOG/access.json" || die "realistic_access.py failed"
jq_py() { "$PY" -c "import json,sys; d=json.load(open('$LOG/access.json')); $1"; }
while read -r path; do
  check "secret/certificate file exists and is not empty: ${path#"$PROJECT"/}" test -s "$path"
done < <(jq_py 'print("\n".join(f["path"] for f in d["files"]))')
check "the htpasswd source (registry only) exists" test -s "$PROJECT/secrets/gateway/traefik_dashboard_password"
while read -r path; do
  check "data directory exists: ${path#"$PROJECT"/}" test -d "$path"
done < <(jq_py 'print("\n".join(x["path"] for x in d["data_dirs"]))')
for f in observability/metrics/alertmanager.yml apps/ntfy/server.yml; do
  check "$f copied from its example" cmp -s "$PROJECT/$f" "$PROJECT/$f.example"
done

for name in smtp_password slack_webhook github_oauth_client_secret; do
  file=$(jq_py "print(next(f['path'] for f in d['files'] if f['name'] == '$name'))")
  check "$name holds the marked placeholder" \
    "$PY" -c "from ansible_collections.hyhome.bootstrap.plugins.module_utils.secrets import is_placeholder as p; import sys; sys.exit(not p(open('$file','rb').read()))"
  check "run 1 warns that $name is a placeholder" grep -q "$name holds a placeholder" "$run1"
  check "preflight names who reads $name, which a person must supply" \
    grep -qE "project\.secrets +$name .*provided.*(read|used) by" "$run1"
done
check "minio_root_user is a readable name, not random characters" \
  grep -qE '^[a-z][a-z0-9_.-]{2,31}$' "$PROJECT/secrets/storage/minio_root_user"

check "host paths untouched" test "$hosts_before" = "$(host_state)"
for p in "${HOST_PATHS[@]}"; do
  check "data_dirs reports $p as host path, not managed" \
    bash -c 'grep -F -- "$1 (" "$2" | grep -q "host path, not managed"' _ "$p" "$run1"
done

# OpenSearch is in the project and the engine was there already (the engine step left it alone): day0's
# kernel step set vm.max_map_count (where /proc/sys is writable; else preflight warns, as the stack is not
# started here) and persisted it for the next boot.
mmc=$(cat /proc/sys/vm/max_map_count)
if [ -w /proc/sys/vm/max_map_count ]; then
  check "vm.max_map_count is at least 262144 after day0 (has $mmc)" test "$mmc" -ge 262144
elif [ "$mmc" -lt 262144 ]; then
  check "read-only vm.max_map_count $mmc: preflight warns about it" grep -q "vm.max_map_count" "$run1"
fi
check "vm.max_map_count persisted in /etc/sysctl.d/99-hyhome.conf" \
  grep -qE '^vm\.max_map_count = [0-9]+$' /etc/sysctl.d/99-hyhome.conf

say "3. data directories carry the images' real users"
# service data dir -> uid:gid of the user the upstream image runs as (or the user: the service declares)
declare -A OWNERS=(
  [grafana]=472:0 [loki]=10001:10001 [tempo]=10001:10001 [opensearch]=1000:1000 [kafka]=1000:1000
  [prometheus]=65534:65534 [alertmanager]=65534:65534 [pushgateway]=65534:65534
  [spilo-1]=101:103 [spilo-2]=101:103 [spilo-3]=101:103 [valkey]=999:999
  [gitea]=1000:1000 [gitea-config]=1000:1000 [n8n]=1000:1000
  [minio]=0:0 [etcd-1]=0:0 [etcd-2]=0:0 [etcd-3]=0:0 [alloy]=0:0 [traefik]=0:0
)
for dir in "${!OWNERS[@]}"; do
  have=$(stat -c '%u:%g' "$PROJECT/data/$dir" 2>/dev/null || echo missing)
  check "data/$dir owned by ${OWNERS[$dir]} (has $have)" test "$have" = "${OWNERS[$dir]}"
done
# No committed file changed; the only new files are the two configs copied from their examples. All
# else day0 writes is ignored: by the project's .gitignore files, and by the one in the state dir .hyhome/.
changes=$(git -C "$PROJECT" status --porcelain | sort | tr '\n' ' ')
check "day0 changed no committed file (git status: $changes)" test "$changes" = \
  "?? apps/ntfy/server.yml ?? observability/metrics/alertmanager.yml "

say "4. readability, for real"
t=$SECONDS
# One container per identity, mounting every file it must read (or must be refused) at /run/secrets/<name>.
cat_as() {   # cat_as <uid:gid> <groups csv> <expect: ok|refused> <file>...
  local user=$1 groups=$2 expect=$3 args=() g f out
  shift 3
  for g in ${groups//,/ }; do args+=(--group-add "$g"); done
  for f in "$@"; do args+=(-v "$f:/run/secrets/$(basename "$f"):ro"); done
  out=$(docker run --rm --network none --cap-drop ALL --security-opt no-new-privileges --user "$user" \
          "${args[@]}" "$BASE_IMAGE" sh -c \
          'for f in /run/secrets/*; do if cat "$f" >/dev/null 2>&1; then echo "ok $f"; else echo "refused $f"; fi; done' 2>&1) \
    || { failures+=("docker run as $user failed: $out"); echo "$out" >&2; return; }
  echo "$out" >>"$LOG/readability.log"
  while read -r got path; do
    [ "$got" = "$expect" ] || check "$user (groups ${groups:-none}) $expect $path, got $got" false
  done <<<"$out"
}
"$PY" "$ROOT/tests/e2e/realistic_access.py" --plan "$LOG/access.json" >"$LOG/plan.txt"
# Each line is "READ uid:gid groups files..." (files are bind-mount sources: no spaces in the copy's paths).
while read -r tag user groups files; do
  [ "$tag" = READ ] || continue
  [ "$groups" = - ] && groups=""
  read -r -a list <<<"$files"
  cat_as "$user" "$groups" ok "${list[@]}"
done <"$LOG/plan.txt"
# Secrets and the key: readable by their readers only (0400 one identity, 0440 a shared group);
# certificates are public (0644). An outsider must be refused every non-public file, root without
# capabilities every non-public file it does not read.
secret_files=() notroot=()
while read -r tag kind path; do
  if [ "$tag" = NOTROOT ]; then
    [ "$kind" = cert ] || notroot+=("$path")
    continue
  fi
  mode=$(stat -c %a "$path")
  if [ "$kind" = cert ]; then
    case "$mode" in 444|644) ;; *) check "$(basename "$path") is a public certificate (has $mode)" false ;; esac
    continue
  fi
  case "$mode" in 400|440) ;; *) check "$(basename "$path") readable by its readers only (has $mode)" false ;; esac
  secret_files+=("$path")
done < <(grep -E '^(ANY|NOTROOT) ' "$LOG/plan.txt")
cat_as "$OUTSIDER" "" refused "${secret_files[@]}"
[ "${#notroot[@]}" -eq 0 ] || cat_as 0:0 "" refused "${notroot[@]}"
key_mode=$(stat -c %a "$PROJECT/secrets/certs/key.pem")
check "key.pem is single-reader (0400, has $key_mode)" test "$key_mode" = 400
say "readability: $(grep -c . "$LOG/readability.log") reads in $((SECONDS - t)) s"

say "5. second run: nothing changes"
t=$SECONDS
run2=$(day0 run2)
say "no-op re-run: $((SECONDS - t)) s"
grep -E '^[^ ].*: ok=' "$run2" >"$run2.recap"
check "second run reports changed=0 ($(cat "$run2.recap"))" bash -c "! grep -vqE 'changed=0 .*failed=0' '$run2.recap'"
grep -E 'changed:' "$run2" | head -n 20 >&2 || :
for name in smtp_password slack_webhook github_oauth_client_secret; do
  check "run 2 warns again that $name is a placeholder" grep -q "$name holds a placeholder" "$run2"
done
check "host paths still untouched" test "$hosts_before" = "$(host_state)"
check "the generated Kafka cluster id is kept" test "$(env_value KAFKA_CLUSTER_ID)" = "$cluster_id"

if [ "${#failures[@]}" -gt 0 ]; then
  printf '\n[realistic] %d check(s) failed:\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
say "passed"
