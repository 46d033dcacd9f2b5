"""E2E meaning representations sampled from the ontology, for self-distillation on inputs no split holds (issue 34,
lever 1: "no labels needed, so any number of inputs").

Why: the E2E splits do not share their MR shapes. Every 7- and 8-slot MR of the training set and of the devset that
has an eatType is a coffee shop (train 736, dev 271); every one of the test set's 490 is a pub or a restaurant. The
plans drop the last clause ("It is not family-friendly.") or the food exactly there, on test only, and a dev sample
cannot show it. Sampling MRs from the slots and values a split uses, in every combination, covers the shapes no
split pairs with a reference; the weights' own outputs on them need no reference.

    python scripts/experiments/synth_mrs.py --split trainset --n 1000 --seed 60 --out runs/synth/train_mrs.jsonl
    python scripts/experiments/synth_mrs.py --split trainset --n 200 --seed 61 --exclude runs/synth/train_mrs.jsonl \
        --out runs/synth/dev_mrs.jsonl

(the second: held-out MRs of the same kind to choose on; the devset's own values hold no pub or restaurant at all).

Each MR has the split's ``name`` and 2-7 other slots (the count uniform, the slots a uniform choice), each value a
uniform choice among the values the split uses for that slot, in the E2E slot order. MRs that any split's file holds
are left out, so the inputs are new to all of them (the test MRs are read only to leave them out), and so are the
MRs of ``--exclude`` files (an earlier sample: a held-out set must not share its MRs). Writes
``{"mr", "ref": ""}`` lines: a TextPairDataModule decodes inputs without a reference; SER and repeats need none.
Read from ``$HSD_DATA_DIR/e2e`` (default ``data/e2e``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

from hsd_lightning.evaluation.slots import SLOTS, parse_mr

SPLITS = ("trainset", "devset", "testset_w_refs")


def read_mrs(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(dict.fromkeys(row["mr"] for row in csv.DictReader(f)))


def ontology(mrs: list[str]) -> dict[str, list[str]]:
    """slot -> the values the MRs use, in order of first use (so a seed gives the same MRs on every machine)."""
    values: dict[str, dict[str, None]] = {s: {} for s in SLOTS}
    for mr in mrs:
        for slot, value in (parse_mr(mr) or {}).items():
            values[slot][value] = None
    return {s: list(v) for s, v in values.items() if v}


def to_text(mr: dict[str, str]) -> str:
    return ", ".join(f"{s}[{mr[s]}]" for s in SLOTS if s in mr)


def sample(values: dict[str, list[str]], n: int, seed: int, exclude: set[str]) -> list[str]:
    rng = random.Random(seed)
    others = [s for s in SLOTS if s != "name" and s in values]
    out: dict[str, None] = {}
    misses = 0  # draws in a row that gave no new MR: many means the combinations are used up
    while len(out) < n and misses < 10_000:
        chosen = rng.sample(others, rng.randint(2, len(others)))
        mr = to_text({"name": rng.choice(values["name"]), **{s: rng.choice(values[s]) for s in chosen}})
        new = mr not in exclude and mr not in out
        misses = 0 if new else misses + 1
        if new:
            out[mr] = None
    if len(out) < n:
        raise SystemExit(f"--n {n}: only {len(out)} new MRs found; lower --n")
    return list(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", choices=SPLITS, required=True, help="whose names, slots and values to sample")
    p.add_argument("--n", type=int, required=True, help="MRs to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", type=Path, nargs="*", default=[], help="MR files (.jsonl) whose MRs to leave out too")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    data = Path(os.environ.get("HSD_DATA_DIR", "data")) / "e2e"
    split_mrs = {s: read_mrs(data / f"{s}.csv") for s in SPLITS}
    exclude = {to_text(parse_mr(m)) for mrs in split_mrs.values() for m in mrs if parse_mr(m)}
    for path in args.exclude:
        exclude |= {json.loads(line)["mr"] for line in path.read_text().splitlines() if line.strip()}
    mrs = sample(ontology(split_mrs[args.split]), args.n, args.seed, exclude)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps({"mr": m, "ref": ""}) + "\n" for m in mrs))
    sizes = [len(parse_mr(m)) for m in mrs]
    print(f"{len(mrs)} MRs -> {args.out}; slots per MR: "
          + ", ".join(f"{k}: {sizes.count(k)}" for k in sorted(set(sizes))))


if __name__ == "__main__":
    main()
