#!/usr/bin/env bash
# Prepare this machine for Hy-Home Bootstrap: the Python venv with pinned deps and the Ansible
# collections, Docker Engine + Compose v2 (the docker_engine role, run by scripts/lib/engine.sh),
# and the local base images (no registry needed).
#   usage: scripts/setup.sh [runtime|dev]     (dev adds the test tooling and test images)
# Idempotent: a re-run on a prepared machine takes about a second.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${1:-runtime}
bash "$ROOT/scripts/lib/venv.sh" "$PROFILE"      # first: the engine is installed by an Ansible role
bash "$ROOT/scripts/lib/engine.sh" "$PROFILE"
bash "$ROOT/scripts/lib/images.sh" "$PROFILE"
