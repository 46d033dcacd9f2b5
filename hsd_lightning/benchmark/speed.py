"""Wall-clock benchmark of the decoders, interleaved in one run, medians over repetitions.

    python -m hsd_lightning.benchmark.speed --model smollm2-135m --out runs/bench_smollm2
    python -m hsd_lightning.benchmark.speed --model gpt2-large-arch --batch 1 --beams 1 --prompts short

Cells = model x batch x beams x prompt. In each repetition every decoder runs once, in turn (interleaved, so
machine noise hits all alike); one warm-up pass per decoder precedes. Every run generates exactly ``--new_tokens``
tokens (EOS disabled), so all decoders do the same number of steps. Decode-only time = full run - prompt pass
(median of runs with max_new_tokens=1). Ideal speed-up comes from the FLOP model in ``flops.py``; efficiency =
measured / ideal decode-only speed-up over our vanilla.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ..decoding import build_decoder
from ..decoding.schedules import scale_exit
from ..models.loading import load_model
from .flops import ideal_speedup

DECODERS = [("vanilla", {}), ("skipdecode", {"e_min": 10, "e_max": 20}), ("hsd", {"s": 1, "e_min": 0, "e_max": 12}),
            ("hsd", {"s": 2, "e_min": 0, "e_max": 8}), ("calm", {"d": 0.005})]
SHORT = ("name[The Eagle], eatType[coffee shop], food[Japanese], priceRange[less than £20], customer rating[low], "
         "area[riverside], familyFriendly[yes], near[Burger King]")


def bench_model(name: str):
    if name == "gpt2-large-arch":  # the paper's GPT-2 shape with random weights: speed does not depend on weights
        return load_model("tiny-gpt2", tiny_overrides=dict(n_layer=36, n_embd=1280, n_head=20))
    return load_model(name)


def prompt_ids(kind: str, batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    length = 48 if kind == "short" else 900  # E2E-like vs CNN/DM-like prompt lengths in tokens
    return torch.randint(100, min(vocab, 30000), (batch, length), generator=g)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_once(model, decoder, ids, beams, new_tokens):
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, do_sample=False,
              eos_token_id=None, pad_token_id=0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t = time.perf_counter()
    if decoder is None:  # transformers' generate as users run it today
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        avg, kv = float(model.config.num_hidden_layers), None
    else:
        out = decoder.generate(model, ids, attention_mask=torch.ones_like(ids), **kw)
        avg, kv = out.avg_layers, out.kv_cache_bytes
    _sync()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return time.perf_counter() - t, avg, kv, peak


def bench_cell(model, batch, beams, prompt, new_tokens, reps, decoders):
    L = model.config.num_hidden_layers
    ids = prompt_ids(prompt, batch, model.config.vocab_size).to(model.device)
    names = ["hf_generate"] + [d.describe() for d in decoders]
    decs = [None] + decoders
    full = {n: [] for n in names}
    pre = {n: [] for n in names}
    info = {}
    for d in decs:  # warm-up
        run_once(model, d, ids, beams, 2)
    for _ in range(reps):
        for n, d in zip(names, decs):
            secs, avg, kv, peak = run_once(model, d, ids, beams, new_tokens)
            full[n].append(secs)
            info[n] = (avg, kv, peak)
            pre[n].append(run_once(model, d, ids, beams, 1)[0])
    rows = []
    toks = batch * new_tokens
    dec_toks = batch * (new_tokens - 1)
    base = None
    for n in names:
        f, p = statistics.median(full[n]), statistics.median(pre[n])
        avg, kv, peak = info[n]
        row = dict(decoder=n, batch=batch, beams=beams, prompt=prompt, avg_layers=avg,
                   tokens_per_s=toks / f, decode_tokens_per_s=dec_toks / max(f - p, 1e-9),
                   kv_cache_mb=None if kv is None else kv / 2**20, peak_mem_mb=None if peak is None else peak / 2**20)
        rows.append(row)
        if n == "vanilla":
            base = row
    hf = rows[0]
    for row in rows:
        row["vs_hf_generate"] = row["tokens_per_s"] / hf["tokens_per_s"]
        row["speedup"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["ideal_speedup"] = ideal_speedup(model.config, L, row["avg_layers"], ids.shape[1], new_tokens)
        row["efficiency"] = row["speedup"] / row["ideal_speedup"] if row["decoder"] not in ("hf_generate", "vanilla") else None
    return rows


def to_markdown(model_name, rows) -> str:
    head = ("| model | batch | beams | prompt | decoder | avg layers | tok/s | decode tok/s | vs HF generate | "
            "speed-up | ideal | efficiency | KV MiB |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        f = lambda v, fmt="{:.2f}": "" if v is None else fmt.format(v)
        lines.append(f"| {model_name} | {r['batch']} | {r['beams']} | {r['prompt']} | {r['decoder']} | "
                     f"{f(r['avg_layers'])} | {f(r['tokens_per_s'], '{:.1f}')} | {f(r['decode_tokens_per_s'], '{:.1f}')} | "
                     f"{f(r['vs_hf_generate'])} | {f(r['speedup'])} | {f(r['ideal_speedup'])} | {f(r['efficiency'])} | "
                     f"{f(r['kv_cache_mb'], '{:.1f}')} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m | gpt2-large-arch | any model name/path")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    p.add_argument("--prompts", nargs="+", default=["short", "long"], choices=["short", "long"])
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    model = bench_model(args.model).to(args.device, getattr(torch, args.dtype))
    L = model.config.num_hidden_layers
    decoders = [build_decoder(n, **{k: scale_exit(v, L) if k.startswith("e_") else v for k, v in kw.items()})
                for n, kw in DECODERS]
    rows = []
    for prompt in args.prompts:
        for batch in args.batch:
            for beams in args.beams:
                cell = bench_cell(model, batch, beams, prompt, args.new_tokens, args.reps, decoders)
                rows.extend(cell)
                print(to_markdown(args.model, cell), flush=True)
    md = to_markdown(args.model, rows)
    meta = dict(model=args.model, device=args.device, dtype=args.dtype, threads=torch.get_num_threads(),
                new_tokens=args.new_tokens, reps=args.reps, num_layers=L)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
