#!/usr/bin/env bash
# The verdicts of the README's "Results at a glance" with 95 % intervals, R-L and BERTScore, from committed files only
# (the committed runs' predictions under docs/results/<task>/runs/, references read from the data root), so a fresh clone with the data
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
R=docs/results
E2E=$R/e2e/runs/skipaware_full_2400_decay400_beam4/predictions.jsonl.gz
E2L=$R/e2e/runs/skipaware_3200_decay200_hsd1x2_beam4/predictions.jsonl.gz
E2S=$R/e2e/runs/lora_beam4/predictions.jsonl.gz
CG=$R/commongen/runs/skipaware_full_25k_beam4/predictions.jsonl.gz
CG3=$R/commongen/runs/skipaware_full_25k_vw3_beam4/predictions.jsonl.gz
CGS=$R/commongen/runs/standard_full_gpu_1600_beam4/predictions.jsonl.gz
CGC=$R/commongen/runs/standard_full_25k_beam4/predictions.jsonl.gz
XS=$R/xsum/runs/skipaware_full_allplans_greedy/predictions.jsonl.gz
HC=$R/healthcaremagic/runs/skipaware_full_allplans_vw3_greedy/predictions.jsonl.gz
CN=$R/cnndm/runs/skipaware_full_allplans_greedy/predictions.jsonl.gz
HSD2='hsd(s=2,min=0,max=10)'
SD='skipdecode(min=8,max=20)'
PAIRS=(  # dataset|label|run A|run B
  "e2e|E2E: HSD s=2 vs SkipDecode|$E2E#$HSD2|$E2E#$SD"
  "e2e|E2E shipped adapter (3,200 steps): HSD s=1 vs vanilla|$E2L#hsd(s=1,min=0,max=10)|$E2L#vanilla"
  "e2e|E2E shipped adapter (3,200 steps): HSD s=2 vs SkipDecode|$E2L#$HSD2|$E2L#$SD"
  "e2e|E2E shipped adapter (3,200 steps): vanilla vs standard LoRA FT|$E2L#vanilla|$E2S#vanilla"
  "commongen|CommonGen 25k: HSD s=2 vs SkipDecode|$CG#$HSD2|$CG#$SD"
  "commongen|CommonGen 25k 3:1: HSD s=2 vs SkipDecode|$CG3#$HSD2|$CG3#$SD"
  "commongen|CommonGen 25k: vanilla vs standard full FT (GPU)|$CG#vanilla|$CGS#vanilla"
  "commongen|CommonGen 25k 3:1: vanilla vs standard full FT (GPU)|$CG3#vanilla|$CGS#vanilla"
  "commongen|CommonGen 25k: vanilla vs standard full FT (CPU)|$CG#vanilla|$CGC#vanilla"
  "commongen|CommonGen 25k 3:1: vanilla vs standard full FT (CPU)|$CG3#vanilla|$CGC#vanilla"
  "commongen|CommonGen 25k: standard full FT, CPU vs GPU (one recipe, two runs)|$CGC#vanilla|$CGS#vanilla"
  "xsum|XSum every plan: HSD s=2 vs SkipDecode|$XS#$HSD2|$XS#$SD"
  "healthcaremagic|HealthCareMagic every plan 3:1: HSD s=2 vs SkipDecode|$HC#$HSD2|$HC#$SD"
  "cnn_dailymail|CNN/DM every plan: HSD s=2 vs SkipDecode|$CN#$HSD2|$CN#$SD"
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
