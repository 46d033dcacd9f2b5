"""Sequence-level self-distillation data for E2E (issue 34, lever 1b): training pairs whose targets are the weights'
own full-depth (vanilla) beam outputs instead of the human references.

    python main.py predict --config configs/default.yaml --decoder vanilla --data.init_args.predict_split train \
        --data.init_args.max_eval_samples 1600 --data.init_args.shuffle_subset true --data.init_args.seed 54 \
        --trainer.callbacks.output_dir runs/seqkd/vanilla_train1600
    python scripts/experiments/seqkd_pairs.py runs/seqkd/vanilla_train1600 --out runs/seqkd/train.jsonl

Writes one JSON object per line, ``{"mr": <MR>, "ref": <vanilla's output>}`` (the field names of the E2E csv
files), a copy of the E2E devset beside it (``validation.jsonl``, human references: the validation loss is
unchanged), and prints how many outputs were usable and how many of them the slot matcher finds an error in (they
are kept: the lever is "train the plans on what full depth says").
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from hsd_lightning.data.datamodule import E2EDataModule
from hsd_lightning.evaluation.slots import parse_mr, slot_counts


def source_of(prompt: str, template: str = E2EDataModule.default_template) -> str:
    head, tail = template.split("{source}")
    if not (prompt.startswith(head) and prompt.endswith(tail)):
        raise ValueError(f"prompt {prompt[:60]!r}... does not follow the E2E template {template!r}")
    return prompt[len(head):len(prompt) - len(tail)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="predict output folder holding predictions*.jsonl")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    records = [json.loads(line) for f in sorted(args.run.glob("predictions*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    rows, empty, with_error = [], 0, 0
    for r in records:
        if not r["prediction"].strip():
            empty += 1
            continue
        mr = source_of(r["prompt"])
        counts = slot_counts(parse_mr(mr), r["prediction"])
        with_error += bool(counts["missed"] or counts["wrong"] or counts["added"])
        rows.append({"mr": mr, "ref": r["prediction"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dev = Path(os.environ.get("HSD_DATA_DIR", "data")) / "e2e" / "devset.csv"
    with dev.open(newline="", encoding="utf-8") as f:
        dev_rows = [{"mr": r["mr"], "ref": r["ref"]} for r in csv.DictReader(f)]
    (args.out.parent / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev_rows))
    print(f"{len(rows)} pairs from {len(records)} outputs ({empty} empty left out) -> {args.out}; "
          f"{with_error} of them with a slot error by the matcher")


if __name__ == "__main__":
    main()
