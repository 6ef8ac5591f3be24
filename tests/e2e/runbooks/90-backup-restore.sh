# Runbook backup / restore (playbooks/backup.yml, playbooks/restore.yml), sourced by tests/e2e/runbooks.sh:
#   - rows written through the API (gateway, TLS), then a backup: one archive, 0600 in a 0700 directory, a
#     name without values, no secret value in the playbook's log;
#   - refused before anything is touched: no archive given, a missing archive, a truncated one (files and
#     containers unchanged; damaged and hostile archives in detail: tests/unit/test_backup.py);
#   - everything destroyed (containers, volumes, data dirs, secrets, certificates, .env, the CA), then
#     restore.yml (verify, files, day0, dump load): the rows are there, every secret, certificate, CA file
#     and .env is byte-identical, and a following day0 changes nothing. Prints the RTO.

# Content hash of every file under the given paths ("hash  path" lines, sorted): secrets, certs, CA, .env.
bk_fingerprint() {
  find "$@" -type f ! -name '.*.tmp.hyhome-*' -print0 | sort -z | xargs -0 sha256sum
}

bk_refused() {   # log expected-message: the restore was refused with that message, nothing changed
  grep -qF -- "$2" "$1" || fail "unclear refusal, expected '$2' (log: $1)"
  [ "$(bk_fingerprint "$STACK/secrets" "$STACK/.env" "$WORK/ca")" = "$files_before" ] \
    || fail "a refused restore changed files (log: $1)"
  [ "$(started_at)" = "$containers_before" ] || fail "a refused restore touched a container (log: $1)"
}

runbook_test() {
  local rows n log archive members body t backup_s rto day0_s files_before containers_before bad secrets_hash
  rows=()
  for n in 1 2 3; do
    rows+=("backup-row-$n-$RANDOM")
    body=$(api_items "${rows[-1]}")
    grep -q '"id"' <<<"$body" || fail "POST /items through the gateway failed: $body"
  done

  say "backup"
  t=$SECONDS
  log=$(playbook backup -e "hyhome_backup_dir=$WORK/backups")
  backup_s=$((SECONDS - t))
  archive=$(find "$WORK/backups" -maxdepth 1 -name "$PROJECT-*.tar.gz" -type f)
  [ "$(wc -l <<<"$archive")" = 1 ] && [ -n "$archive" ] || fail "expected one archive in $WORK/backups: $archive"
  [ "$(stat -c %a "$archive")" = 600 ] || fail "archive mode $(stat -c %a "$archive"), expected 600"
  [ "$(stat -c %a "$WORK/backups")" = 700 ] || fail "backup dir mode $(stat -c %a "$WORK/backups"), expected 700"
  [[ "$(basename "$archive")" =~ ^hyhome-[0-9]{8}T[0-9]{6}Z\.tar\.gz$ ]] || fail "unexpected archive name $archive"
  members=$(tar -tzf "$archive")
  grep -qx 'dumps/postgres.sql' <<<"$members" || fail "no postgres dump in the archive"
  grep -qx 'files/ca/rootCA-key.pem' <<<"$members" || fail "no CA key in the archive"
  if [ -d "$STACK/secrets/.history" ]; then
    grep -q '^files/secrets/.history/' <<<"$members" || fail "no secrets history in the archive"
  fi
  while IFS= read -r -d '' f; do      # no secret value in the backup's log
    if [ -s "$f" ] && grep -qF -f <(head -n1 "$f") "$log"; then fail "the value of $f is in the backup log"; fi
  done < <(find "$STACK/secrets" -path "$STACK/secrets/certs" -prune -o -type f ! -path '*/.history/*' -print0)
  say "backup: $backup_s s, $(du -k "$archive" | cut -f1) KiB"

  say "refused archives: nothing touched"
  files_before=$(bk_fingerprint "$STACK/secrets" "$STACK/.env" "$WORK/ca")
  containers_before=$(started_at)
  log=$(playbook_must_fail restore)
  bk_refused "$log" "give the archive to restore"
  log=$(playbook_must_fail restore -e "archive=$WORK/backups/no-such.tar.gz")
  bk_refused "$log" "no-such.tar.gz does not exist; nothing was restored"
  bad="$WORK/truncated.tar.gz"
  head -c "$(($(stat -c %s "$archive") / 2))" "$archive" >"$bad"
  log=$(playbook_must_fail restore -e "archive=$bad")
  bk_refused "$log" "it is damaged or truncated"
  rm -f "$bad"     # (flipped bytes, tampered members, hostile names: tests/unit/test_backup.py)

  say "destroy: containers, volumes, data, secrets, certificates, .env, CA"
  secrets_hash=$files_before
  (cd "$STACK" && docker compose down -v --remove-orphans >/dev/null 2>&1)
  rm -rf "$STACK/secrets" "$STACK/data" "$STACK/.env" "$STACK/.hyhome" "$WORK/ca"
  [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "containers left"

  say "restore + day0 + dump load"
  t=$SECONDS
  log=$(playbook restore -e "archive=$archive")
  rto=$((SECONDS - t))
  assert_all_healthy
  [ "$(bk_fingerprint "$STACK/secrets" "$STACK/.env" "$WORK/ca")" = "$secrets_hash" ] \
    || fail "secrets, certificates, .env or CA differ after the restore (log: $log)"
  body=$(api_items)
  for n in "${rows[@]}"; do
    grep -q "$n" <<<"$body" || fail "row $n missing after the restore: $body (log: $log)"
  done
  body=$(api_items "after-restore")
  grep -q after-restore <<<"$body" || fail "the API cannot write after the restore: $body"

  t=$SECONDS
  log=$(day0)
  day0_s=$((SECONDS - t))
  assert_no_change "$log"
  say "RTO (restore.yml: verify + files + day0 + dump load): $rto s; day0 afterwards: $day0_s s, changed=0"
}
