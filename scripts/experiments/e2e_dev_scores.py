"""The E2E dev-split selection rule of issue 34, over every committed dev table: for each candidate, the mean over
its plain HSD rows (no always-run layer, no decoding guard) of SER % + repeat-3 % (lower is better), with
vanilla's SER and R-L beside it.

    python scripts/experiments/e2e_dev_scores.py [docs/results/e2e/runs/*_dev200 ...]

With the equal-budget standard fine-tune's dev table among them (``lora_3808_beam4_dev200``), also prints each
candidate's vanilla cost against it (R-L %, SER points), the third target's two numbers.

    python scripts/experiments/e2e_dev_scores.py --synth docs/results/e2e/runs/*_synthdev200

scores runs (committed, or sweep folders) decoded on MRs without references (``synth_mrs.py``: held-out MRs of the
training set's slots and values in every combination, with the 7-8-slot pubs and restaurants that among the splits
only test holds) the same way: SER % of each decoder, and repeat-3 % recomputed from its outputs with no reference
to excuse a repeat, with the slot errors per MR size.
Where a candidate has both tables (``<run>_dev200`` and ``<run>_synthdev200``), the default run also prints the sum
of its two scores: the selection rule once the sampled MRs exist (the devset has no 7-8-slot pub or restaurant, the
test set little else), fixed before any table of these held-out MRs was read (an earlier sample of the devset's own
values, which hold no pub or restaurant, had been decoded for two candidates and was dropped).
"""
from __future__ import annotations

import csv
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

from hsd_lightning.evaluation.fidelity import repeats
from hsd_lightning.evaluation.slots import parse_mr, slot_counts


def rows(folder: Path) -> dict[str, dict[str, float]]:
    with (folder / "summary.csv").open(newline="") as f:
        return {r["decoder"]: {k: float(r[k]) for k in ("rougeL", "ser", "repeat3")}
                for r in csv.DictReader(f)}


def plain_hsd(table: dict[str, dict]) -> list[dict]:
    """The plain HSD rows of one table: not `always_run` variants, nor decoding guards (" + no_repeat_ngram_size=3",
    rows a table may hold beside them, never the fix the rule chooses)."""
    return [r for d, r in table.items() if d.startswith("hsd(") and "always" not in d and " + " not in d]


def score(hsd: list[dict]) -> float:
    """The rule's score: the mean over the plain HSD rows of SER % + repeat-3 % (lower is better)."""
    return sum(r["ser"] + r["repeat3"] for r in hsd) / len(hsd)


def _synth_outputs(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """decoder -> [(MR, output)]: from a committed run (predictions.jsonl.gz) or a sweep folder (<decoder>/...)."""
    committed = folder / "predictions.jsonl.gz"
    if committed.exists():
        with gzip.open(committed, "rt") as f:
            recs = [json.loads(line) for line in f if line.strip()]
        return {d: [(r["input"], r["outputs"][d]["prediction"]) for r in recs] for d in recs[0]["outputs"]}
    out = {}
    for pred in sorted(folder.glob("*/predictions.jsonl")):
        recs = [json.loads(line) for line in pred.read_text().splitlines() if line.strip()]
        name = json.loads((pred.parent / "metrics.json").read_text())["decoder"]
        out[name] = [(r["prompt"], r["prediction"]) for r in recs]
    return out


def synth_rows(folder: Path) -> dict[str, dict]:
    """decoder -> SER %, repeat-3 % (any repeated trigram), and per MR size the slot errors."""
    out = {}
    for name, pairs in _synth_outputs(folder).items():
        errs, slots, rep, by_size = 0, 0, 0, Counter()
        for text_with_mr, prediction in pairs:
            mr = parse_mr(text_with_mr)
            c = slot_counts(mr, prediction)
            e = c["missed"] + c["wrong"] + c["added"]
            errs, slots, rep = errs + e, slots + c["slots"], rep + repeats(prediction, [])["repeat3"]
            by_size[len(mr)] += e
        out[name] = {"ser": 100 * errs / slots, "repeat3": 100 * rep / len(pairs), "n": len(pairs),
                     "by_size": dict(sorted(by_size.items()))}
    return out


def synth_main(folders: list[Path]) -> None:
    print("| candidate | score | HSD s=1 SER / rep3 | HSD s=2 SER / rep3 | vanilla SER / rep3 | slot errors by MR size "
          "(vanilla; s=1; s=2) |")
    print("|---|---|---|---|---|---|")
    out = []
    for f in folders:
        t = synth_rows(f)
        hsd = plain_hsd(t)
        s = score(hsd)
        shown = [*(hsd + [None, None])[:2], t.get("vanilla")]  # rollouts of the plans alone have no vanilla row
        cells = [f.name, f"{s:.1f}",
                 *(f"{r['ser']:.1f} / {r['repeat3']:.1f}" if r else "-" for r in shown),
                 "; ".join(" ".join(f"{k}:{v}" for k, v in r["by_size"].items()) if r else "-" for r in shown[2:] + shown[:2])]
        out.append((s, "| " + " | ".join(cells) + " |"))
    for _, line in sorted(out):
        print(line)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--synth"]:
        return synth_main([Path(a) for a in argv[1:]])
    folders = [Path(a) for a in argv] or sorted(Path("docs/results/e2e/runs").glob("*_dev200"))
    tables = {f.name: rows(f) for f in folders}
    std = next((t["vanilla"] for n, t in tables.items() if n.startswith("lora_3808")), None)
    print("| candidate | score | HSD s=1 SER / rep3 | HSD s=2 SER / rep3 | vanilla R-L | vanilla SER |"
          + (" R-L cost % | SER points |" if std else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if std else ""))
    out, dev_scores = [], {}
    for name, t in tables.items():
        hsd = plain_hsd(t)
        if not hsd:
            continue
        dev_scores[name] = s = score(hsd)
        v = t["vanilla"]
        cells = [name, f"{s:.1f}", *(f"{r['ser']:.1f} / {r['repeat3']:.1f}" for r in hsd[:2]),
                 f"{v['rougeL']:.2f}", f"{v['ser']:.1f}"]
        if std:
            cells += [f"{100 * (1 - v['rougeL'] / std['rougeL']):.1f}", f"{v['ser'] - std['ser']:+.1f}"]
        out.append((s, "| " + " | ".join(cells) + " |"))
    for _, line in sorted(out):
        print(line)
    # the rule since the sampled dev MRs exist: dev score + sampled-dev score, for the candidates decoded on both
    synth = {f.name.removesuffix("_synthdev200"): f for f in folders[0].parent.glob("*_synthdev200")} if folders else {}
    both = []
    for name, dev in dev_scores.items():
        key = name.removesuffix("_dev200")
        if key in synth:
            sdev = score(plain_hsd(synth_rows(synth[key])))
            both.append((dev + sdev, f"| {key} | {dev + sdev:.1f} | {dev:.1f} | {sdev:.1f} |"))
    if both:
        print("\n| candidate | dev + sampled-dev score | dev score | sampled-dev score |\n|---|---|---|---|")
        for _, line in sorted(both):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
