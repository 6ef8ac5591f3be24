#!/usr/bin/env bash
# Prepare this machine for Hy-Home Bootstrap: Docker Engine + Compose v2, the local base images
# (no registry needed), the Python venv with pinned deps and the Ansible collections.
#   usage: scripts/setup.sh [runtime|dev]     (dev adds the test tooling and test images)
# Idempotent: a re-run on a prepared machine takes about a second.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${1:-runtime}
bash "$ROOT/scripts/lib/engine.sh"
bash "$ROOT/scripts/lib/images.sh" "$PROFILE"
bash "$ROOT/scripts/lib/venv.sh" "$PROFILE"
