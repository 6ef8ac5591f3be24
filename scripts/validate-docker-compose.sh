#!/usr/bin/env bash
# AC-2: static checks of a Docker Compose project (compose config, YAML lint, secrets wiring, $VAR traps,
# bind mounts of missing files, security baseline). Prints a table.
#   exit codes: 0 no error; 1 errors found (or warnings, with --strict); 2 bad input: no such project, a bad
#   option, or a file that cannot be used at all (not UTF-8 text, binary/NUL, empty, a directory, top level
#   not a mapping, nested too deep, YAML aliases expanding past the limit), one line on stderr naming it;
#   3 internal error (one line; HYHOME_DEBUG=1 shows the traceback). A YAML syntax error is a finding (1).
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
