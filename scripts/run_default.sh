#!/usr/bin/env bash
# Set up, then run the main job on the embedded default: SmolLM2-135M on an E2E test subset, decoded with HSD.
# Extra arguments go to main.py predict, e.g. --decoder calm --decoder.d 0.005
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python main.py predict --decoder hsd --decoder.s 1 --decoder.e_max 10 "$@"
