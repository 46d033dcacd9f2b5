#!/usr/bin/env bash
# Set up, then the main job: SmolLM2-135M with the shipped skip-aware adapter on 16 E2E test MRs, decoded with
# vanilla and HSD (s=1 and s=2, E_max 10 of 30 layers: the paper's E_max 12 of 36), beam 4; prints one table (quality kept and
# speed-up side by side) and a few outputs. Extra arguments go to the sweep, e.g. --data.init_args.max_eval_samples 50
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
OUT=runs/default
rm -rf "$OUT"
.venv/bin/python -m hsd_lightning sweep --config configs/default.yaml --out "$OUT" --quiet \
    --decoders '[["vanilla",{}],["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":2,"e_min":0,"e_max":10}]]' "$@"
exec .venv/bin/python -m hsd_lightning report "$OUT" --out "$OUT/report" --examples 3 --no_paper
