#!/usr/bin/env bash
# Full fine-tunes of SmolLM2-135M on one GPU, several epochs per task, then the issue's decoder rows at beam 4:
#   bash scripts/experiments/gpu_fullft.sh <task> [<task> ...]      # xsum, cnndm, healthcaremagic, commongen, e2e
# For each task, two runs side by side (same data, steps, learning-rate schedule and seed):
#   skipaware: configs/experiments/<task>/smollm2_<task>_skipaware_full.yaml (every row under one decoder's plan, configs/recipes/
#              skipaware_30l.yaml) and
#   standard:  the same config with --model.train_plans null (plain fine-tuning: the baseline whose vanilla R-L the
#              skip-aware run may cost at most 3 % of, and the paper's "fine-tune, then skip" rows),
# both with configs/presets/gpu.yaml, EPOCHS epochs (default 8; CommonGen: one pass over a seeded 25,600 of its 39,069
# training pairs at batch 16, configs/experiments/commongen/smollm2_commongen_skipaware_full_25k.yaml), the learning rate constant after
# warm-up and decaying linearly to 0 over the last quarter of the steps (--model.lr_decay_steps; the E2E CPU recipe
# annealed its last 1/6). Measured: 8 epochs of 600-1,000 pairs overfit the *standard* runs past epoch 1
# (docs/results/gpu.md); the skip-aware runs' plan losses are far from converged after one.
# Each run is then decoded on the task's fixed test inputs (as scripts/experiments/task_smollm2.sh: 100 for XSum
# and CommonGen, 50 for CNN/DM and HealthCareMagic, 200 for E2E) under the rows vanilla, HSD s=1 / s=2 E_max 10 (s=1 also with layer 1 always run), SkipDecode (8,20)
# and CALM 0.005, into runs/results/<task>/gpu_<kind>_full_<steps>_beam<BEAMS>; fit logs in runs/logs/.
# Tasks and the two runs of a task run in parallel (a 135M model leaves a large GPU mostly idle); BERTScore is added
# afterwards on any machine: python -m hsd_lightning rescore runs/results/<task>/gpu_*.
# PY: the Python to use (default: this project's .venv, set up by scripts/setup.sh). KINDS: which of the two runs
# (default "skipaware standard"; e.g. KINDS=skipaware when the standard runs are done). ALL_PLANS=1: the skip-aware
# run trains every row under every plan (--model.all_plans_per_row true; on the CPU, XSum's losses at 75 steps were
# about the drawn mixture's at 150), named ..._skipaware_allplans_full_gpu_<steps>.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z ${PY:-} ]]; then source scripts/setup.sh; PY=.venv/bin/python; fi
(( $# > 0 )) || { echo "usage: $0 <task> [<task> ...] (xsum, cnndm, healthcaremagic, commongen, e2e)" >&2; exit 2; }
EPOCHS=${EPOCHS:-8}
BEAMS=${BEAMS:-4}
ROWS=${ROWS:-'[["vanilla",{}],["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":1,"e_min":0,"e_max":10,"always_run":[1]}],["hsd",{"s":2,"e_min":0,"e_max":10}],["skipdecode",{"e_min":8,"e_max":20}],["calm",{"d":0.005}]]'}
mkdir -p runs/logs

run_task() {  # run_task <task> <kind: skipaware|standard>
  local task=$1 kind=$2 n cfg epoch steps decay name extra=()
  case $task in
    e2e) n=200 ;; commongen|xsum) n=100 ;; cnndm|healthcaremagic) n=50 ;;
    *) echo "unknown task '$task'; use xsum, cnndm, healthcaremagic, commongen or e2e" >&2; return 2 ;;
  esac
  cfg=configs/experiments/${task}/smollm2_${task}_skipaware_full.yaml
  if [[ $task == commongen ]]; then  # one pass over a seeded random 25,600 of the 39,069 pairs at batch 16
    cfg=configs/experiments/commongen/smollm2_commongen_skipaware_full_25k.yaml
    steps=1600
  else
    epoch=$($PY -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['trainer']['max_steps'])" "$cfg")
    steps=$(( epoch * EPOCHS ))
    extra=(--trainer.max_epochs "$EPOCHS")
  fi
  decay=$(( steps / 4 ))
  [[ $kind == standard ]] && extra+=(--model.train_plans null)
  if [[ $kind == skipaware && ${ALL_PLANS:-0} == 1 ]]; then extra+=(--model.all_plans_per_row true); kind=skipaware_allplans; fi
  name=smollm2_${task}_${kind}_full_gpu_$steps
  $PY main.py fit --config "$cfg" --config configs/presets/gpu.yaml "${extra[@]}" --trainer.max_steps $steps \
      --model.lr_decay_steps $decay --trainer.logger.init_args.name "$name" ${FIT_ARGS:-} \
      > "runs/logs/${task}_fit_${kind}_full_gpu_$steps.log" 2>&1 || return 1
  local ckpt  # (set -e does not hold inside a function called with ||: every step checks its own status)
  ckpt=$(ls -t runs/$name/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
  [[ -n $ckpt ]] || return 1
  $PY -m hsd_lightning sweep --config "$cfg" --config configs/presets/gpu.yaml --ckpt_path "$ckpt" \
      --quiet --decoders "$ROWS" --out "runs/results/$task/gpu_${kind}_full_${steps}_beam$BEAMS" \
      --data.init_args.max_eval_samples $n --model.num_beams $BEAMS ${SWEEP_ARGS:-} \
      > "runs/logs/${task}_sweep_${kind}_full_gpu_$steps.log" 2>&1 || return 1
  echo "$task $kind: done ($(date -u +%T))"
}

pids=()
for task in "$@"; do
  for kind in ${KINDS:-skipaware standard}; do
    [[ $kind == skipaware || $kind == standard ]] || { echo "KINDS: '$kind' is neither skipaware nor standard" >&2; exit 2; }
    run_task "$task" "$kind" || echo "$task $kind: FAILED (see runs/logs/${task}_*_${kind}_full_gpu_*.log)" &
    pids+=($!)
  done
done
wait "${pids[@]}"
