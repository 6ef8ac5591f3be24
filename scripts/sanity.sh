#!/usr/bin/env bash
# ansible-test sanity for the collection, without Docker.
#   usage: scripts/sanity.sh [extra ansible-test sanity arguments, e.g. --test pylint]
#
# ansible-test needs the collection at .../ansible_collections/hyhome/bootstrap: the tracked files
# (and new, not ignored ones) of the collection's content are copied to such a layout in a temp dir:
# plugins, roles, playbooks, meta, scripts and tests/sanity. The unit tests, benches, Molecule scenarios and
# the embedded stack are not collection code (ruff, yamllint and ansible-lint check them with this
# project's rules; ansible-test's pylint/pep8 profile and its shebang/yamllint rules would flag the
# deliberately broken fixtures and the stack's own scripts). It runs `--local` with the
# venv's ansible-core; `--requirements` installs each test's pinned requirements (from the package
# index pip is configured with) into test venvs that ansible-test keeps under its cache, here
# ${XDG_CACHE_HOME:-~/.cache}/hyhome-bootstrap/ansible-test (HOME points there for the run, so
# nothing lands in the user's own ~/.ansible). The first run builds those venvs; later runs reuse them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON_VERSION=3.11
start=$SECONDS

[ -x "$ROOT/.venv/bin/ansible-test" ] || { echo "sanity: $ROOT/.venv/bin/ansible-test is missing (run scripts/setup.sh dev)" >&2; exit 2; }
export PATH="$ROOT/.venv/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/hyhome/bootstrap
mkdir -p "$dest"
(
  cd "$ROOT"
  # (tests/sanity is listed by its own pathspec: an exclusion such as ':!tests' wins over any inclusion)
  { git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!bench' ':!molecule' ':!stack' ':!.ci' ':!hyhome_cli'
    git ls-files -z --cached --others --exclude-standard -- tests/sanity; } |
    while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done |
    tar --null -T - -cf - | tar -xf - -C "$dest"
)

home=${XDG_CACHE_HOME:-$HOME/.cache}/hyhome-bootstrap/ansible-test
mkdir -p "$home/.ansible/test/cache"
# ansible-test bootstraps pip in each test venv with get-pip.py from ci-files.testing.ansible.com,
# which is not reachable from every machine (nor from this one). The stand-in it finds in its cache
# does the same from what is reachable: Python's bundled pip (ensurepip), which then installs the
# pinned pip and the test's requirements from the configured package index.
get_pip_stand_in() {
  cat <<'EOF'
"""Stand-in for get-pip.py: pip from ensurepip installs the requested packages (see scripts/sanity.sh)."""
import ensurepip
import os
import subprocess
import sys

env = dict(os.environ)  # ensurepip points PIP_CONFIG_FILE at /dev/null; pip install needs the machine's config
ensurepip.bootstrap()
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env))
EOF
}
pip_version=$(python -c 'import types; from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$PYTHON_VERSION"'"))["pip"])')
stand_in=$home/.ansible/test/cache/get_pip_${pip_version//./_}.py
[ -e "$stand_in" ] || get_pip_stand_in >"$stand_in"

# Tests skipped here, and why:
#   shellcheck  needs the shellcheck binary (Debian package shellcheck, not on PyPI), which scripts/setup.sh
#               does not install; the collection's plugins hold no shell code.
#   pslint      PowerShell: the collection has no PowerShell code, and pwsh is not installed.
# tests/sanity/ignore-2.19.txt holds only what does not apply to this collection:
#   validate-modules:missing-gplv3-license  the collection is Apache-2.0 (LICENSE, galaxy.yml), not GPLv3;
#   action-plugin-docs  plugins/action/in_process.py runs the collection's own modules (meta/runtime.yml
#                       action_plugin routing), it has no module of its own to document;
#   pylint:ansible-bad-function  preflight.py and compose_validate.py are also the command-line entry of
#                       scripts/preflight-compose.sh and validate-docker-compose.sh (print, sys.exit there),
#                       and compose_model.py holds their shared crash guard (cli_main: one line on stderr);
#   pylint:disallowed-name  `_` for a discarded value, the Python idiom that ruff (the project's linter) allows;
#   import-3.11  PyYAML is required by the compose model (compose_model.py builds its loader and
#                       constructor classes on PyYAML's at import time; compose_validate.py imports it too), so
#                       compose_model.py and the module_utils importing it (compose_validate.py, preflight.py,
#                       secrets.py) cannot import without it. The modules secret_files and compose_validate
#                       guard that import and fail with missing_required_lib("PyYAML"); compose_preflight
#                       cannot (its argument spec's choices come from preflight.STEPS) and is listed too. On the
#                       controller, where the in_process action runs every module, PyYAML is an ansible-core
#                       dependency.
skips=(--skip-test shellcheck --skip-test pslint)

cd "$dest"
HOME=$home ansible-test sanity --local --requirements --python "$PYTHON_VERSION" --color no "${skips[@]}" "$@"
printf '[sanity] passed in %ss\n' "$((SECONDS - start))"
