#!/usr/bin/env bash
# The main job on one host: install what is missing, start Open vSwitch, Consul and the
# Switchboard controller, build the demo's local image, and bring up the demo topology
# (topologies/shop.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/start-services.sh
bash scripts/build-image.sh  # the local image api-2 runs (no registry is needed)
bash scripts/start-controller.sh
switchboard up "${1:-topologies/shop.yaml}"
switchboard status
