"""What skip-aware training costs per step against plain fine-tuning, interleaved in one run, medians.

    python -m hsd_lightning bench-train-step --model smollm2-135m --device cuda --autocast bf16
    python -m hsd_lightning bench-train-step --model tiny-llama --seq 64 --prompt 48 --reps 3

One random batch shaped like a training batch (``--batch`` rows of ``--seq`` tokens, the first ``--prompt`` of them
prompt, label -100) and, per repetition, in turn:

* *plain*: forward + backward of the model, as ``fit`` runs a standard fine-tune;
* *mask*: building the ``[B, S, L]`` run mask for rows drawn from the skip-aware recipe's plans (vanilla, HSD s=1 and
  s=2 E_max 10, SkipDecode (8,20), with E scaled to the model's depth as the sweep does);
* *planned*: the mask plus forward + backward under it, as ``fit`` runs a skip-aware fine-tune;
* *all_plans*: every row under every plan of the recipe, the prompt run once (``model.all_plans_per_row``,
  ``training/shared_prompt.py``): forward + backward of the plans' mean loss, 4 plans' worth of rows per step.

Each timing ends with a device synchronisation; the first repetition is a warm-up and is dropped. Printed: the
medians, *planned / plain* and *all_plans / plain*. Before timing, the masked forward with every row at full depth
is checked to give the plain loss (the mask machinery itself changes nothing).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from contextlib import nullcontext

import torch

from ..decoding import build_paper_decoder
from ..decoding.plans import PlanMixture, planned
from ..models.loading import load_model
from ..training.shared_prompt import shared_prompt_losses

RECIPE = [("vanilla", {}), ("hsd", {"s": 1, "e_min": 0, "e_max": 12}), ("hsd", {"s": 2, "e_min": 0, "e_max": 12}),
          ("skipdecode", {"e_min": 10, "e_max": 24})]  # paper E (36 layers) -> 10 / (8, 20) on 30 layers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", choices=["none", "bf16"], default="none", help="bf16: as --trainer.precision bf16-mixed")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=450, help="tokens per row (XSum at 384 source tokens: ~450)")
    p.add_argument("--prompt", type=int, default=410, help="prompt tokens per row (label -100)")
    p.add_argument("--t_max", type=int, default=40)
    p.add_argument("--reps", type=int, default=6, help="repetitions (the first is a warm-up)")
    args = p.parse_args(argv)
    if not 0 < args.prompt < args.seq:
        p.error(f"--prompt {args.prompt} must be between 1 and --seq - 1 ({args.seq - 1}): rows need a target")
    device = torch.device(args.device)
    model = load_model(args.model).to(device).train()
    L = model.config.num_hidden_layers
    mixture = PlanMixture([build_paper_decoder(n, kw, L) for n, kw in RECIPE], [1.0] * len(RECIPE), args.t_max)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen).to(device)
    labels = ids.clone()
    labels[:, :args.prompt] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.autocast == "bf16" else nullcontext()
    rng = random.Random(0)

    def plain() -> None:
        with amp:
            loss = model(**batch).loss
        loss.backward()

    def mask():
        return mixture.run_mask(mixture.draw(args.batch, rng), labels, L)

    def run_planned() -> None:
        with amp, planned(model, mask()):
            loss = model(**batch).loss
        loss.backward()

    def all_plans() -> None:
        with amp:
            losses = shared_prompt_losses(model, batch, mixture.decoders, args.t_max)
        (sum(losses) / len(losses)).backward()

    with torch.no_grad(), amp:  # the machinery alone changes nothing: full-depth plans give the plain loss
        full = mixture.run_mask([mixture.decoders[0]] * args.batch, labels, L)
        with planned(model, full):
            masked = model(**batch).loss
        ref = model(**batch).loss
    if not torch.allclose(masked.float(), ref.float(), rtol=1e-5, atol=1e-5):
        raise RuntimeError(f"masked full-depth loss {masked.item()} != plain loss {ref.item()}")

    times: dict[str, list[float]] = {"plain": [], "mask": [], "planned": [], "all_plans": []}
    for rep in range(args.reps):
        for name, fn in (("plain", plain), ("mask", mask), ("planned", run_planned), ("all_plans", all_plans)):
            model.zero_grad(set_to_none=True)
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if rep:  # the first repetition warms up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": args.model, "device": str(device), "autocast": args.autocast, "batch": args.batch, "seq": args.seq,
           "prompt": args.prompt, "t_max": args.t_max, "reps": args.reps - 1,
           **{f"{k}_ms": 1e3 * v for k, v in med.items()}, "planned_over_plain": med["planned"] / med["plain"],
           "all_plans_over_plain": med["all_plans"] / med["plain"], "plans": len(mixture.decoders)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
