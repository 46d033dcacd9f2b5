"""LoRA adapters as small shippable folders: export from a Lightning checkpoint, find by name, read their record.

A folder is what peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``) with
the weights cast to float16 (half the size; they are cast back to the model's dtype on load), plus
``hsd_training.json``: how it was trained (skip-aware plans and ``t_max``, steps, examples, tokens, wall time,
final validation loss), so decoding knows the schedule horizon it was trained for, and a ``README.md`` model card
written from that record (peft's own ``save_pretrained`` writes an empty template there).

The command that writes one is ``python -m hsd_lightning export-adapter`` (``tools/export_adapter.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

PACKAGED = Path(__file__).resolve().parents[1] / "adapters"
RECORD = "hsd_training.json"


def packaged_adapters() -> list[str]:
    return sorted(p.name for p in PACKAGED.glob("*") if (p / "adapter_config.json").exists())


EXPORTED = Path("runs") / "adapters"  # where the experiment scripts export the adapters they train


def resolve_adapter(name_or_path: str) -> Path:
    """A folder path, the name of an adapter shipped in ``hsd_lightning/adapters``, or the name of one exported by
    the experiment scripts into ``runs/adapters/<name>``. The package ships only the main job's adapter; the other
    stages of its training chain are reproduced by ``scripts/experiments/e2e_smollm2.sh``."""
    for cand in (Path(name_or_path).expanduser(), PACKAGED / name_or_path, EXPORTED / name_or_path):
        if (cand / "adapter_config.json").exists():
            return cand
    raise ValueError(f"adapter {name_or_path!r} not found: give a folder holding adapter_config.json, one of the "
                     f"shipped adapters {packaged_adapters()}, or train and export it first (E2E stages: "
                     f"scripts/experiments/e2e_smollm2.sh writes {EXPORTED}/<name>)")


def read_record(folder: Path) -> dict:
    path = Path(folder) / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _plan_name(plan: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in plan.items() if k not in ("name", "weight"))
    return f"{plan['name']}({args})" if args else plan["name"]


def model_card(folder: Path, record: dict) -> str:
    """A model card written from the adapter's own files: what it is, how it was trained (every figure from the
    record; a figure the record lacks is left out, never guessed), how to decode it, and the command that made it."""
    folder = Path(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    hp = record.get("hyper_parameters") or {}
    base = hp.get("model_name_or_path") or cfg.get("base_model_name_or_path")
    size = (folder / "adapter_model.safetensors").stat().st_size / 2**20
    lines = ["---", "library_name: peft", "tags: [lora, hsd-lightning" + (", skip-aware" if record.get("skip_aware")
                                                                        else "") + "]", "---", "",
             f"# {folder.name}", "",
             f"LoRA adapter for `{base}` (r={cfg.get('r')}, alpha={cfg.get('lora_alpha')}, modules "
             f"{', '.join(sorted(cfg.get('target_modules') or []))}; float16, {size:.1f} MiB), written by "
             "hsd-lightning (`python -m hsd_lightning export-adapter`).", ""]
    plans, t_max = (record.get("skip_aware") or {}).get("plans"), record.get("t_max")
    if plans:
        total = sum(p.get("weight", 1) for p in plans)
        how = ("every training row ran under every one of these layer plans, their losses weighted as shown"
               if hp.get("all_plans_per_row") else
               "each training row ran under one of these layer plans, drawn with the weights shown")
        lines += [f"**Skip-aware**: {how}, built for t_max = {t_max}; decode with `--model.t_max {t_max}` (predict "
                  "warns otherwise).",
                  "", "| plan | weight |", "|---|---|"]
        lines += [f"| {_plan_name(p)} | {p.get('weight', 1)}/{total} |" for p in plans]
        lines.append("")
    else:
        lines += ["Standard fine-tune (every layer for every token).", ""]
    labels = {"steps_total": "optimizer steps from the base model", "steps": "global step of the run",
              "steps_this_run": "steps this run", "examples_this_run": "examples this run",
              "tokens_this_run": "tokens this run", "wall_seconds_this_run": "wall seconds this run"}
    facts = [(label, record.get(k)) for k, label in labels.items()]
    facts += [("learning rate", hp.get("learning_rate")),
              ("learning rate decaying to 0 over the last steps", hp.get("lr_decay_steps") or None),
              ("every plan on every row", hp.get("all_plans_per_row") or None),
              ("continued from adapter", hp.get("adapter"))]
    lines += ["| training | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts if v is not None] + [""]
    for key in ("continued_from", "record_source", "val_note"):
        if record.get(key):
            lines += [f"*{key.replace('_', ' ')}*: {record[key]}", ""]
    if record.get("val"):
        lines += ["| validation loss (at the end) | |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(record["val"].items())] + [""]
    lines += ["Decode:", "", "```bash",
              f"python main.py predict --model.finetune lora --model.adapter {folder.name}"
              + (f" --model.t_max {t_max}" if t_max else "") + " --decoder hsd --decoder.s 1 --decoder.e_max 10",
              "```", ""]
    made = [c for c in (record.get("command"), record.get("export_command")) if c]
    if made:
        lines += ["Made by:", "", "```bash", *made, "```", ""]
    known = ["SmolLM2-135M-Instruct: Apache-2.0"] if "smollm2" in str(base).lower() else []
    known += [record["training_data"]] if record.get("training_data") else []  # e.g. "E2E NLG: CC BY-SA 4.0"
    known = f" ({'; '.join(known)})" if known else ""
    lines += ["`hsd_training.json` holds the full record. The adapter derives from the base model and its training "
              f"data: their licences apply{known}."]
    return "\n".join(lines) + "\n"


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
    (out / "README.md").write_text(model_card(out, record))  # over peft's empty template
    return out
