#!/usr/bin/env bash
# The verdicts of the README's "Results at a glance" with 95 % intervals, R-L and BERTScore, from committed files only
# (the reports' predictions under docs/results/, references read from the data root), so a fresh clone with the data
# reproduces them:   bash scripts/experiments/bootstrap_glance.sh   -> docs/results/bootstrap_glance.md
# Per task's headline skip-aware weights (and E2E's shipped LoRA adapter, whose HSD s=1 and vanilla cost are also
# checked): HSD s=2 E_max 10 (the HSD row that runs fewer layers than SkipDecode
# (8,20) on every task) against SkipDecode, and on CommonGen, whose vanilla cost is the one in question with a
# baseline on the same test inputs, the skip-aware vanilla against each of the two standard full fine-tunes of the same
# recipe (one trained on a GPU, one on the CPU), and those two against each other (how far two runs of one recipe part).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup.sh
OUT=docs/results/bootstrap_glance.md
P=predictions
E2E=docs/results/e2e/$P/e2e_smollm2-135m_skip-aware_FT_smollm2_e2e_skipaware_full_2400_decay400_last.ckpt_beam_4
E2L=docs/results/e2e/lora_3200_decay200_hsd1x2/$P/e2e_smollm2-135m_skip-aware_FT_smollm2_e2e_skipaware_3200_decay200_hsd1x2_last.ckpt_beam_4
E2S=docs/results/e2e/$P/e2e_smollm2-135m_FT_smollm2_e2e_lora_last.ckpt_beam_4
CG=docs/results/commongen/full_25k/$P/commongen_smollm2-135m_skip-aware_FT_smollm2_commongen_skipaware_full_25k_last.ckpt_beam_4
CG3=docs/results/commongen/full_25k_vw3/$P/commongen_smollm2-135m_skip-aware_FT_smollm2_commongen_skipaware_full_25k_vw3_last.ckpt_beam_4
CGS=docs/results/commongen/gpu/$P/commongen_smollm2-135m_FT_smollm2_commongen_standard_full_gpu_1600_last.ckpt_beam_4
CGC=docs/results/commongen/standard_full_25k/$P/commongen_smollm2-135m_FT_smollm2_commongen_standard_full_25k_last.ckpt_beam_4
XS=docs/results/xsum/allplans/$P/xsum_smollm2-135m_skip-aware_FT_smollm2_xsum_skipaware_full_allplans_last.ckpt_greedy
HC=docs/results/healthcaremagic/allplans_vw3/$P/healthcaremagic_smollm2-135m_skip-aware_FT_smollm2_healthcaremagic_skipaware_full_allplans_vw3_last.ckpt_greedy
CN=docs/results/cnndm/allplans/$P/cnn_dailymail_smollm2-135m_skip-aware_FT_smollm2_cnndm_skipaware_full_allplans_last.ckpt_greedy
HSD2='hsd(s=2,min=0,max=10).jsonl'
SD='skipdecode(min=8,max=20).jsonl'
PAIRS=(  # dataset|label|run A|run B
  "e2e|E2E: HSD s=2 vs SkipDecode|$E2E/$HSD2|$E2E/$SD"
  "e2e|E2E shipped adapter (3,200 steps): HSD s=1 vs vanilla|$E2L/hsd(s=1,min=0,max=10).jsonl|$E2L/vanilla.jsonl"
  "e2e|E2E shipped adapter (3,200 steps): HSD s=2 vs SkipDecode|$E2L/$HSD2|$E2L/$SD"
  "e2e|E2E shipped adapter (3,200 steps): vanilla vs standard LoRA FT|$E2L/vanilla.jsonl|$E2S/vanilla.jsonl"
  "commongen|CommonGen 25k: HSD s=2 vs SkipDecode|$CG/$HSD2|$CG/$SD"
  "commongen|CommonGen 25k 3:1: HSD s=2 vs SkipDecode|$CG3/$HSD2|$CG3/$SD"
  "commongen|CommonGen 25k: vanilla vs standard full FT (GPU)|$CG/vanilla.jsonl|$CGS/vanilla.jsonl"
  "commongen|CommonGen 25k 3:1: vanilla vs standard full FT (GPU)|$CG3/vanilla.jsonl|$CGS/vanilla.jsonl"
  "commongen|CommonGen 25k: vanilla vs standard full FT (CPU)|$CG/vanilla.jsonl|$CGC/vanilla.jsonl"
  "commongen|CommonGen 25k 3:1: vanilla vs standard full FT (CPU)|$CG3/vanilla.jsonl|$CGC/vanilla.jsonl"
  "commongen|CommonGen 25k: standard full FT, CPU vs GPU (one recipe, two runs)|$CGC/vanilla.jsonl|$CGS/vanilla.jsonl"
  "xsum|XSum every plan: HSD s=2 vs SkipDecode|$XS/$HSD2|$XS/$SD"
  "healthcaremagic|HealthCareMagic every plan 3:1: HSD s=2 vs SkipDecode|$HC/$HSD2|$HC/$SD"
  "cnn_dailymail|CNN/DM every plan: HSD s=2 vs SkipDecode|$CN/$HSD2|$CN/$SD"
)
{
  echo "# Paired bootstraps of the glance table's verdicts (R-L and BERTScore, 95 % intervals)"
  echo
  echo "Written by \`bash scripts/experiments/bootstrap_glance.sh\` on $(date -u +%Y-%m-%d) from the committed predictions"
  echo "(references from \`\$HSD_DATA_DIR\`); 2,000 resamples of the inputs, seed 0."
  echo
} > "$OUT"
for pair in "${PAIRS[@]}"; do
  IFS='|' read -r data label a b <<< "$pair"
  echo "## $label" >> "$OUT"
  for metric in rougeL bertscore; do
    cmd=(.venv/bin/python -m hsd_lightning bootstrap "$a" "$b" --references "$data" --metric "$metric")
    line=$("${cmd[@]}")
    echo "$label [$metric]: $line"
    printf '\n```\n$ python -m hsd_lightning bootstrap %q %q --references %s --metric %s\n%s\n```\n' \
        "$a" "$b" "$data" "$metric" "$line" >> "$OUT"
  done
  echo >> "$OUT"
done
echo "wrote $OUT"
