#!/usr/bin/env bash
# AC-2: static checks of a Docker Compose project (compose config, YAML lint, secrets wiring, $VAR traps,
# bind mounts of missing files, security baseline). Prints a table; exits 1 on errors, 2 on bad input.
#   usage: scripts/validate-docker-compose.sh [PROJECT_DIR] [--json REPORT.json] [--strict]
#          [-f FILE ...] [--profile P ...] [--env-file FILE] [--no-yamllint] [--image-user REPO=UID:GID ...]
# PROJECT_DIR defaults to $HYHOME_PROJECT_DIR, else the embedded stack. The same checks run in Ansible
# as the hyhome.bootstrap.validate role (playbooks/validate.yml).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The venv makes this repository importable as the hyhome.bootstrap collection.
[ -x "$ROOT/.venv/bin/python" ] || bash "$ROOT/scripts/lib/venv.sh" runtime >&2
export HYHOME_PROJECT_DIR="${HYHOME_PROJECT_DIR:-$ROOT/stack}"
exec "$ROOT/.venv/bin/python" -m ansible_collections.hyhome.bootstrap.plugins.module_utils.compose_validate "$@"
