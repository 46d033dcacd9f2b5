"""LoRA adapters as small shippable folders: export from a Lightning checkpoint, find by name, read their record.

A folder is what peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``) with
the weights cast to float16 (half the size; they are cast back to the model's dtype on load), plus
``hsd_training.json``: how it was trained (skip-aware plans and ``t_max``, steps, examples, tokens, wall time,
final validation loss), so decoding knows the schedule horizon it was trained for.

    python -m hsd_lightning.models.adapters --config configs/smollm2_e2e_skipaware.yaml \
        --ckpt_path runs/smollm2_e2e_skipaware/version_0/checkpoints/last.ckpt \
        --out hsd_lightning/adapters/smollm2-e2e-skipaware [--record runs/logs/fit_skipaware.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

PACKAGED = Path(__file__).resolve().parents[1] / "adapters"
RECORD = "hsd_training.json"


def packaged_adapters() -> list[str]:
    return sorted(p.name for p in PACKAGED.glob("*") if (p / "adapter_config.json").exists())


def resolve_adapter(name_or_path: str) -> Path:
    """A folder path, or the name of an adapter shipped in ``hsd_lightning/adapters``."""
    for cand in (Path(name_or_path).expanduser(), PACKAGED / name_or_path):
        if (cand / "adapter_config.json").exists():
            return cand
    raise ValueError(f"adapter {name_or_path!r} not found: give a folder holding adapter_config.json or one of the "
                     f"shipped adapters {packaged_adapters()}")


def read_record(folder: Path) -> dict:
    path = Path(folder) / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def export(module, out: Path, record: dict) -> Path:
    """Write ``module``'s LoRA adapter (float16) and its training record into ``out``."""
    from safetensors.torch import load_file, save_file

    if module.hparams.finetune != "lora":
        raise ValueError("only a LoRA model has an adapter to export (finetune=lora)")
    out.mkdir(parents=True, exist_ok=True)
    module.model.save_pretrained(out)
    weights = out / "adapter_model.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(weights).items()}, weights)
    (out / RECORD).write_text(json.dumps(record, indent=2))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True, help="the fit config(s) of the run")
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--record", default=None, help="JSON with run facts to keep (steps, wall time, ...)")
    # every other argument goes to LightningCLI as it is, e.g. --model.adapter <the adapter a continued run started from>
    args, extra = p.parse_known_args(argv)
    from ..cli import cli_main

    cli = cli_main([x for c in args.config for x in ("--config", c)] + extra, run=False)
    ckpt = torch.load(args.ckpt_path, map_location="cpu", weights_only=False)
    cli.model.load_state_dict(ckpt["state_dict"])
    record = json.loads(Path(args.record).read_text()) if args.record else {}
    hp = dict(ckpt.get("hyper_parameters", {}))
    record.update({"checkpoint": str(args.ckpt_path), "global_step": ckpt.get("global_step"),
                   "skip_aware": ckpt.get("skip_aware"), "t_max": (ckpt.get("skip_aware") or {}).get("t_max"),
                   "hyper_parameters": {k: hp.get(k) for k in ("model_name_or_path", "lora_r", "lora_alpha",
                                                               "lora_target_modules", "learning_rate",
                                                               "max_new_tokens", "train_plans", "distill_weight",
                                                               "adapter")}})
    out = export(cli.model, Path(args.out), record)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
