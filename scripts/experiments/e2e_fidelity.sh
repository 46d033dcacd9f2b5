#!/usr/bin/env bash
# Issue 34 (fidelity) on E2E, SmolLM2-135M + a skip-aware adapter, beam 4, t_max 40: the rows of the targets (vanilla,
# HSD s=1 / s=2 at E_max 10 of 30 layers) decoded on
#   dev:  a seeded sample of 200 of the 547 devset MRs (the split that chooses weights and settings), and
#   test: a seeded sample of 400 of the 630 test MRs (the file is sorted by restaurant name: its first N are not a
#         sample), decoded once, for the weights and settings the dev split chose.
#   synthdev: 200 MRs that scripts/experiments/synth_mrs.py samples from the training set's slots and values (seed 61),
#         none an MR of any split or of the on-policy stages' sampled training MRs, without references: SER and
#         repeats only (the 7-8-slot pubs and restaurants that only the test split holds among the splits; score:
#         python scripts/experiments/e2e_dev_scores.py --synth <out>).
# Extra rows, never the fix: the same HSD rows with n-gram blocking (HF's no_repeat_ngram_size 3) as separate rows.
#   ADAPTER=smollm2-e2e-skipaware-4108-onpolicy bash scripts/experiments/e2e_fidelity.sh [dev|synthdev|dev_block|test|test_block]
# The baseline of the vanilla-cost target: the equal-budget standard LoRA fine-tune
# (configs/experiments/e2e/smollm2_e2e_lora_3808.yaml, its last checkpoint), vanilla only, on the same MRs:
#   bash scripts/experiments/e2e_fidelity.sh [dev_standard|test_standard]
# Every step resumes after a kill (the sweep skips finished inputs per decoder).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
PY=.venv/bin/python
STEP=${1:-dev}
ADAPTER=${ADAPTER:-smollm2-e2e-skipaware-4108-onpolicy}
NAME=${NAME:-${ADAPTER#smollm2-e2e-}}
CKPT=${CKPT:-}
ROWS='[["vanilla",{}],["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":2,"e_min":0,"e_max":10}]]'
BLOCK_ROWS='[["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":2,"e_min":0,"e_max":10}]]'
ARGS=(--config configs/default.yaml --model.adapter "$ADAPTER" --quiet)
[[ -n $CKPT ]] && ARGS+=(--ckpt_path "$CKPT")
# ADAPTER_RANK=<r>: a checkpoint of a stage that widened its adapter (model.adapter_rank, the capacity lever)
[[ -n ${ADAPTER_RANK:-} ]] && ARGS+=(--model.adapter_rank "$ADAPTER_RANK")
DEV=(--data.init_args.predict_split validation --data.init_args.max_eval_samples 200 --data.init_args.shuffle_subset true)
TEST=(--data.init_args.predict_split test --data.init_args.max_eval_samples 400 --data.init_args.shuffle_subset true)
standard() {  # the equal-budget standard LoRA's last checkpoint, vanilla only
  local ckpt; ckpt=$(ls -t runs/smollm2_e2e_lora_3808/version_*/checkpoints/last*.ckpt 2>/dev/null | head -1)  # a resumed run's last may be last-v1.ckpt
  [[ -n $ckpt ]] || { echo "no checkpoint under runs/smollm2_e2e_lora_3808; train it first: python main.py fit --config configs/experiments/e2e/smollm2_e2e_lora_3808.yaml --ckpt_path last" >&2; exit 2; }
  local want step; want=$(grep -oP '^  max_steps: \K[0-9]+' configs/experiments/e2e/smollm2_e2e_lora_3808.yaml)
  step=$($PY -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['global_step'])" "$ckpt")
  [[ $step == "$want" ]] || { echo "$ckpt is at step $step of $want: the equal-budget run is not finished; continue it: python main.py fit --config configs/experiments/e2e/smollm2_e2e_lora_3808.yaml --ckpt_path last" >&2; exit 2; }
  $PY -m hsd_lightning sweep --config configs/experiments/e2e/smollm2_e2e_lora_3808.yaml --ckpt_path "$ckpt" --quiet \
      --decoders '[["vanilla",{}]]' "$@"
}
SYNTH='{"class_path": "hsd_lightning.data.TextPairDataModule", "init_args": {"name": "e2e_synth",
  "test_file": "runs/synth/dev_mrs.jsonl", "source_field": "mr", "target_field": "ref", "data_dir": ".",
  "prompt_template": "Describe the restaurant from its attributes.\nAttributes: {source}\nDescription:"}}'
BLOCK=(--model.generation_kwargs '{"no_repeat_ngram_size": 3}')
case $STEP in
  dev)        $PY -m hsd_lightning sweep "${ARGS[@]}" "${DEV[@]}" --decoders "$ROWS" --out runs/results/e2e_dev/${NAME}_beam4 ;;
  dev_block)  $PY -m hsd_lightning sweep "${ARGS[@]}" "${DEV[@]}" "${BLOCK[@]}" --decoders "$BLOCK_ROWS" --no_agreement \
                  --out runs/results/e2e_dev/${NAME}_block3_beam4 ;;
  synthdev)   [[ -f runs/synth/train_mrs.jsonl ]] || $PY scripts/experiments/synth_mrs.py --split trainset --n 1000 \
                  --seed 60 --out runs/synth/train_mrs.jsonl
              [[ -f runs/synth/dev_mrs.jsonl ]] || $PY scripts/experiments/synth_mrs.py --split trainset --n 200 --seed 61 \
                  --exclude runs/synth/train_mrs.jsonl --out runs/synth/dev_mrs.jsonl
              $PY -m hsd_lightning sweep "${ARGS[@]}" --data "$SYNTH" --data.init_args.max_eval_samples null \
                  --decoders "$ROWS" --out runs/results/e2e_synthdev/${NAME}_beam4 ;;
  test)       $PY -m hsd_lightning sweep "${ARGS[@]}" "${TEST[@]}" --decoders "$ROWS" --out runs/results/e2e_test/${NAME}_beam4 ;;
  test_block) $PY -m hsd_lightning sweep "${ARGS[@]}" "${TEST[@]}" "${BLOCK[@]}" --decoders "$BLOCK_ROWS" --no_agreement \
                  --out runs/results/e2e_test/${NAME}_block3_beam4 ;;
  dev_standard)  standard "${DEV[@]}" --out runs/results/e2e_dev/lora-3808_beam4 ;;
  test_standard) standard "${TEST[@]}" --out runs/results/e2e_test/lora-3808_beam4 ;;
  *) echo "unknown step $STEP" >&2; exit 2 ;;
esac
