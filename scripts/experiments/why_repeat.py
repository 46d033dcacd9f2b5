"""Why do the skipping plans repeat and drop slots? A teacher-forced probe (issue 34), no decoding.

On vanilla's own outputs (a sweep folder's ``vanilla/predictions.jsonl``, token ids included), one forward runs every
layer and one runs each plan (``evaluation/agreement.plan_argmax``); at every scheduled step we compare the plan's
greedy token with the full depth's and ask what a wrong one is:

* ``copy``: a token the output already holds (the plan steers back to something said: the repeats),
* ``eos``: full depth would end the text here and the plan does not (outputs run on),
* the rest: some other token,

by generation step (the HSD schedules drop layers as t grows), and for the same plan with one more layer always run
(``always_run``): which layer's absence costs most. Prints a Markdown report.

    python scripts/experiments/why_repeat.py runs/results/e2e_dev/skipaware-3200_beam4 [--config configs/default.yaml]
        [--model.adapter <the sweep's adapter>] [--data.init_args.predict_split validation ...]   (the sweep's settings)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hsd_lightning.cli import cli_main
from hsd_lightning.decoding import build_decoder
from hsd_lightning.evaluation.agreement import plan_argmax

BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 30), (31, 99))


def probe(model, decoders, prompts, conts, pad_id, t_max, eos_ids, batch=8):
    """Per decoder: totals (steps, wrong, copy, eos, copy_base, layers) and per step bucket [steps, wrong, copy]."""
    L = model.config.num_hidden_layers
    stats = {d.describe(): {"steps": 0, "wrong": 0, "copy": 0, "eos": 0, "copy_base": 0, "layers": 0} for d in decoders}
    by_t = {d.describe(): {b: [0, 0, 0] for b in BUCKETS} for d in decoders}
    for s in range(0, len(prompts), batch):
        ps, cs = prompts[s:s + batch], conts[s:s + batch]
        full = plan_argmax(model, build_decoder("vanilla"), ps, cs, pad_id, t_max)  # once per batch
        for dec in decoders:
            st, bt = stats[dec.describe()], by_t[dec.describe()]
            plan = plan_argmax(model, dec, ps, cs, pad_id, t_max)
            for c, f, p in zip(cs, full, plan):
                for k, (ft, pt) in enumerate(zip(f, p), start=1):  # token k of the continuation, step k
                    said = set(c[:k])
                    st["steps"] += 1
                    st["layers"] += len(dec.layers_for_step(k, L, t_max))
                    st["copy_base"] += int(ft in said)
                    b = next(b for b in BUCKETS if b[0] <= k <= b[1])
                    bt[b][0] += 1
                    if pt != ft:
                        st["wrong"] += 1
                        bt[b][1] += 1
                        if ft in eos_ids:
                            st["eos"] += 1
                        elif pt in said:
                            st["copy"] += 1
                            bt[b][2] += 1
    return stats, by_t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="sweep folder with vanilla/predictions.jsonl (token_ids)")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--rows", default='[["hsd",{"s":1,"e_max":10}],["hsd",{"s":1,"e_max":10,"always_run":[1]}],'
                   '["hsd",{"s":1,"e_max":10,"always_run":[3]}],["hsd",{"s":1,"e_max":10,"always_run":[11]}],'
                   '["hsd",{"s":1,"e_max":10,"always_run":[19]}],["hsd",{"s":1,"e_max":10,"always_run":[29]}],'
                   '["hsd",{"s":2,"e_max":10}],["hsd",{"s":2,"e_max":10,"always_run":[1]}],'
                   '["skipdecode",{"e_min":8,"e_max":20}]]')
    args, extra = p.parse_known_args()
    cli = cli_main(["--config", args.config, "--trainer.enable_progress_bar", "false", *extra], run=False)
    model, dm = cli.model, cli.datamodule
    dm.setup("predict")
    ds = dm.dataset_for(dm.hparams.predict_split, "generate")
    prompt_of = dict(zip(ds["id"], ds["prompt_ids"]))
    preds = [json.loads(x) for x in (Path(args.sweep) / "vanilla" / "predictions.jsonl").read_text().splitlines()]
    prompts = [prompt_of[r["id"]] for r in preds]
    conts = [r["token_ids"] for r in preds]
    eos = model.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    model.eval()
    t_max = model.t_max
    L = model.model.config.num_hidden_layers
    print(f"# Why the plans repeat: teacher-forced on vanilla's outputs ({len(preds)} inputs, "
          f"{sum(len(c) - 1 for c in conts)} scheduled steps; {args.sweep}; t_max {t_max})\n")
    print("| plan | layers / step | wrong token % | of the wrong: copy of a token said % | of the wrong: EOS missed % "
          "| wrong % by step 1-5 / 6-10 / 11-20 / 21-30 / 31+ | copy % of steps by step |")
    print("|---|---|---|---|---|---|---|")
    decoders = [build_decoder(name, **kw) for name, kw in json.loads(args.rows)]
    with torch.no_grad():
        stats, by_t = probe(model.model, decoders, prompts, conts, dm.tokenizer.pad_token_id, t_max, eos_ids)
    for dec in decoders:
        st, bt = stats[dec.describe()], by_t[dec.describe()]
        wrong = max(st["wrong"], 1)
        print(f"| {dec.describe()} | {st['layers'] / st['steps']:.2f} of {L} | {100 * st['wrong'] / st['steps']:.1f} | "
              f"{100 * st['copy'] / wrong:.1f} | {100 * st['eos'] / wrong:.1f} | "
              + " / ".join(f"{100 * w / max(n, 1):.0f}" for n, w, _ in bt.values()) + " | "
              + " / ".join(f"{100 * c / max(n, 1):.1f}" for n, _, c in bt.values()) + " |")
    print(f"\nBase rate: full depth itself picks a token the output already holds at "
          f"{100 * st['copy_base'] / st['steps']:.1f} % of the steps (E2E texts reuse 'is', 'the', 'a', names).")


if __name__ == "__main__":
    main()
