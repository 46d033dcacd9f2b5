"""How many decode steps a batch runs, against the longest output it keeps (the main job's inputs and decoders).

Beam search runs a batch until every row's beams are finished, so the steps a batch pays for are set by hypotheses
that are never kept; tokens/s counts the kept tokens only. This prints, per adapter and decoder, the forward passes
of the layer stack (the prompt pass gives the first token, then one per token) next to the longest and mean kept
output (a batch whose every beam ends with its longest kept output runs exactly that many passes), so that a
speed-up that differs from the FLOP-ideal can be split into "each step costs what its layers cost" and "the batch
ran more or fewer steps". Usage (HSD_DATA_DIR names the data root):
    python scripts/experiments/decode_steps.py smollm2-e2e-skipaware-4108-onpolicy runs/adapters/<other>
"""
import argparse
import time

import torch

from hsd_lightning.data import E2EDataModule
from hsd_lightning.decoding import build_decoder
from hsd_lightning.decoding.families import counted_forward_passes
from hsd_lightning.models.module import CausalLMModule

DECODERS = [{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_min": 0, "e_max": 10},
            {"name": "hsd", "s": 2, "e_min": 0, "e_max": 10}]  # the main job's rows (configs/default.yaml)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapters", nargs="+", help="adapter names or folders (LoRA on smollm2-135m)")
    ap.add_argument("--inputs", type=int, default=16, help="test MRs, one batch (the main job: 16)")
    ap.add_argument("--t_max", type=int, default=40)
    args = ap.parse_args()
    dm = E2EDataModule(tokenizer="smollm2-135m", max_source_tokens=128, max_eval_samples=args.inputs,
                       eval_batch_size=args.inputs)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    print("| adapter | decoder | forward passes | longest kept | mean kept | seconds | s per pass |")
    print("|---|---|---|---|---|---|---|")
    for adapter in args.adapters:
        mod = CausalLMModule(model_name_or_path="smollm2-135m", finetune="lora", adapter=adapter,
                             t_max=args.t_max).eval()
        mod.set_lora_merged(True)  # as predict decodes
        with torch.no_grad():  # one untimed decode first: a process's first one pays one-time costs
            build_decoder("vanilla").generate(mod.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                                              max_new_tokens=2, num_beams=4, pad_token_id=mod.tokenizer.pad_token_id)
        for settings in DECODERS:
            dec = build_decoder(**settings)
            with torch.no_grad(), counted_forward_passes(mod.model) as passes:
                start = time.perf_counter()
                out = dec.generate(mod.model, batch["input_ids"], attention_mask=batch["attention_mask"],
                                   max_new_tokens=64, num_beams=4, t_max=args.t_max,
                                   pad_token_id=mod.tokenizer.pad_token_id, eos_token_id=mod.tokenizer.eos_token_id)
                seconds = time.perf_counter() - start
            kept = (out.layers_per_token > 0).sum(1)
            print(f"| {adapter.rstrip('/').split('/')[-1]} | {dec.describe()} | {len(passes)} | {int(kept.max())} | "
                  f"{kept.float().mean():.1f} | {seconds:.2f} | {seconds / len(passes):.3f} |", flush=True)

if __name__ == "__main__":
    main()
