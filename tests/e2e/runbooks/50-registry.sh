# Local registry (playbooks/registry.yml, docs/runbooks/registry.md), sourced by tests/e2e/runbooks.sh:
#   - the registry (Debian's docker-registry) is up on 127.0.0.1:$REGISTRY_TEST_PORT, and a second run
#     of the playbook changes nothing;
#   - publishing pushes the api's image and returns 127.0.0.1:<port>/hyhome/api@sha256:<digest>;
#   - publishing again changes nothing; a re-push of the same image gives the same digest;
#   - with the local copy gone, `docker pull <repo>@<digest>` gets the very image (same image id);
#   - playbooks/rollout.yml deploys that reference (pulled from the registry), the release file pins it,
#     and the api answers; the release file put back, day0 returns the api to hyhome/api:<tag>;
#   - an unknown service is refused with a clear message;
#   - the registry is stopped and its storage removed at the end (registry_state=absent).
# It runs its own registry (port 5055, its files under a /tmp directory the registry's user can reach:
# $WORK is 0700) so that it never touches a registry the machine runs on 5000.

REGISTRY_TEST_PORT=${REGISTRY_TEST_PORT:-5055}

registry_vars() {   # dir
  printf '%s\n' "-e" "registry_port=$REGISTRY_TEST_PORT" \
    "-e" "registry_storage_dir=$1/storage" "-e" "registry_config_dir=$1/etc" \
    "-e" "registry_pidfile=$1/registry.pid" "-e" "registry_log_file=$1/registry.log" \
    "-e" "registry_service_name=hyhome-registry-test"
}

# The image reference the running container of a service was created from.
running_image() {
  docker inspect --format '{{.Config.Image}}' "$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n1)"
}

# The value of `key: value` in a publish log (the debug line "api: pushed <ref> -> <pinned>").
published_line() { grep -oE "api: (pushed|unchanged) [^ ]+ -> [^ \"']+" "$1" | tail -n1; }

runbook_test() {
  local log t line pinned digest repushed repo tag image_id pulled_id
  REGISTRY_TEST_DIR=$(mktemp -d /tmp/hyhome-registry-test.XXXXXX)
  chmod 0755 "$REGISTRY_TEST_DIR"
  mapfile -t REGISTRY_TEST_VARS < <(registry_vars "$REGISTRY_TEST_DIR")
  trap '[ -f "$WORK/release.env.orig" ] && cp -p "$WORK/release.env.orig" "$STACK/app/release.env"
    (cd "$REPO" && .venv/bin/ansible-playbook playbooks/registry.yml "${REGISTRY_TEST_VARS[@]}" \
    -e registry_state=absent -e registry_purge_storage=true >"$LOG/registry-absent.log" 2>&1) \
    || echo "[runbooks] registry removal failed (log: $LOG/registry-absent.log)" >&2
    cp "$REGISTRY_TEST_DIR/registry.log" "$LOG/" 2>/dev/null; rm -rf "$REGISTRY_TEST_DIR"' EXIT

  say "registry up on 127.0.0.1:$REGISTRY_TEST_PORT, the api image published"
  t=$SECONDS
  log=$(playbook registry "${REGISTRY_TEST_VARS[@]}" -e registry_publish=true \
    -e '{"registry_publish_services": ["api"]}')
  curl -fsS --max-time 5 "http://127.0.0.1:$REGISTRY_TEST_PORT/v2/" >/dev/null || fail "GET /v2/ does not answer"
  line=$(published_line "$log")
  [ -n "$line" ] || fail "no published reference in $log"
  pinned=${line##* -> }
  repo=${pinned%@*}
  digest=${pinned#*@}
  tag=$(env_get HYHOME_IMAGE_TAG)
  [ "$repo" = "127.0.0.1:$REGISTRY_TEST_PORT/hyhome/api" ] || fail "published to $repo"
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "no digest in '$pinned'"
  say "registry.yml -e registry_publish=true: $((SECONDS - t)) s; $line"

  t=$SECONDS
  log=$(playbook registry "${REGISTRY_TEST_VARS[@]}" -e registry_publish=true \
    -e '{"registry_publish_services": ["api"]}')
  assert_no_change "$log"
  [ "$(published_line "$log")" = "api: unchanged ${line#api: pushed }" ] || fail "second run: $(published_line "$log")"
  say "registry.yml again: changed=0, api unchanged ($((SECONDS - t)) s)"

  # A plain re-push of the same image: the registry must answer the same digest.
  repushed=$(docker push "$repo:$tag" 2>&1 | grep -oE 'digest: sha256:[0-9a-f]{64}' | tail -n1)
  [ "$repushed" = "digest: $digest" ] || fail "re-push gave '$repushed', first push $digest"
  say "re-push: same digest"

  say "pull by digest, the local reference gone"
  image_id=$(docker image inspect --format '{{.Id}}' "$pinned")
  docker image rm "$repo:$tag" >/dev/null
  docker image rm "$pinned" >/dev/null 2>&1 || :
  ! docker image inspect "$pinned" >/dev/null 2>&1 || fail "$pinned is still on the engine"
  t=$SECONDS
  docker pull "$pinned" >/dev/null || fail "docker pull $pinned failed"
  pulled_id=$(docker image inspect --format '{{.Id}}' "$pinned")
  [ "$pulled_id" = "$image_id" ] || fail "pulled $pulled_id, pushed $image_id"
  say "pulled by digest in $((SECONDS - t)) s: image $pulled_id"

  say "roll the api out from the registry, by digest"
  release="$STACK/app/release.env"
  cp -p "$release" "$WORK/release.env.orig"
  docker image rm "$pinned" >/dev/null 2>&1 || :     # so that the rollout pulls it
  t=$SECONDS
  log=$(playbook rollout -e service=api -e "image=$pinned")
  [ "$(running_image api)" = "$pinned" ] || fail "after the rollout the api runs $(running_image api), not $pinned"
  grep -qE "^HYHOME_API_IMAGE=[\"']?$pinned[\"']?\$" "$release" || fail "the release file does not pin $pinned"
  https_get "api.$(env_get HYHOME_DOMAIN)" /healthz >/dev/null || fail "the api does not answer after the rollout"
  say "rollout by digest: $((SECONDS - t)) s; the api runs $pinned"
  cp -p "$WORK/release.env.orig" "$release"
  t=$SECONDS
  day0 >/dev/null
  [ "$(running_image api)" = "hyhome/api:$tag" ] || fail "day0 did not bring the api back to hyhome/api:$tag"
  say "back to hyhome/api:$tag by day0: $((SECONDS - t)) s"

  log=$(playbook_must_fail registry "${REGISTRY_TEST_VARS[@]}" -e registry_publish=true \
    -e '{"registry_publish_services": ["nope"]}')
  grep -q "unknown service(s) nope" "$log" || fail "an unknown service was not refused clearly (log: $log)"
}
