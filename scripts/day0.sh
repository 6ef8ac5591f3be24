#!/usr/bin/env bash
# The main job from a clean clone: set up what is missing, then run day0.yml.
# Extra arguments go to ansible-playbook (e.g. --check --diff, --tags secrets,tls, -e hyhome_project_dir=/srv/app).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh" runtime
cd "$ROOT"
exec "$ROOT/.venv/bin/ansible-playbook" day0.yml "$@"
