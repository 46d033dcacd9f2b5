"""On-policy distillation data for E2E (issue 34, lever 1: "a per-position KL to the full-depth distribution", taken
where the plans go wrong): training texts that are the *plans' own* decoded outputs, so that the KL to full depth is
computed in the states a plan actually reaches -- after it has left a slot out or started a clause again -- and not
only along texts it would never write (GKD, Agarwal et al. 2024; DAgger for a student). The text is only the
context: with ``model.distill_weight 1`` the loss reads no label, only full depth's next-token distribution at every
position of it, so a rollout's own repeat or omission is never taught, the teacher's way out of it is.

    python -m hsd_lightning sweep --config configs/default.yaml --quiet --data.init_args.predict_split train \\
        --data.init_args.max_eval_samples 1200 --data.init_args.shuffle_subset true --data.init_args.seed 56 \\
        --decoders '[["hsd",{"s":1,"e_min":0,"e_max":10}],["hsd",{"s":2,"e_min":0,"e_max":10}]]' \\
        --model.num_beams 1 --no_agreement --out runs/onpolicy/greedy_train1200
    python scripts/experiments/onpolicy_pairs.py runs/onpolicy/greedy_train1200/hsd_s1_min0_max10 \\
        runs/onpolicy/greedy_train1200/hsd_s2_min0_max10 --targets runs/seqkdall_honest_std/train.jsonl \\
        --rows 2400 --seed 57 --out runs/onpolicy/train.jsonl

Writes ``rows`` lines ``{"mr", "ref"}`` (the E2E field names; ``ref`` is the text the loss runs along), shuffled
with ``--seed``: every rollout that a reader would fault (a repeated trigram or a doubled word that its references
do not have, or a slot of the MR missed or wrong), as many fault-free rollouts again (the states where the plan is
right, so the loss does not only ever see broken texts; ``--clean all``: every fault-free one), and the rest from
``--targets`` (the stage's slot-correct targets, so that half of the rows stay on the texts the adapter was trained
to say). Copies the devset (``validation.jsonl``, human references) beside it and prints the counts.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from seqkd_pairs import read_predictions, source_of

from hsd_lightning.evaluation.fidelity import fidelity_counts, repeats


def faulty(record: dict) -> bool:
    """What a reader would fault: a repeat that the references do not have (any repeat, for an MR without a
    reference: synth_mrs.py's), or a slot of the MR missed or wrong."""
    c = fidelity_counts(record)
    if "repeat3" not in c:
        c.update(repeats(record["prediction"], []))
    return bool(c.get("repeat3") or c.get("repeat1") or c.get("missed") or c.get("wrong"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="predict folders of skipping decoders on training MRs")
    p.add_argument("--targets", type=Path, required=True,
                   help='the stage\'s own {"mr", "ref"} pairs (their validation.jsonl is copied beside --out)')
    p.add_argument("--rows", type=int, required=True, help="lines to write (steps x batch size of the stage)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clean", choices=("match", "all"), default="match",
                   help="fault-free rollouts to keep: as many as the faulty ones (default), or all of them")
    p.add_argument("--rollouts", type=int, default=None,
                   help="keep only this many rollouts, half faulty and half fault-free (a seeded draw of each), so "
                        "that two sets of rollouts can share one stage's rows")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    bad, good = [], []
    for run in args.runs:
        for r in read_predictions(run):
            if r["prediction"].strip():
                (bad if faulty(r) else good).append({"mr": source_of(r["prompt"]), "ref": r["prediction"]})
    targets = [json.loads(line) for line in args.targets.read_text().splitlines() if line.strip()]
    rng.shuffle(good)
    rng.shuffle(targets)
    n_bad, n_good = len(bad), len(good)
    if args.rollouts is not None:
        if args.clean == "all":
            p.error("--rollouts N keeps half faulty, half fault-free rollouts; leave out --clean all")
        half = args.rollouts // 2
        if len(bad) < half or len(good) < args.rollouts - half:
            raise SystemExit(f"--rollouts {args.rollouts} needs {half} faulty and {args.rollouts - half} fault-free "
                             f"rollouts; these runs have {len(bad)} and {len(good)}: lower --rollouts")
        rng.shuffle(bad)
        bad, good = bad[:half], good[:args.rollouts - half]
    elif args.clean == "match":
        good = good[:len(bad)]
    rollouts = bad + good
    if len(rollouts) > args.rows:
        raise SystemExit(f"--rows {args.rows} is fewer than the {len(rollouts)} rollouts to keep (all {len(bad)} "
                         f"faulty and {len(rollouts) - len(bad)} fault-free); raise --rows or decode fewer MRs")
    if args.rows - len(rollouts) > len(targets):
        raise SystemExit(f"--rows {args.rows} needs {args.rows - len(rollouts)} lines of {args.targets}, which has "
                         f"{len(targets)}; lower --rows")
    rows = rollouts + targets[:args.rows - len(rollouts)]
    rng.shuffle(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    shutil.copyfile(args.targets.parent / "validation.jsonl", args.out.parent / "validation.jsonl")
    print(f"{len(rows)} rows -> {args.out}: {len(bad)} faulty rollouts (of {n_bad}), {len(rollouts) - len(bad)} "
          f"fault-free ones (of {n_good}), {len(rows) - len(rollouts)} lines of {args.targets}")


if __name__ == "__main__":
    main()
