#!/usr/bin/env bash
# Run the whole test suite: install what is missing, start Open vSwitch and Consul, then
# pytest (unit tests and integration tests on real OVS, Consul and namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-services.sh
bash scripts/build-image.sh  # the image the image-container tests and the demo file run
VENV=${SWITCHBOARD_VENV:-/opt/switchboard/venv}
"$VENV/bin/ruff" check .
"$VENV/bin/lint-imports"  # the import contract: pyproject.toml [tool.importlinter]
# The docs: a broken link or anchor, or a page missing from nav, fails. Output only on failure
# (mkdocs --quiet would hide the warnings that --strict counts, and pass).
site=$(mktemp -d)
docs_ok=0
docs_log=$("$VENV/bin/mkdocs" build --strict --site-dir "$site" 2>&1) || docs_ok=$?
rm -rf "$site"
[ "$docs_ok" -eq 0 ] || { printf '%s\n' "$docs_log" >&2; exit 1; }
exec "$VENV/bin/pytest" -v -rs "$@"
