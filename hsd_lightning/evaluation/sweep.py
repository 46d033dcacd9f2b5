"""Decode one checkpoint under a list of decoder settings, loading the model once.

    python -m hsd_lightning.evaluation.sweep --config configs/smollm2_e2e.yaml --ckpt_path last.ckpt --out runs/sweep
    python -m hsd_lightning.evaluation.report runs/sweep --out runs/sweep/report

By default the paper's 11 rows. Exit budgets E were tuned for 36-layer GPT-2; for a model of another depth they
are scaled by L/36 and rounded (``schedules.scale_exit``): SmolLM2's 30 layers turn HSD E_max 12 into 10.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..decoding import build_decoder
from ..decoding.schedules import scale_exit

# (name, settings) as in the paper's tables, E values for a 36-layer model
PAPER_ROWS = [("vanilla", {}), ("calm", {"d": 0.02}), ("calm", {"d": 0.005}),
              ("skipdecode", {"e_min": 10, "e_max": 20}), ("skipdecode", {"e_min": 10, "e_max": 24}),
              *[("hsd", {"s": s, "e_min": 0, "e_max": e}) for e in (18, 12, 8) for s in (1, 2)]]


def paper_decoders(num_layers: int, rows=PAPER_ROWS):
    out = []
    for name, kw in rows:
        kw = {k: (scale_exit(v, num_layers) if k.startswith("e_") else v) for k, v in kw.items()}
        out.append(build_decoder(name, **kw))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="LightningCLI config(s) of the run")
    p.add_argument("--ckpt_path", default=None)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--decoders", default=None,
                   help='JSON list of [name, settings] overriding the paper rows, e.g. \'[["hsd", {"s": 1}]]\'')
    p.add_argument("overrides", nargs="*", help="extra LightningCLI arguments, e.g. --data.init_args.max_eval_samples=8")
    args, extra = p.parse_known_args(argv)
    from ..cli import cli_main

    cli_args = [x for c in args.config for x in ("--config", c)] + args.overrides + extra
    cli = cli_main(cli_args, run=False)
    model, trainer, dm = cli.model, cli.trainer, cli.datamodule
    if args.ckpt_path:
        ckpt = torch.load(args.ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"], strict=model.strict_loading)
    rows = json.loads(args.decoders) if args.decoders else PAPER_ROWS
    decoders = paper_decoders(model.model.config.num_hidden_layers, rows)
    from .writer import PredictionScorer

    scorers = [cb for cb in trainer.callbacks if isinstance(cb, PredictionScorer)]
    if not scorers:
        raise ValueError("the config has no PredictionScorer callback; add presets/base.yaml")
    out = Path(args.out)
    for dec in decoders:
        model.decoder = dec
        scorers[0].output_dir = str(out / dec.describe())
        for extra_scorer in scorers[1:]:
            trainer.callbacks.remove(extra_scorer)
        trainer.predict(model, datamodule=dm)
    print(f"sweep done: {len(decoders)} decoders under {out}; report: python -m hsd_lightning.evaluation.report {out}")


if __name__ == "__main__":
    main()
