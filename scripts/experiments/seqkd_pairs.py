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

``--honest_from RUN`` (with ``--honest``) tries another model's output first: where the weights' own output misses
or gets a slot wrong, the output of RUN (a predict folder of the same MRs, e.g. the standard fine-tune's vanilla
beam outputs) for that MR is taken if the matcher finds no slot of it missed or wrong, else the human reference as
above (make RUN by decoding the MRs that ``--list_errors FILE`` writes: every MR whose own output misses or gets
a slot wrong, as ``{"mr", "ref"}`` lines a TextPairDataModule reads). Model outputs word one MR one way;
references word it many ways, which a shallow plan learns as a blur.
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
    p.add_argument("--honest_from", type=Path, default=None,
                   help="with --honest: a predict folder whose slot-correct output for an MR is preferred to a reference")
    p.add_argument("--list_errors", type=Path, default=None,
                   help="also write the MRs whose own output misses or gets a slot wrong to this .jsonl")
    args = p.parse_args(argv)
    if args.honest_from is not None and not args.honest:
        p.error("--honest_from RUN only applies with --honest")
    data = Path(os.environ.get("HSD_DATA_DIR", "data")) / "e2e"
    references: dict[str, list[str]] = {}
    if args.honest:
        with (data / "trainset.csv").open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                references.setdefault(r["mr"], []).append(r["ref"])
    records = read_predictions(args.run)
    other = {source_of(r["prompt"]): r["prediction"] for r in read_predictions(args.honest_from)} \
        if args.honest_from is not None else {}
    rows, errors, empty, with_error, replaced, from_other = [], [], 0, 0, 0, 0
    for r in records:
        if not r["prediction"].strip():
            empty += 1
            continue
        mr = source_of(r["prompt"])
        slots = parse_mr(mr)
        counts = slot_counts(slots, r["prediction"])
        with_error += bool(drops(counts) or counts["added"])
        target = r["prediction"]
        if drops(counts):
            errors.append({"mr": mr, "ref": r["prediction"]})
        if args.honest and drops(counts):
            if mr not in references:
                raise SystemExit(f"MR {mr!r} is not in {data / 'trainset.csv'}; --honest needs predictions of the train split")
            replaced += 1
            if other.get(mr, "").strip() and not drops(slot_counts(slots, other[mr])):
                target = other[mr]
                from_other += 1
            else:
                scored = [(slot_counts(slots, ref), ref) for ref in references[mr]]
                target = next((ref for c, ref in scored if not (drops(c) or c["added"])),
                              next((ref for c, ref in scored if not drops(c)), references[mr][0]))
        rows.append({"mr": mr, "ref": target})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    if args.list_errors is not None:
        args.list_errors.write_text("".join(json.dumps(row) + "\n" for row in errors))
        print(f"{len(errors)} MRs whose output misses or gets a slot wrong -> {args.list_errors}")
    with (data / "devset.csv").open(newline="", encoding="utf-8") as f:
        dev_rows = [{"mr": r["mr"], "ref": r["ref"]} for r in csv.DictReader(f)]
    (args.out.parent / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev_rows))
    print(f"{len(rows)} pairs from {len(records)} outputs ({empty} empty left out) -> {args.out}; "
          f"{with_error} of them with a slot error by the matcher"
          + (f"; {replaced} with a slot missed or wrong replaced"
             + (f": {from_other} by {args.honest_from}'s output, {replaced - from_other}" if args.honest_from else "")
             + " by a human reference (--honest)" if args.honest else ""))


def drops(counts: dict[str, int]) -> bool:
    """A slot of the MR missed or said wrong (an *added* slot alone does not count: the lever fixes omissions)."""
    return bool(counts["missed"] or counts["wrong"])


def read_predictions(run: Path) -> list[dict]:
    files = sorted(run.glob("predictions*.jsonl"))
    if not files:
        raise SystemExit(f"{run}: no predictions*.jsonl; pass the folder a predict run wrote (its output_dir)")
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
