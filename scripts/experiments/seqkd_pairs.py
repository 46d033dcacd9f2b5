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

``--honest`` keeps vanilla honest: an output in which the slot matcher finds a slot of the MR missed or wrong is
replaced by a human reference of the same MR: the first of the training file's references with no slot error, else
the first with none missed or wrong, else the first. An output that only *adds* a slot (nearly always "restaurant"
for an MR without eatType) is kept: what the lever fixes is omissions. Self-distillation alone teaches full depth
its own omissions (vanilla's SER rose 8.9 -> 11.6 % on test400).
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
    p.add_argument("--honest", action="store_true",
                   help="replace outputs with a slot missed or wrong by a slot-correct human reference of the same MR")
    args = p.parse_args(argv)
    data = Path(os.environ.get("HSD_DATA_DIR", "data")) / "e2e"
    references: dict[str, list[str]] = {}
    if args.honest:
        with (data / "trainset.csv").open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                references.setdefault(r["mr"], []).append(r["ref"])
    records = [json.loads(line) for f in sorted(args.run.glob("predictions*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    rows, empty, with_error, replaced = [], 0, 0, 0
    for r in records:
        if not r["prediction"].strip():
            empty += 1
            continue
        mr = source_of(r["prompt"])
        slots = parse_mr(mr)
        counts = slot_counts(slots, r["prediction"])
        with_error += bool(counts["missed"] or counts["wrong"] or counts["added"])
        target = r["prediction"]
        if args.honest and (counts["missed"] or counts["wrong"]):
            if mr not in references:
                raise SystemExit(f"MR {mr!r} is not in {data / 'trainset.csv'}; --honest needs predictions of the train split")
            scored = [(slot_counts(slots, ref), ref) for ref in references[mr]]
            target = next((ref for c, ref in scored if not (c["missed"] or c["wrong"] or c["added"])),
                          next((ref for c, ref in scored if not (c["missed"] or c["wrong"])), references[mr][0]))
            replaced += 1
        rows.append({"mr": mr, "ref": target})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with (data / "devset.csv").open(newline="", encoding="utf-8") as f:
        dev_rows = [{"mr": r["mr"], "ref": r["ref"]} for r in csv.DictReader(f)]
    (args.out.parent / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev_rows))
    print(f"{len(rows)} pairs from {len(records)} outputs ({empty} empty left out) -> {args.out}; "
          f"{with_error} of them with a slot error by the matcher"
          + (f"; {replaced} with a slot missed or wrong replaced by a human reference (--honest)" if args.honest else ""))


if __name__ == "__main__":
    main()
