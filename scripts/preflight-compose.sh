#!/usr/bin/env bash
# AC-1: report every missing prerequisite of a Compose project's first boot, read-only.
# Prints the findings table, writes the JSON report where --json says, exits 1 when something
# blocks first boot (2 on bad input: no such directory, not a Compose project).
#   usage: scripts/preflight-compose.sh [PROJECT_DIR] [--json FILE] [--quiet] [--defer STEP ...] [--help]
#   PROJECT_DIR defaults to $HYHOME_PROJECT_DIR, else the embedded stack (./stack).
# Same checks as `ansible-playbook playbooks/preflight.yml`, without Ansible around them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${HYHOME_PYTHON:-$ROOT/.venv/bin/python}
if [ ! -x "$PY" ]; then
  echo "preflight: $PY not found; run scripts/setup.sh first (or set HYHOME_PYTHON)" >&2
  exit 2
fi
export HYHOME_PROJECT_DIR=${HYHOME_PROJECT_DIR:-$ROOT/stack}
exec "$PY" -c 'import sys
from ansible_collections.hyhome.bootstrap.plugins.module_utils.preflight import cli
sys.exit(cli(sys.argv[1:]))' "$@"
