# Runbook renew-certs (playbooks/renew-certs.yml), sourced by tests/e2e/runbooks.sh:
#   - not due: nothing re-issued, nothing restarted;
#   - force=true: a new leaf; only the gateway (which mounts it) is recreated; the gateway serves the new
#     serial and it verifies against rootCA.pem (chain and name);
#   - rotate_ca=true: a new CA; the gateway serves a new leaf that verifies against the new CA and not
#     the old one, and this host trusts the new CA (curl with the system trust store, no --cacert).

served_serial() {   # [ca-file]: the serial the gateway serves; with a CA file, chain and name must verify
  local port domain
  port=$(env_get GATEWAY_HTTPS_PORT)
  domain=$(env_get HYHOME_DOMAIN)
  if [ $# -gt 0 ]; then
    openssl s_client -connect "127.0.0.1:$port" -servername "web.$domain" -CAfile "$1" -verify_return_error \
      -verify_hostname "web.$domain" </dev/null 2>/dev/null | openssl x509 -noout -serial
  else
    openssl s_client -connect "127.0.0.1:$port" -servername "web.$domain" </dev/null 2>/dev/null \
      | openssl x509 -noout -serial
  fi
}

changed_services() {
  comm -13 <(echo "$1") <(echo "$2") | awk '{print $1}' | sort -u | tr '\n' ' '
}

runbook_test() {
  local before after log serial0 serial1 serial2 t old_ca domain port
  domain=$(env_get HYHOME_DOMAIN)
  port=$(env_get GATEWAY_HTTPS_PORT)
  serial0=$(served_serial "$STACK/secrets/certs/rootCA.pem") || fail "the gateway's certificate does not verify before renewal"

  say "not due: nothing happens"
  before=$(started_at)
  t=$SECONDS
  log=$(playbook renew-certs)
  say "renew-certs (not due): $((SECONDS - t)) s"
  grep -q "leaf not due" "$log" || fail "expected 'leaf not due' (log: $log)"
  [ "$before" = "$(started_at)" ] || fail "a renewal that was not due restarted a container"
  [ "$serial0" = "$(served_serial)" ] || fail "the served serial changed although nothing was due"

  say "force=true: new leaf, only the gateway recreated"
  t=$SECONDS
  log=$(playbook renew-certs -e force=true)
  say "renew-certs force=true: $((SECONDS - t)) s"
  after=$(started_at)
  [ "$(changed_services "$before" "$after")" = "gateway " ] \
    || fail "renewal recreated '$(changed_services "$before" "$after")', expected 'gateway ' (log: $log)"
  serial1=$(served_serial "$STACK/secrets/certs/rootCA.pem") || fail "the new certificate does not verify against the CA"
  [ "$serial1" != "$serial0" ] || fail "the gateway still serves $serial0"
  grep -q "the gateway serves serial" "$log" || fail "the playbook did not verify the gateway (log: $log)"
  say "served serial: ${serial0#serial=} -> ${serial1#serial=}"
  https_get "web.$domain" / >/dev/null || fail "web does not answer through the renewed gateway"

  say "rotate_ca=true: new CA, new leaf, trust re-installed"
  old_ca="$WORK/old-rootCA.pem"
  cp "$STACK/secrets/certs/rootCA.pem" "$old_ca"
  t=$SECONDS
  log=$(playbook renew-certs -e rotate_ca=true)
  say "renew-certs rotate_ca=true: $((SECONDS - t)) s"
  ! cmp -s "$old_ca" "$STACK/secrets/certs/rootCA.pem" || fail "rootCA.pem did not change"
  serial2=$(served_serial "$STACK/secrets/certs/rootCA.pem") || fail "the leaf does not verify against the new CA"
  [ "$serial2" != "$serial1" ] || fail "no new leaf with the new CA"
  if served_serial "$old_ca" >/dev/null 2>&1; then fail "the new leaf still verifies against the old CA"; fi
  curl -fsS --max-time 10 --resolve "web.$domain:$port:127.0.0.1" "https://web.$domain:$port/" >/dev/null \
    || fail "this host does not trust the new CA (system trust store)"
  https_get "api.$domain" /readyz | grep -q '"ok"' || fail "api does not answer through the gateway after the CA rotation"
}
