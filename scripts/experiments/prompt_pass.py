"""The prompt pass once per input (``share_prompt``, the decoders' default with beams) against once per beam (what
transformers' ``generate`` does), on the main job's batch: 16 E2E test MRs, SmolLM2-135M + the shipped adapter,
beam 4, t_max 40. Interleaved repetitions after one warm-up each; medians; outputs compared token for token.

    python scripts/experiments/prompt_pass.py --reps 5 --out docs/results/speed/prompt_pass.md
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from hsd_lightning.benchmark.flops import ideal_speedup
from hsd_lightning.cli import cli_main
from hsd_lightning.decoding import build_decoder, model_parts
from hsd_lightning.evaluation.metrics import format_table
from hsd_lightning.library_noise import quiet_libraries

ROWS = [("vanilla", {}), ("hsd", {"s": 1, "e_min": 0, "e_max": 10}), ("hsd", {"s": 2, "e_min": 0, "e_max": 10})]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    quiet_libraries()
    cli = cli_main(["--config", "configs/default.yaml", "--trainer.enable_progress_bar", "false"], run=False)
    module, dm = cli.model, cli.datamodule
    module.eval()  # as Lightning's predict does: no LoRA dropout
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    gen = dict(pad_token_id=module.tokenizer.pad_token_id, eos_token_id=module.tokenizer.eos_token_id,
               max_new_tokens=module.hparams.max_new_tokens, num_beams=module.hparams.num_beams, t_max=module.t_max)
    decoders = [build_decoder(n, **kw) for n, kw in ROWS]
    runs = [(d, share) for d in decoders for share in (False, True)]

    def once(dec, share):
        t = time.perf_counter()
        out = dec.generate(module.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                           share_prompt=share, **gen)
        return time.perf_counter() - t, out

    for dec, share in runs:  # warm-up
        once(dec, share)
    secs = {(d.describe(), s): [] for d, s in runs}
    outs = {}
    for _ in range(args.reps):
        for dec, share in runs:
            s, out = once(dec, share)
            secs[(dec.describe(), share)].append(s)
            outs[(dec.describe(), share)] = out
    def tokens(out):  # real generated tokens (up to EOS) of the returned rows, as the main job's tokens/s counts
        return int((out.layers_per_token > 0).sum())

    L = model_parts(module.model).num_layers
    rows = []
    rate = {s: tokens(outs[("vanilla", s)]) / statistics.median(secs[("vanilla", s)]) for s in (False, True)}
    for dec in decoders:
        name = dec.describe()
        a, b = outs[(name, False)], outs[(name, True)]
        per_beam, shared = statistics.median(secs[(name, False)]), statistics.median(secs[(name, True)])
        ideal = ideal_speedup(module.model.config, L, b.avg_layers, b.prompt_length, b.new_tokens.shape[1])
        row = {"decoder": name, "avg_layer": b.avg_layers, "per_beam_s": per_beam, "shared_s": shared,
               "faster": per_beam / shared, "speedup_per_beam": tokens(a) / per_beam / rate[False],
               "speedup_shared": tokens(b) / shared / rate[True], "ideal": ideal,
               "same": "yes" if torch.equal(a.sequences, b.sequences) else "NO"}
        row["of_ideal_per_beam"] = row["speedup_per_beam"] / ideal
        row["of_ideal_shared"] = row["speedup_shared"] / ideal
        rows.append(row)
    cols = (("decoder", "Decoder"), ("avg_layer", "Avg. Layer"), ("per_beam_s", "s, prompt per beam"),
            ("shared_s", "s, prompt per input"), ("faster", "time ratio"), ("ideal", "FLOP-ideal"),
            ("speedup_per_beam", "speed-up, per beam"), ("of_ideal_per_beam", "of ideal, per beam"),
            ("speedup_shared", "speed-up, per input"), ("of_ideal_shared", "of ideal, per input"),
            ("same", "same tokens"))
    table = format_table(rows, cols)
    shape = tuple(batch["input_ids"].shape)
    text = (f"Main job batch {shape[0]} MRs x {shape[1]} prompt tokens, beam {gen['num_beams']}, "
            f"{torch.get_num_threads()} threads, median of {args.reps} interleaved repetitions: seconds per "
            f"generate call; speed-up = real tokens/s over vanilla's with the same prompt pass (as the main job's); "
            f"FLOP-ideal from the Avg. Layer with the LM head counted.\n\n{table}\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Prompt pass once per input vs once per beam\n\n<!-- written by "
                            f"`python scripts/experiments/prompt_pass.py --reps {args.reps} --out {args.out}` -->\n\n"
                            + text)


if __name__ == "__main__":
    main()
