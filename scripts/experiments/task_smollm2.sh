#!/usr/bin/env bash
# One task of the paper's grid on SmolLM2-135M (CPU): the standard LoRA fine-tune and a skip-aware fine-tune, each
# decoded on fixed test inputs under the issue's rows, then the report under docs/results/<task>.
#   bash scripts/experiments/task_smollm2.sh <e2e|commongen|xsum|cnndm|healthcaremagic> \
#        [fit_lora|export_lora|sweep_lora|fit_skip|export_skip|sweep_skip|fit_skip_more|sweep_skip_more|
#         fit_full|sweep_full|report|all]
# Skip-aware fine-tuning comes two ways:
#   SKIP_FROM=scratch (default): configs/smollm2_<task>_skipaware.yaml from the base model (the standard recipe, each
#                                row under one plan);
#   SKIP_FROM=ft: continue the standard fine-tune's adapter under the plans for SKIP_STEPS steps on other training
#                 pairs (data seed 44), with self-distillation from the full-depth pass (DISTILL).
# fit_skip_more continues the skip-aware run (SKIP_FROM=scratch) with the same recipe and training pairs up to
# SKIP_TOTAL optimizer steps in all (more epochs; the learning rate is constant after warm-up), as its own run
# <skip run>_<SKIP_TOTAL>, so the one-epoch weights and their tables stay as they are; sweep_skip_more decodes it.
# Sizes follow the issue: 200 test inputs for E2E, 100 for CommonGen and XSum, 50 for the long-output tasks; beam 4
# (BEAMS=1 for greedy where beam 4 does not fit the CPU; the report says which). ROWS overrides the decoders.
# Every step resumes after a kill: rerun it (fit: --ckpt_path last; sweeps skip finished inputs per decoder).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
PY=.venv/bin/python
TASK=${1:?task: e2e, commongen, xsum, cnndm or healthcaremagic}
STEP=${2:-all}
case $TASK in
  e2e) N=200 ;; commongen|xsum) N=100 ;; cnndm|healthcaremagic) N=50 ;;
  *) echo "unknown task '$TASK'; use e2e, commongen, xsum, cnndm or healthcaremagic" >&2; exit 2 ;;
esac
BEAMS=${BEAMS:-4}
SKIP_FROM=${SKIP_FROM:-scratch}
SKIP_STEPS=${SKIP_STEPS:-300}
DISTILL=${DISTILL:-0.5}
LORA=smollm2_${TASK}_lora
if [[ $SKIP_FROM == ft ]]; then
  SKIP=smollm2_${TASK}_ft_skipaware_distill
  FROM=(--model.adapter runs/adapters/smollm2-$TASK-lora)  # export and sweep rebuild the same base
else
  SKIP=smollm2_${TASK}_skipaware
  FROM=()
fi
mkdir -p runs/logs runs/adapters
last_of() { ls -t runs/$1/version_*/checkpoints/{last,latest-step=*}.ckpt 2>/dev/null | head -1; }
summary_of() { ls -t runs/$1/version_*/fit_summary.json 2>/dev/null | head -1; }
# the issue's rows (E in layers of the 30-layer model: the paper's 36-layer E scaled by 30/36): vanilla, HSD s=1 / s=2
# E_max 12 -> 10 (s=1 also with layer 1 always run), SkipDecode (10,24) -> (8,20), CALM d=0.005
ROWS=${ROWS:-'[["vanilla",{}],["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":1,"e_min":0,"e_max":10,"always_run":[1]}],["hsd",{"s":2,"e_min":0,"e_max":10}],["skipdecode",{"e_min":8,"e_max":20}],["calm",{"d":0.005}]]'}
sweep() {  # sweep <config> <ckpt> <out> [extra args]
  local cfg=$1 ckpt=$2 out=$3
  shift 3
  $PY -m hsd_lightning sweep --config "$cfg" --ckpt_path "$ckpt" --quiet --decoders "$ROWS" \
      --out "$out" --data.init_args.max_eval_samples $N --model.num_beams $BEAMS "$@"
}
if [[ $STEP == fit_lora || $STEP == all ]]; then
  $PY main.py fit --config configs/$LORA.yaml --ckpt_path last 2>&1 | tee -a runs/logs/${TASK}_fit_lora.log
fi
if [[ $STEP == export_lora || $STEP == all ]]; then
  $PY -m hsd_lightning export-adapter --config configs/$LORA.yaml --ckpt_path "$(last_of $LORA)" \
      --out runs/adapters/smollm2-$TASK-lora --record "$(summary_of $LORA)"
fi
if [[ $STEP == sweep_lora || $STEP == all ]]; then
  sweep configs/$LORA.yaml "$(last_of $LORA)" runs/results/$TASK/lora_beam$BEAMS
fi
if [[ $STEP == fit_skip || $STEP == all ]]; then
  if [[ $SKIP_FROM == ft ]]; then
    $PY main.py fit --config configs/smollm2_${TASK}_skipaware.yaml "${FROM[@]}" --model.distill_weight $DISTILL \
        --data.init_args.seed 44 --data.init_args.max_train_samples $((SKIP_STEPS * 8)) \
        --trainer.max_steps $SKIP_STEPS --trainer.logger.init_args.name $SKIP --ckpt_path last \
        2>&1 | tee -a runs/logs/${TASK}_fit_skip_$SKIP_FROM.log
  else
    $PY main.py fit --config configs/smollm2_${TASK}_skipaware.yaml --ckpt_path last \
        2>&1 | tee -a runs/logs/${TASK}_fit_skip_$SKIP_FROM.log
  fi
fi
MORE=${SKIP}_${SKIP_TOTAL:-0}
if [[ $STEP == fit_skip_more || $STEP == sweep_skip_more ]] && ! [[ $SKIP_FROM == scratch && ${SKIP_TOTAL:-0} -gt 0 ]]; then
  echo "$STEP: set SKIP_TOTAL (optimizer steps in all, e.g. two epochs) with SKIP_FROM=scratch" >&2; exit 2
fi
if [[ $STEP == fit_skip_more ]]; then
  START=last  # a killed continuation resumes itself; the first start restores the one-epoch run's full state
  [[ -n "$(last_of $MORE)" ]] || START=$(last_of $SKIP)
  $PY main.py fit --config configs/smollm2_${TASK}_skipaware.yaml --trainer.max_steps $SKIP_TOTAL \
      --trainer.logger.init_args.name $MORE --ckpt_path "$START" 2>&1 | tee -a runs/logs/${TASK}_fit_skip_$SKIP_TOTAL.log
fi
if [[ $STEP == sweep_skip_more ]]; then
  sweep configs/smollm2_${TASK}_skipaware.yaml "$(last_of $MORE)" runs/results/$TASK/skipaware_${SKIP_TOTAL}_beam$BEAMS
fi
# fit_full / sweep_full: skip-aware *full* fine-tuning from the base model (configs/experiments/<task>/smollm2_<task>_skipaware_full.yaml:
# every weight, the plans at the config's t_max), FULL_TOTAL optimizer steps in all (default one epoch, the config's
# max_steps). Each further epoch is its own run, smollm2_<task>_skipaware_full_<FULL_TOTAL>, started from the epoch
# before it (its full state: optimizer, step, data order), so every stage's weights and table stay; sweep_full decodes
# the stage FULL_TOTAL at the config's t_max into runs/results/<task>/skipaware_full_<FULL_TOTAL>_beam<BEAMS>.
# FULL_DECAY=<steps> anneals instead: the stage's last <steps> optimizer steps decay the learning rate linearly to 0
# (--model.lr_decay_steps), as its own run <...>_<FULL_TOTAL>_decay<steps> started from the same constant-rate stage
# before it, so the constant-rate stage FULL_TOTAL and the annealed one sit side by side.
if [[ $STEP == fit_full || $STEP == sweep_full ]]; then
  FULL=smollm2_${TASK}_skipaware_full; FULL_CFG=configs/experiments/$TASK/$FULL.yaml
  [[ -f $FULL_CFG ]] || { echo "$STEP: no $FULL_CFG; write one like configs/experiments/commongen/smollm2_commongen_skipaware_full.yaml" >&2; exit 2; }
  EPOCH=$($PY -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['trainer']['max_steps'])" $FULL_CFG)
  TOTAL=${FULL_TOTAL:-$EPOCH}
  (( TOTAL > 0 && TOTAL % EPOCH == 0 )) || { echo "FULL_TOTAL=$TOTAL: use a multiple of $EPOCH (one epoch of $FULL_CFG)" >&2; exit 2; }
  DECAY=${FULL_DECAY:-0}
  [[ $DECAY =~ ^[0-9]+$ ]] && (( DECAY <= TOTAL )) || { echo "FULL_DECAY=$DECAY: use a number of steps from 0 to $TOTAL (0: constant rate)" >&2; exit 2; }
  SUFFIX=""
  if (( DECAY > 0 )); then SUFFIX=_decay$DECAY; fi
  RUN=$FULL PREV=$FULL
  if (( TOTAL > EPOCH || DECAY > 0 )); then RUN=${FULL}_$TOTAL$SUFFIX; fi
  if (( TOTAL > 2 * EPOCH )); then PREV=${FULL}_$(( TOTAL - EPOCH )); fi
fi
if [[ $STEP == fit_full ]]; then
  START=last  # resumes this stage after a kill (logs continue in its folder); its first start: the stage before it
  if [[ -z "$(last_of $RUN || true)" ]] && (( TOTAL > EPOCH )); then
    START=$(last_of $PREV || true)
    [[ -n $START ]] || { echo "no checkpoint of runs/$PREV to continue: run FULL_TOTAL=$(( TOTAL - EPOCH )) first" >&2; exit 2; }
  fi
  $PY main.py fit --config $FULL_CFG --trainer.max_steps $TOTAL --trainer.max_epochs $(( TOTAL / EPOCH )) \
      --model.lr_decay_steps $DECAY --trainer.logger.init_args.name $RUN --ckpt_path "$START" 2>&1 \
      | tee -a runs/logs/${TASK}_fit_full_$TOTAL$SUFFIX.log
fi
if [[ $STEP == sweep_full ]]; then
  CKPT=$(last_of $RUN || true)
  [[ -n $CKPT ]] || { echo "no checkpoint of runs/$RUN: run fit_full with FULL_TOTAL=$TOTAL first" >&2; exit 2; }
  sweep $FULL_CFG "$CKPT" runs/results/$TASK/skipaware_full_$TOTAL${SUFFIX}_beam$BEAMS
fi
if [[ $STEP == export_skip || $STEP == all ]]; then
  $PY -m hsd_lightning export-adapter --config configs/smollm2_${TASK}_skipaware.yaml "${FROM[@]}" \
      --ckpt_path "$(last_of $SKIP)" --out runs/adapters/${SKIP//_/-} --record "$(summary_of $SKIP)"
fi
if [[ $STEP == sweep_skip || $STEP == all ]]; then
  sweep configs/smollm2_${TASK}_skipaware.yaml "$(last_of $SKIP)" runs/results/$TASK/${SKIP#smollm2_${TASK}_}_beam$BEAMS \
      "${FROM[@]}"
fi
if [[ $STEP == report || $STEP == all ]]; then
  $PY -m hsd_lightning report $(ls -d runs/results/$TASK/*_beam* 2>/dev/null) \
      --out runs/results/$TASK/report --examples 5 --save_runs docs/results/$TASK
  mkdir -p docs/results/$TASK/logs
  for f in runs/smollm2_${TASK}_*/version_*/fit_summary.json; do
    [[ -e $f ]] && cp "$f" docs/results/$TASK/logs/fit_summary_$(basename "$(dirname "$(dirname "$f")")").json
  done
  cp runs/logs/${TASK}_{fit,validate}_*.log docs/results/$TASK/logs/ 2>/dev/null || true
  $PY -m hsd_lightning targets docs/results/*/runs/* --out docs/results/targets.md && $PY -m hsd_lightning pages  # every task
fi
