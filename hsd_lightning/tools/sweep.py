"""Decode one checkpoint under a list of decoder settings, loading the model once.

    python -m hsd_lightning sweep --config configs/smollm2_e2e.yaml --ckpt_path last.ckpt --out runs/sweep
    python -m hsd_lightning sweep --config ... --decoders '[["vanilla", {}], ["hsd", {"s": 1, "e_max": 10}]]'
    python -m hsd_lightning report runs/sweep

Each decoder gets one folder ``<out>/<decoder>/`` (a plain name: ``hsd_s1_min0_max10``) holding its
``predictions.jsonl``, ``metrics.json`` and TensorBoard events; every decoder logs the same tags
(``predict/rougeL`` ...), so ``tensorboard --logdir <out>`` overlays them, and ``<out>/summary`` holds the
quality-vs-layers figure.

``e_min`` / ``e_max`` mean layers of the model decoded, here as in ``predict --decoder.e_max`` and the benchmark.
Without ``--decoders`` the sweep runs the paper's 11 rows, whose exit budgets were tuned for its 36-layer GPT-2:
those are scaled by L / ``--paper_depth`` (default 36) and rounded (``schedules.scale_exit``), and the sweep prints
each conversion (SmolLM2's 30 layers: HSD E_max 12 -> 10).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ..decoding import build_decoder, build_paper_decoder
from ..library_noise import quiet_libraries
from ..training.checkpoint import read_checkpoint

# (name, settings) as in the paper's tables, E values for a 36-layer model
PAPER_ROWS = [("vanilla", {}), ("calm", {"d": 0.02}), ("calm", {"d": 0.005}),
              ("skipdecode", {"e_min": 10, "e_max": 20}), ("skipdecode", {"e_min": 10, "e_max": 24}),
              *[("hsd", {"s": s, "e_min": 0, "e_max": e}) for e in (18, 12, 8) for s in (1, 2)]]


def paper_decoders(num_layers: int, rows=PAPER_ROWS, always_run: list[int] | None = None,
                   paper_depth: int | None = 36):
    """The rows' decoders; with ``paper_depth``, their exit budgets are the paper's for a model of that depth and are
    scaled to ``num_layers`` (``None``: the budgets are layers of this model, as given). With ``always_run``, every
    SkipDecode/HSD row is followed by a copy that also runs those layers at every step."""
    out = []
    for name, kw in rows:
        variants = [kw] + ([{**kw, "always_run": always_run}] if always_run and name in ("skipdecode", "hsd")
                           and not kw.get("always_run") else [])
        for v in variants:
            out.append(build_paper_decoder(name, v, num_layers, paper_depth) if paper_depth else build_decoder(name, **v))
    return out


def add_agreement(model, dm, out: Path, decoders, t_max: int) -> None:
    """Agreement with vanilla for every static-plan decoder, teacher-forced on vanilla's predictions of this
    sweep; written into each run's metrics.json (``agreement``, in %). A row whose metrics already hold agreement
    against the same vanilla outputs and ``t_max`` (``agreement_reference``) is not computed again, so a resumed
    sweep pays only for its new rows."""
    from ..decoding import CALM
    from ..evaluation.agreement import agreement_counts

    vanilla = [d for d in decoders if d.name == "vanilla"]
    if not vanilla:
        print("no vanilla row in this sweep: agreement with vanilla is not computed")
        return
    preds = [json.loads(line) for line in (out / vanilla[0].slug() / "predictions.jsonl").read_text().splitlines()]
    reference = hashlib.sha256(json.dumps([t_max, [(r["id"], r["token_ids"]) for r in preds]]).encode()).hexdigest()
    static = [d for d in decoders if not isinstance(d, CALM)
              and json.loads((out / d.slug() / "metrics.json").read_text()).get("agreement_reference") != reference]
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
        path = out / dec.slug() / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["agreement"] = 100.0 * agree / total if total else float("nan")
        metrics["agreement_positions"] = total
        metrics["agreement_reference"] = reference
        path.write_text(json.dumps(metrics, indent=2))


def summary_figure(out: Path, decoders) -> None:
    """``<out>/summary``: TensorBoard events with the quality-vs-layers figure of this sweep (one image, every row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    rows = [json.loads((out / d.slug() / "metrics.json").read_text()) for d in decoders]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "rougeL", "ROUGE-L"), (axes[1], "bertscore", "BERTScore F1")):
        for r in rows:
            if r.get(key) is not None and r[key] == r[key]:  # not NaN
                ax.scatter(r["avg_layer"], r[key])
                ax.annotate(r["decoder"], (r["avg_layer"], r[key]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("Avg. Layer (layers per generated token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with SummaryWriter(str(out / "summary")) as writer:
        writer.add_figure("quality_vs_layers", fig, 0)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="LightningCLI config(s) of the run")
    p.add_argument("--ckpt_path", default=None)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--decoders", default=None,
                   help='JSON list of [name, settings] instead of the paper rows, e_min/e_max in layers of this model, '
                        'e.g. \'[["vanilla", {}], ["hsd", {"s": 1, "e_max": 10}]]\'')
    p.add_argument("--paper_depth", type=int, default=36,
                   help="depth the paper's rows were tuned for (36, GPT-2 large); their E are scaled to the model's "
                        "depth. Applies to the built-in paper rows only, never to --decoders")
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
        ckpt = read_checkpoint(args.ckpt_path)  # weights only: a crafted file cannot run code
        model.load_state_dict(ckpt["state_dict"], strict=model.strict_loading)
        model.on_load_checkpoint(ckpt)  # training kind and the t_max a skip-aware checkpoint was trained for
        model.checkpoint_path = args.ckpt_path
        model.check_t_max()
    num_layers = model.model.config.num_hidden_layers
    if args.decoders:
        decoders = paper_decoders(num_layers, json.loads(args.decoders), args.always_run, paper_depth=None)
    else:
        decoders = paper_decoders(num_layers, PAPER_ROWS, args.always_run, paper_depth=args.paper_depth)
        print(f"sweep: the paper's rows, exit budgets scaled from {args.paper_depth} to {num_layers} layers: "
              + ", ".join(d.describe() for d in decoders))
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..evaluation.writer import PredictionScorer

    scorers = [cb for cb in trainer.callbacks if isinstance(cb, PredictionScorer)]
    if not scorers:
        raise ValueError("the config has no PredictionScorer callback; add presets/base.yaml")
    out = Path(args.out)
    scorers[0].print_table = not args.quiet
    for extra_scorer in scorers[1:]:
        trainer.callbacks.remove(extra_scorer)
    for dec in decoders:
        model.decoder = dec
        # one folder per decoder: predictions, metrics and TensorBoard events together, under a plain name
        scorers[0].output_dir = str(out / dec.slug())
        trainer.loggers = [TensorBoardLogger(save_dir=str(out), name="", version=dec.slug(), default_hp_metric=False)]
        trainer.predict(model, datamodule=dm)
    if not args.no_agreement:
        add_agreement(model, dm, out, decoders, model.t_max)
    summary_figure(out, decoders)
    if not args.quiet:
        print(f"sweep done: {len(decoders)} decoders under {out}; report: python -m hsd_lightning report {out}")


if __name__ == "__main__":
    main()
