#!/usr/bin/env bash
# Run the whole test suite: install what is missing, start Open vSwitch and Consul, then
# pytest (unit tests and integration tests on real OVS, Consul and namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-services.sh
VENV=${SWITCHBOARD_VENV:-/opt/switchboard/venv}
"$VENV/bin/ruff" check .
exec "$VENV/bin/pytest" -v -rs "$@"
