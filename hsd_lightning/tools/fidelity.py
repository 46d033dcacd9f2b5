"""``hsd-lightning fidelity``: the fidelity columns (``evaluation/fidelity.py``) for committed run summaries, and
the E2E slot matcher's agreement with hand labels.

    hsd-lightning fidelity docs/results/e2e/runs/*                      # add the columns to each summary.csv
    hsd-lightning fidelity --hand docs/results/e2e/slot_errors_hand.jsonl   # agreement table (Markdown)
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ..evaluation.bootstrap import references_from_data
from ..evaluation.fidelity import fidelity_counts, hand_agreement, summarise
from ..evaluation.metrics import format_table
from ..evaluation.runs import COLUMNS, PREDICTIONS, SUMMARY, read_predictions


def add_to_runs(folders: list[Path], data_dir: str | None = None) -> list[Path]:
    """Add the fidelity columns to committed runs' ``summary.csv`` (``evaluation/runs.py``), computed from their
    ``predictions.jsonl.gz``; the references come from the data (by input id ``<dataset>-<split>-<k>``), for the
    committed predictions do not hold them. Returns the summaries rewritten."""
    refs_cache: dict[tuple[str, str], dict] = {}
    written = []
    for folder in folders:
        summary, preds = Path(folder) / SUMMARY, Path(folder) / PREDICTIONS
        if not (summary.is_file() and preds.is_file()):
            continue
        with summary.open(newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)
        records = read_predictions(preds)
        by_decoder: dict[str, list[dict]] = {}
        for rec in records:
            dataset, split = rec["id"].rsplit("-", 2)[:2]
            if (dataset, split) not in refs_cache:
                refs_cache[dataset, split] = references_from_data(dataset, data_dir, split)
            refs = refs_cache[dataset, split].get(rec["id"], {}).get("references", [])
            for dec, out in rec["outputs"].items():
                by_decoder.setdefault(dec, []).append(
                    fidelity_counts({"prediction": out["prediction"], "references": refs, "input": rec["input"]}))
        for row in rows:
            if row["decoder"] in by_decoder:
                row.update({k: f"{v:.6g}" for k, v in summarise(by_decoder[row["decoder"]]).items()})
                if not row.get("split"):
                    row["split"] = records[0]["id"].rsplit("-", 2)[1]
        fields = [c for c in COLUMNS if c in header or any(c in r for r in rows)] + \
                 [c for c in header if c not in COLUMNS]
        with summary.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        written.append(summary)
    return written


def main(argv: list[str] | None = None) -> None:
    """``hsd-lightning fidelity docs/results/e2e/runs/*``: add repetition, length and E2E slot error columns to
    committed run summaries (``pages`` then shows them)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders (docs/results/<task>/runs/<run>) or folders above them")
    p.add_argument("--data_dir", default=None, help="data root (default: $HSD_DATA_DIR, else the packaged sample)")
    p.add_argument("--hand", default=None, metavar="JSONL",
                   help="instead: the slot matcher's agreement with hand labels, e.g. "
                        "docs/results/e2e/slot_errors_hand.jsonl (a Markdown table)")
    args = p.parse_args(argv)
    if args.hand:
        cols = (("sample", "sample"), ("decoder", "decoder"), ("outputs", "outputs"), ("slots", "MR slots"),
                ("ser_hand", "SER % (hand)"), ("ser_matcher", "SER % (matcher)"),
                ("agree_error", "agree: error or not %"), ("agree_label", "agree: ok/missed/wrong %"),
                ("kappa", "kappa (error or not)"))
        print(format_table(hand_agreement(Path(args.hand)), cols))
        return
    if not args.runs:
        p.error("give run folders, or --hand JSONL")
    folders = sorted({s.parent for r in args.runs for s in ([Path(r) / "summary.csv"] if (Path(r) / "summary.csv")
                      .is_file() else Path(r).rglob("summary.csv"))})
    if not folders:
        raise SystemExit(f"no run summary (summary.csv) in {args.runs}: give docs/results/<task>/runs/<run> folders")
    for path in add_to_runs(folders, args.data_dir):
        print(f"wrote {path}")
