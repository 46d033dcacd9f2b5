"""Recompute the scores of finished runs from their ``predictions.jsonl`` (e.g. after a metric is fixed), keeping
every other key of their ``metrics.json`` (decoder, checkpoint, agreement...).

    python -m hsd_lightning rescore runs/results/e2e [more folders]   # every run folder below them
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .metrics import GenerationScores
from .writer import all_devices_throughput, read_records


def rescore(run: Path, scores: GenerationScores) -> dict:
    records = list(read_records(run).values())
    scores.reset_states()
    scores.update(records)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(scores.compute(), tokens_per_second_all_devices=all_devices_throughput(records))
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--bertscore_model", default=None)
    args = p.parse_args(argv)
    runs = sorted({m.parent for f in args.folders for m in Path(f).rglob("metrics.json")
                   if (m.parent / "predictions.jsonl").exists()})
    if not runs:
        p.error(f"no run folder (metrics.json + predictions.jsonl) under {args.folders}")
    scores = GenerationScores(args.bertscore_model)
    for run in runs:
        m = rescore(run, scores)
        print(f"{run}: R-L {m['rougeL']:.2f}  BERTScore {m['bertscore']:.2f}  ({int(m['examples'])} inputs)")


if __name__ == "__main__":
    main()
