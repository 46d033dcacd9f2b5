"""Average layers per token that static plans (SkipDecode, HSD) run on given output lengths, for several ``t_max``.

    python -m hsd_lightning depth runs/results/e2e/skipaware_1000_beam4/vanilla/predictions.jsonl \
        --num_layers 30 --t_max 64 48 40 32 --out docs/results/e2e/depth_vs_tmax.md

A static plan's depth depends only on how many tokens are generated and on ``t_max`` (eq. 4 decays from E_max at
t = 0 to E_min at t_max), not on the weights. Outputs that end long before ``t_max`` keep the early, deep part of the
schedule: on E2E (~28 tokens) with t_max 64, HSD s=1 E_max 10 runs ~0.64 L whatever the model writes. This tool
answers "which t_max gives depth X on outputs of this length" before a fine-tune is spent on it (the plans a
skip-aware model is trained for must use the t_max decoding will use). The averaging is the one of the metrics
(``Avg. Layer``): every generated token after the first (the prompt pass runs every layer) counts once.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from ..decoding import CALM, build_decoder, build_paper_decoder

# the target rows in the paper's 36-layer units (scaled to the model's depth): HSD s=1/s=2 E_max 12,
# SkipDecode (10, 24)
TARGET_ROWS = [("hsd", {"s": 1, "e_min": 0, "e_max": 12}), ("hsd", {"s": 2, "e_min": 0, "e_max": 12}),
               ("skipdecode", {"e_min": 10, "e_max": 24})]


def average_layers(decoder, passes: list[int], num_layers: int, t_max: int) -> float:
    """Average layers per scheduled step of ``decoder`` over outputs of ``passes[b]`` forward passes each (pass 0 is
    the prompt pass, which is not counted; ``len(layers_per_token)`` of a prediction record)."""
    total = steps = 0
    for n in passes:  # the schedules hold their t_max value past t_max
        total += sum(len(decoder.layers_for_step(t, num_layers, t_max)) for t in range(1, n))
        steps += max(n - 1, 0)
    return total / steps if steps else float("nan")


def depth_table(passes: list[int], decoders: list, num_layers: int, t_maxes: list[int]) -> str:
    lengths = sorted(passes)
    head = (f"{len(lengths)} outputs, tokens per output: median {statistics.median(lengths):g}, mean "
            f"{statistics.mean(lengths):.1f}, 90th percentile {lengths[int(0.9 * (len(lengths) - 1))]}, "
            f"max {lengths[-1]}; L = {num_layers}\n\n")
    names = [d.describe() for d in decoders]
    rows = ["| t_max | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t_max in t_maxes:
        cells = []
        for d in decoders:
            avg = average_layers(d, passes, num_layers, t_max)
            cells.append(f"{avg:.2f} ({avg / num_layers:.3f} L)")
        rows.append(f"| {t_max} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", help="a predictions.jsonl whose outputs give the lengths (e.g. vanilla's), from a "
                   "run, or a committed run's docs/results/<task>/runs/<run>/predictions.jsonl.gz#<decoder>")
    p.add_argument("--num_layers", type=int, required=True, help="model depth L (30 for SmolLM2-135M)")
    p.add_argument("--t_max", type=int, nargs="+", required=True, help="schedule horizons to compare")
    p.add_argument("--decoders", default=None,
                   help="JSON list of [name, settings], e_min/e_max in layers of this model (default: the paper's "
                        "target rows, scaled from --paper_depth)")
    p.add_argument("--paper_depth", type=int, default=36, help="depth the default rows' E were tuned for (36)")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    from .runs import decoder_records

    records = decoder_records(args.predictions)
    if records is None:
        records = [json.loads(line) for line in Path(args.predictions).read_text().splitlines() if line.strip()]
    if not records:
        raise SystemExit(f"{args.predictions} holds no predictions; pass a predictions.jsonl of a finished run")
    if args.decoders:
        decoders = [build_decoder(name, **kw) for name, kw in json.loads(args.decoders)]
    else:
        decoders = [build_paper_decoder(name, kw, args.num_layers, args.paper_depth) for name, kw in TARGET_ROWS]
        print(f"depth: the paper's target rows, exit budgets scaled from {args.paper_depth} to {args.num_layers} "
              "layers: " + ", ".join(d.describe() for d in decoders))
    for d in decoders:
        if isinstance(d, CALM):  # the one decoder without a static plan (as in the sweep's agreement pass)
            raise SystemExit(f"decoder {d.describe()!r} has no static plan (its depth depends on the model's "
                             "confidences); pass vanilla, skipdecode or hsd rows in --decoders")
    try:  # a run's predictions.jsonl, or a report's copy under docs/results/*/predictions (``passes``)
        passes = [r["passes"] if "passes" in r else len(r["layers_per_token"]) for r in records]
    except KeyError:
        raise SystemExit(f"{args.predictions} has no layers_per_token or passes field; pass a predictions.jsonl "
                         "written by predict or the sweep, or a report's copy made after this field was added") from None
    table = depth_table(passes, decoders, args.num_layers, args.t_max)
    cmd = "python -m hsd_lightning depth " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.out:
        Path(args.out).write_text(f"# Average layers per token against t_max\n\n`{cmd}`\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
