"""Wall-clock benchmark of the decoders, interleaved in one run, medians over repetitions.

    python -m hsd_lightning bench --model smollm2-135m --out docs/results/speed/smollm2
    python -m hsd_lightning bench --model gpt2-large-arch --max_cell_tokens 8000 --out docs/results/speed/gpt2_large

Cells = model x prompt (short ~48 tokens, E2E-like; long 900 tokens, CNN/DM-like) x batch x beams. Per cell:

* The prompt minus its last token is run once through all layers (every decoder runs all layers on the prompt, so
  this pass is identical for all of them) and timed ``--prefill_reps`` times; its K/V are copied into a fresh
  cache before each run. Each run then calls ``generate`` on the full prompt with that cache: the first forward
  pass is the last prompt token (all layers), then ``--new_tokens - 1`` scheduled steps. Re-running a 900-token
  prefill of 32 rows for every decoder and repetition would cost hours on a CPU and measure nothing new.
* One warm-up run per decoder, then ``--reps`` repetitions in which every decoder runs once, in turn (interleaved,
  so machine noise hits all alike). Reported numbers are medians.
* *decode tok/s* = tokens of the scheduled steps / time from the start of step 1 to the end of generate (a forward
  pre-hook on the backbone stamps step 1; prefill excluded). *tok/s* (end to end) = all generated tokens / (prefill
  median + whole generate call). *vs HF* compares decode tok/s with transformers' ``generate`` on the same cache.
* *ideal* = (L*c_layer + c_head) / (avg_layers*c_layer + c_head) from ``flops.py`` at the mean decode context;
  *efficiency* = measured decode-only speed-up over our vanilla / ideal.
* Memory: *KV MiB* = bytes held by the cache after the run (prompt + generated tokens); *peak MiB* = median run peak
  memory above what the process held before it (CUDA: allocator peak; CPU: the resident-set high-water mark, reset
  before each run through /proc/self/clear_refs), prompt-cache copy included.

Every run generates exactly ``--new_tokens`` tokens (EOS disabled), so all decoders do the same number of steps.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from ..decoding import build_paper_decoder
from ..decoding.families import model_parts
from ..decoding.runtime import kv_bytes
from ..models.loading import load_model
from .flops import calm_ideal_speedup, ideal_speedup

# The decoder set, exits tuned for 36 layers and scaled to the model's depth (schedules.scale_exit).
DECODERS = [("vanilla", {}), ("skipdecode", {"e_min": 10, "e_max": 20}), ("hsd", {"s": 1, "e_min": 0, "e_max": 12}),
            ("hsd", {"s": 2, "e_min": 0, "e_max": 8}), ("calm", {"d": 0.005})]
PROMPT_TOKENS = {"short": 48, "long": 900}  # E2E-like vs CNN/DM-like prompt lengths
HF = "hf_generate"


def bench_model(name: str):
    if name == "gpt2-large-arch":  # the paper's GPT-2 shape with random weights: speed does not depend on weights
        return load_model("tiny-gpt2", tiny_overrides=dict(n_layer=36, n_embd=1280, n_head=20))
    return load_model(name)


def prompt_ids(kind: str, batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, min(vocab, 30000), (batch, PROMPT_TOKENS[kind]), generator=g)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def prefill(model, rows: torch.Tensor) -> tuple[DynamicCache, float]:
    """K/V of ``rows[:, :-1]`` through all layers, and the seconds it took."""
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    _sync()
    t = time.perf_counter()
    with torch.no_grad():
        model(input_ids=rows[:, :-1], attention_mask=torch.ones_like(rows[:, :-1]), cache=cache, use_cache=True)
    _sync()
    return cache, time.perf_counter() - t


def copy_cache(template: DynamicCache, config) -> DynamicCache:
    cache = DynamicCache(config=config.get_text_config(decoder=True))
    for i, layer in enumerate(template.layers):
        cache.update(layer.keys.clone(), layer.values.clone(), i)
    return cache


class MemoryProbe:
    """Peak memory of a block above the level before it (bytes), or None where it cannot be measured."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak = None

    @staticmethod
    def _status(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    def __enter__(self):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:  # return freed heap pages to the OS, then reset the resident-set high-water mark (Linux >= 4.0)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = self._status("VmRSS")
        except (OSError, AttributeError):
            self.base = None
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self.base is not None:
            self.peak = self._status("VmHWM") - self.base


class StepClock:
    """Forward pre-hook on the backbone stamping the start of step 1 (the first scheduled step)."""

    def __init__(self):
        self.calls, self.step1 = 0, None

    def __call__(self, module, args, kwargs):
        if self.calls == 1:
            _sync()
            self.step1 = time.perf_counter()
        self.calls += 1


def run_once(model, decoder, ids, template, beams, new_tokens) -> dict:
    """One generate call on a copy of the prompt cache; times, layers and memory."""
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams, do_sample=False,
              eos_token_id=None, pad_token_id=0)
    parts, clock = model_parts(model), StepClock()
    handle = parts.backbone.register_forward_pre_hook(clock, with_kwargs=True)
    try:
        with MemoryProbe(ids.device) as mem:
            cache = copy_cache(template, model.config)
            _sync()
            t = time.perf_counter()
            if decoder is None:  # transformers' generate as users run it today
                with torch.no_grad():
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache, **kw)
                avg = executed = float(parts.num_layers)
            else:
                out = decoder.generate(model, ids, attention_mask=torch.ones_like(ids), cache=cache, **kw)
                avg, executed = out.avg_layers, out.executed_layers
            _sync()
            end = time.perf_counter()
    finally:
        handle.remove()
    return dict(total=end - t, decode=None if clock.step1 is None else end - clock.step1, avg_layers=avg,
                executed=executed, kv=kv_bytes(cache), peak=mem.peak)


def bench_cell(model, batch, beams, prompt, new_tokens, reps, decoders, prefill_reps=2) -> list[dict]:
    L = model_parts(model).num_layers
    ids = prompt_ids(prompt, batch, model.config.vocab_size).to(model.device)
    rows_ids = ids.repeat_interleave(beams, dim=0)  # generate orders the beams of a prompt next to each other
    prefill(model, rows_ids[:, :8])  # warm-up
    template, pre = None, []
    for _ in range(prefill_reps):
        del template  # free the previous prompt cache (gigabytes for long prompts) before computing the next
        template, secs = prefill(model, rows_ids)
        pre.append(secs)
    pre_s = statistics.median(pre)
    names = [HF] + [d.describe() for d in decoders]
    decs = [None] + list(decoders)
    for d in decs:  # warm-up
        run_once(model, d, ids, template, beams, 2)
    runs = {n: [] for n in names}
    for _ in range(reps):
        for n, d in zip(names, decs):
            runs[n].append(run_once(model, d, ids, template, beams, new_tokens))
    rows = []
    for n in names:
        r = runs[n]
        total = statistics.median(x["total"] for x in r)
        decode = statistics.median(x["decode"] for x in r)
        peaks = [x["peak"] for x in r if x["peak"] is not None]
        rows.append(dict(decoder=n, batch=batch, beams=beams, prompt=prompt, prompt_tokens=ids.shape[1],
                         new_tokens=new_tokens, reps=reps, avg_layers=r[-1]["avg_layers"],
                         executed_layers=r[-1]["executed"], prefill_s=pre_s,
                         total_s=total, decode_s=decode, tokens_per_s=batch * new_tokens / (pre_s + total),
                         decode_tokens_per_s=batch * (new_tokens - 1) / decode,
                         decode_s_reps=[x["decode"] for x in r], total_s_reps=[x["total"] for x in r],
                         kv_cache_mb=r[-1]["kv"] / 2**20,
                         peak_mem_mb=statistics.median(peaks) / 2**20 if peaks else None))
    by = {r["decoder"]: r for r in rows}
    base, hf = by[decoders[0].describe()], by[HF]
    ctx = ids.shape[1] + new_tokens // 2
    for row in rows:
        row["vs_hf_generate"] = row["decode_tokens_per_s"] / hf["decode_tokens_per_s"]
        row["speedup"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["ideal_speedup"] = ideal_speedup(model.config, L, row["avg_layers"], ids.shape[1], new_tokens)
        skip = row["decoder"] not in (HF, base["decoder"])
        row["efficiency"] = row["speedup"] / row["ideal_speedup"] if skip else None
        row["mean_context"] = ctx
        if row["decoder"].startswith("calm"):  # what CALM's own compute allows: the batch's deepest row, + checks
            row["ideal_with_checks"] = calm_ideal_speedup(model.config, L, row["executed_layers"], ctx)
            row["efficiency_with_checks"] = row["speedup"] / row["ideal_with_checks"]
    return rows


def _fmt(v, fmt="{:.2f}"):
    return "" if v is None else fmt.format(v)


def to_markdown(model_name, rows) -> str:
    head = ("| model | prompt | batch | beams | decoder | avg layers | tok/s | decode tok/s | vs HF | speed-up | "
            "ideal | efficiency | KV MiB | peak MiB |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {model_name} | {r['prompt']} | {r['batch']} | {r['beams']} | {r['decoder']} | "
                     f"{_fmt(r['avg_layers'])} | {_fmt(r['tokens_per_s'], '{:.1f}')} | "
                     f"{_fmt(r['decode_tokens_per_s'], '{:.1f}')} | {_fmt(r['vs_hf_generate'])} | {_fmt(r['speedup'])} | "
                     f"{_fmt(r['ideal_speedup'])} | {_fmt(r['efficiency'])} | {_fmt(r['kv_cache_mb'], '{:.1f}')} | "
                     f"{_fmt(r['peak_mem_mb'], '{:.0f}')} |")
    return "\n".join(lines)


def summarize(rows, skipped=()) -> str:
    """The issue's targets, checked on the measured rows."""
    out = []
    van = [r for r in rows if r["decoder"] == "vanilla"]
    if van:
        worst = min(van, key=lambda r: r["vs_hf_generate"])
        out.append(f"- vanilla vs HF generate (decode tok/s): min {worst['vs_hf_generate']:.2f} "
                   f"({worst['prompt']}, batch {worst['batch']}, beams {worst['beams']}); target >= 0.97: "
                   f"{'holds' if worst['vs_hf_generate'] >= 0.97 else 'MISSED'}")
    skip = [r for r in rows if r["decoder"].startswith(("skipdecode", "hsd"))]
    if skip:
        effs = sorted(r["efficiency"] for r in skip)
        low = [r for r in skip if r["efficiency"] < 0.90]
        out.append(f"- SkipDecode/HSD efficiency: min {effs[0]:.2f}, median {statistics.median(effs):.2f}, "
                   f"max {effs[-1]:.2f} over {len(effs)} rows; target >= 0.90: "
                   + ("holds" if not low else "MISSED in " + "; ".join(
                       f"{r['decoder']} {r['prompt']} b{r['batch']}x{r['beams']} ({r['efficiency']:.2f})" for r in low)))
    calm = [r for r in rows if r["decoder"].startswith("calm")]
    if calm:
        rng = lambda key, fmt="{:.2f}": (fmt.format(min(r[key] for r in calm)) + "-" +
                                        fmt.format(max(r[key] for r in calm)))
        out.append(f"- CALM efficiency: {rng('efficiency')} (speed-up {rng('speedup')} at {rng('avg_layers', '{:.1f}')} "
                   f"layers per token, but {rng('executed_layers', '{:.1f}')} layers run per step by the batch's "
                   f"deepest row, each followed by an LM-head confidence check); counting those, the FLOP model "
                   f"allows {rng('ideal_with_checks')} and CALM reaches {rng('efficiency_with_checks')} of it")
    kv = [(r["kv_cache_mb"], next(v for v in van if _same_cell(v, r))["kv_cache_mb"]) for r in skip] if van else []
    if kv:
        out.append(f"- KV cache of SkipDecode/HSD: {min(a / b for a, b in kv):.2f}-{max(a / b for a, b in kv):.2f}x vanilla's")
    for cell in skipped:
        out.append(f"- skipped: {cell}")
    return "\n".join(out)


def _same_cell(a, b):
    return all(a[k] == b[k] for k in ("prompt", "batch", "beams"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m | gpt2-large-arch | any model name/path")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    p.add_argument("--prompts", nargs="+", default=["short", "long"], choices=sorted(PROMPT_TOKENS))
    p.add_argument("--decoders", nargs="+", default=None, choices=sorted({n for n, _ in DECODERS}),
                   help="subset of the issue's decoders (default: all); hf_generate and vanilla always run")
    p.add_argument("--paper_depth", type=int, default=36,
                   help="depth the paper's exit budgets were tuned for (36): they are scaled to the model's depth and "
                        "the decoders actually run are printed (e_max always means layers of the model benchmarked)")
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prefill_reps", type=int, default=2)
    p.add_argument("--max_cell_tokens", type=int, default=None,
                   help="skip cells whose batch*beams*prompt tokens exceed this (the prompt pass and its KV copy "
                        "of such cells may not fit the machine's time or memory)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    if args.new_tokens < 2:
        p.error(f"--new_tokens {args.new_tokens}: need >= 2 (step 1 onwards is the decode-only part)")
    model = bench_model(args.model).to(args.device, getattr(torch, args.dtype)).eval()
    L = model_parts(model).num_layers
    chosen = [(n, kw) for n, kw in DECODERS if args.decoders is None or n in args.decoders]
    if not chosen or chosen[0][0] != "vanilla":
        chosen = [("vanilla", {})] + chosen  # speed-ups are over our vanilla
    decoders = [build_paper_decoder(n, kw, L, args.paper_depth) for n, kw in chosen]
    print(f"bench: the paper's decoders, exit budgets scaled from {args.paper_depth} to {L} layers: "
          + ", ".join(d.describe() for d in decoders))
    rows, skipped = [], []
    started = time.time()
    for prompt in args.prompts:
        for batch in args.batch:
            for beams in args.beams:
                size = batch * beams * PROMPT_TOKENS[prompt]
                if args.max_cell_tokens and size > args.max_cell_tokens:
                    skipped.append(f"{prompt} prompt, batch {batch} x beams {beams} ({size} prompt tokens > "
                                   f"--max_cell_tokens {args.max_cell_tokens})")
                    continue
                cell = bench_cell(model, batch, beams, prompt, args.new_tokens, args.reps, decoders, args.prefill_reps)
                rows.extend(cell)
                print(to_markdown(args.model, cell), f"\n[{time.time() - started:.0f} s]", flush=True)
    meta = dict(model=args.model, device=args.device, dtype=args.dtype, threads=torch.get_num_threads(),
                new_tokens=args.new_tokens, reps=args.reps, prefill_reps=args.prefill_reps, num_layers=L,
                torch=torch.__version__, seconds=round(time.time() - started), skipped=skipped)
    md = to_markdown(args.model, rows) + "\n\n" + summarize(rows, skipped)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
