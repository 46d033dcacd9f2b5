"""Export a LoRA fine-tune's adapter from a Lightning checkpoint as a small shippable folder (``models/adapters.py``).

    python -m hsd_lightning export-adapter --config configs/smollm2_e2e_skipaware.yaml \
        --ckpt_path runs/smollm2_e2e_skipaware/version_0/checkpoints/last.ckpt \
        --out runs/adapters/smollm2-e2e-skipaware [--record runs/logs/fit_skipaware.json]
    python -m hsd_lightning export-adapter --card_only <adapter folder>   # rewrite its README.md only
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..cli import cli_main
from ..models.adapters import export, model_card, read_record, resolve_adapter
from ..training.checkpoint import read_checkpoint


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", help="the fit config(s) of the run")
    p.add_argument("--ckpt_path")
    p.add_argument("--out")
    p.add_argument("--record", default=None, help="JSON with run facts to keep (steps, wall time, ...)")
    p.add_argument("--fit_command", default=None, help="the fit command that trained it, quoted in the model card")
    p.add_argument("--training_data", default=None, help='its data and licence for the card, e.g. "E2E NLG: CC BY-SA 4.0"')
    p.add_argument("--card_only", default=None, metavar="FOLDER",
                   help="only rewrite FOLDER/README.md from its hsd_training.json")
    # every other argument goes to LightningCLI as it is, e.g. --model.adapter <the adapter a continued run started from>
    args, extra = p.parse_known_args(argv)
    if args.card_only:
        folder = resolve_adapter(args.card_only)
        record = read_record(folder)
        (folder / "README.md").write_text(model_card(folder, record))
        print(f"wrote {folder / 'README.md'}")
        return
    if not (args.config and args.ckpt_path and args.out):
        p.error("--config, --ckpt_path and --out are required (or --card_only FOLDER)")
    cli = cli_main([x for c in args.config for x in ("--config", c)] + extra, run=False)
    ckpt = read_checkpoint(args.ckpt_path)  # weights only: a crafted file cannot run code
    cli.model.load_state_dict(ckpt["state_dict"])
    record = json.loads(Path(args.record).read_text()) if args.record else {}
    if args.fit_command:
        record["command"] = args.fit_command
    if args.training_data:
        record["training_data"] = args.training_data
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--fit_command" in argv:  # quoted in the card as the fit command already
        del argv[argv.index("--fit_command"):argv.index("--fit_command") + 2]
    record["export_command"] = "python -m hsd_lightning export-adapter " + shlex.join(argv)
    hp = dict(ckpt.get("hyper_parameters", {}))
    record.update({"checkpoint": str(args.ckpt_path), "global_step": ckpt.get("global_step"),
                   "skip_aware": ckpt.get("skip_aware"), "t_max": (ckpt.get("skip_aware") or {}).get("t_max"),
                   "hyper_parameters": {k: hp.get(k) for k in ("model_name_or_path", "lora_r", "lora_alpha",
                                                               "lora_target_modules", "learning_rate",
                                                               "max_new_tokens", "t_max", "train_plans",
                                                               "distill_weight", "lr_decay_steps", "all_plans_per_row",
                                                               "adapter")}})
    # optimizer steps from the base model: a run continued from an adapter adds its steps to that adapter's
    start = read_record(resolve_adapter(hp["adapter"])).get("steps_total") if hp.get("adapter") else 0
    if start is not None and ckpt.get("global_step") is not None:
        record["steps_total"] = start + ckpt["global_step"]
    out = export(cli.model, Path(args.out), record)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
