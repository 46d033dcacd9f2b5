"""Decode one checkpoint under a list of decoder settings, loading the model once.

    python -m hsd_lightning.evaluation.sweep --config configs/smollm2_e2e.yaml --ckpt_path last.ckpt --out runs/sweep
    python -m hsd_lightning.evaluation.report runs/sweep --out runs/sweep/report

By default the paper's 11 rows. Exit budgets E were tuned for 36-layer GPT-2; for a model of another depth they
are scaled by L/36 and rounded (``schedules.scale_exit``): SmolLM2's 30 layers turn HSD E_max 12 into 10.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from ..decoding import build_paper_decoder
from ..library_noise import quiet_libraries

# (name, settings) as in the paper's tables, E values for a 36-layer model
PAPER_ROWS = [("vanilla", {}), ("calm", {"d": 0.02}), ("calm", {"d": 0.005}),
              ("skipdecode", {"e_min": 10, "e_max": 20}), ("skipdecode", {"e_min": 10, "e_max": 24}),
              *[("hsd", {"s": s, "e_min": 0, "e_max": e}) for e in (18, 12, 8) for s in (1, 2)]]


def paper_decoders(num_layers: int, rows=PAPER_ROWS, always_run: list[int] | None = None):
    """The rows' decoders with E scaled to ``num_layers``; with ``always_run``, every SkipDecode/HSD row is followed
    by a copy that also runs those layers at every step."""
    out = []
    for name, kw in rows:
        out.append(build_paper_decoder(name, kw, num_layers))
        if always_run and name in ("skipdecode", "hsd") and not kw.get("always_run"):
            out.append(build_paper_decoder(name, {**kw, "always_run": always_run}, num_layers))
    return out


def add_agreement(model, dm, out: Path, decoders, t_max: int) -> None:
    """Agreement with vanilla for every static-plan decoder, teacher-forced on vanilla's predictions of this
    sweep; written into each run's metrics.json (``agreement``, in %). A row whose metrics already hold agreement
    against the same vanilla outputs and ``t_max`` (``agreement_reference``) is not computed again, so a resumed
    sweep pays only for its new rows."""
    from ..decoding import CALM
    from .agreement import agreement_counts

    vanilla = [d for d in decoders if d.name == "vanilla"]
    if not vanilla:
        print("no vanilla row in this sweep: agreement with vanilla is not computed")
        return
    preds = [json.loads(line) for line in (out / vanilla[0].describe() / "predictions.jsonl").read_text().splitlines()]
    reference = hashlib.sha256(json.dumps([t_max, [(r["id"], r["token_ids"]) for r in preds]]).encode()).hexdigest()
    static = [d for d in decoders if not isinstance(d, CALM)
              and json.loads((out / d.describe() / "metrics.json").read_text()).get("agreement_reference") != reference]
    if not static:
        return
    ds = dm.dataset_for(dm.hparams.predict_split, "generate")
    prompt_of = dict(zip(ds["id"], ds["prompt_ids"]))
    prompts = [prompt_of[r["id"]] for r in preds]
    conts = [r["token_ids"] for r in preds]
    model.eval()
    counts = agreement_counts(model.model, static, prompts, conts, dm.tokenizer.pad_token_id, t_max,
                              batch_size=dm.hparams.eval_batch_size)
    for dec in static:
        agree, total = counts[dec.describe()]
        path = out / dec.describe() / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["agreement"] = 100.0 * agree / total if total else float("nan")
        metrics["agreement_positions"] = total
        metrics["agreement_reference"] = reference
        path.write_text(json.dumps(metrics, indent=2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="LightningCLI config(s) of the run")
    p.add_argument("--ckpt_path", default=None)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--decoders", default=None,
                   help='JSON list of [name, settings] overriding the paper rows, e.g. \'[["hsd", {"s": 1}]]\'')
    p.add_argument("--always_run", type=int, nargs="*", default=None,
                   help="also run every SkipDecode/HSD row with these layers always on (1-based), e.g. --always_run 1")
    p.add_argument("--no_agreement", action="store_true", help="skip the agreement-with-vanilla pass")
    p.add_argument("--quiet", action="store_true",
                   help="no per-decoder tables, progress bars or library info lines (the report prints the table)")
    # every other argument goes to LightningCLI as it is, e.g. --data.init_args.max_eval_samples 8
    args, extra = p.parse_known_args(argv)
    from ..cli import cli_main

    cli_args = [x for c in args.config for x in ("--config", c)] + extra
    if args.quiet:
        quiet_libraries()
        cli_args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    cli = cli_main(cli_args, run=False)
    model, trainer, dm = cli.model, cli.trainer, cli.datamodule
    if args.ckpt_path:
        ckpt = torch.load(args.ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"], strict=model.strict_loading)
        model.on_load_checkpoint(ckpt)  # training kind and the t_max a skip-aware checkpoint was trained for
        model.checkpoint_path = args.ckpt_path
        model.check_t_max()
    rows = json.loads(args.decoders) if args.decoders else PAPER_ROWS
    decoders = paper_decoders(model.model.config.num_hidden_layers, rows, args.always_run)
    from .writer import PredictionScorer

    scorers = [cb for cb in trainer.callbacks if isinstance(cb, PredictionScorer)]
    if not scorers:
        raise ValueError("the config has no PredictionScorer callback; add presets/base.yaml")
    out = Path(args.out)
    scorers[0].print_table = not args.quiet
    for dec in decoders:
        model.decoder = dec
        scorers[0].output_dir = str(out / dec.describe())
        for extra_scorer in scorers[1:]:
            trainer.callbacks.remove(extra_scorer)
        trainer.predict(model, datamodule=dm)
    if not args.no_agreement:
        add_agreement(model, dm, out, decoders, model.t_max)
    if not args.quiet:
        print(f"sweep done: {len(decoders)} decoders under {out}; report: python -m hsd_lightning.evaluation.report {out}")


if __name__ == "__main__":
    main()
