#!/bin/sh
# Render the host-name templates (only our variables, nginx's own $vars are left alone) into the
# tmpfs, check the configuration, then run nginx in the foreground (tini is PID 1).
set -eu
out=/tmp/nginx/conf.d
mkdir -p "$out" /tmp/nginx/client_body /tmp/nginx/proxy /tmp/nginx/upstreams
# Upstreams (service=host:port): reached by service name. playbooks/rollout.yml points one at a single
# container while it moves traffic (then back here) and reloads nginx; a restart starts from these.
for u in api=api:8000 web=web:8080; do
  echo "set \$upstream_${u%%=*} http://${u#*=};" > "/tmp/nginx/upstreams/${u%%=*}.conf"
done
for tpl in /etc/nginx/templates/*.conf.template; do
  [ -e "$tpl" ] || continue
  name=$(basename "$tpl" .template)
  envsubst '${HYHOME_DOMAIN} ${GATEWAY_HTTPS_PORT}' < "$tpl" > "$out/$name"
done
for f in /etc/nginx/tls/cert.pem /etc/nginx/tls/key.pem; do
  if [ ! -r "$f" ]; then
    echo "gateway: $f is missing or not readable by uid $(id -u): run the tls role (secrets/certs/)" >&2
    exit 1
  fi
done
nginx -t -q -e stderr
exec nginx -e stderr -g 'daemon off;'
