"""Speed benchmark plumbing: continuing a prefilled cache decodes exactly as a fresh run, the FLOP model, the
result rows and the target summary. No timed assertions (machines are noisy): timings are only checked for shape."""
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_model
from transformers import DynamicCache

from hsd_lightning.benchmark import speed
from hsd_lightning.benchmark.flops import calm_ideal_speedup, ideal_speedup, step_flops
from hsd_lightning.decoding import build_decoder
from hsd_lightning.models.loading import load_model

KW = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)



@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-phi", "tiny-llama"])
@pytest.mark.parametrize("beams", [1, 3])
def test_continuing_a_prefilled_cache_equals_a_fresh_run(name, beams):
    m = tiny_model(name, sharp=True)
    ids = torch.randint(5, 200, (3, 9), generator=torch.Generator().manual_seed(1))
    template, secs = speed.prefill(m, ids.repeat_interleave(beams, 0))
    assert secs > 0 and template.get_seq_length() == 8
    ref = m.generate(input_ids=ids, num_beams=beams, **KW)
    got = m.generate(input_ids=ids, num_beams=beams, cache=speed.copy_cache(template, m.config), **KW)
    assert torch.equal(ref, got)
    for dec in [build_decoder("vanilla"), build_decoder("hsd", s=1, e_min=0, e_max=3), build_decoder("calm", d=0.1)]:
        fresh = dec.generate(m, ids, num_beams=beams, **KW)
        cont = dec.generate(m, ids, num_beams=beams, cache=speed.copy_cache(template, m.config), **KW)
        assert torch.equal(fresh.sequences, cont.sequences), dec.describe()
        assert torch.equal(fresh.layers_per_token, cont.layers_per_token), dec.describe()
        assert fresh.kv_cache_bytes == cont.kv_cache_bytes


def test_bad_caches_are_named():
    m = tiny_model("tiny-llama")
    ids = torch.randint(5, 200, (2, 6))
    dec = build_decoder("vanilla")
    full, _ = speed.prefill(m, torch.cat([ids, ids[:, :1]], 1))  # holds all 6 prompt tokens
    with pytest.raises(ValueError, match="cache already holds 6 tokens but input_ids has 6"):
        dec.generate(m, ids, cache=full, max_new_tokens=2)
    two_beams, _ = speed.prefill(m, ids.repeat_interleave(2, 0))
    with pytest.raises(ValueError, match=r"cache holds 4 rows but batch 2 x num_beams 1 = 2"):
        dec.generate(m, ids, cache=two_beams, max_new_tokens=2)
    with pytest.raises(TypeError, match="cache=tuple"):
        dec.generate(m, ids, cache=(), max_new_tokens=2)
    skipped = build_decoder("skipdecode", e_min=1, e_max=2).generate(m, ids, max_new_tokens=3, eos_token_id=None)
    with pytest.raises(ValueError, match="cache layer 0 holds 6 tokens but layer 5 holds 8"):
        dec.generate(m, skipped.sequences, cache=skipped.raw.cache, max_new_tokens=2)


def test_flop_model_counts_gpt2_shapes():
    cfg = load_model("tiny-gpt2").config
    d, V, ctx = cfg.n_embd, cfg.vocab_size, 100
    c_layer, c_head = step_flops(cfg, ctx)
    assert c_layer == 24 * d * d + 4 * ctx * d  # QKV+O (8d^2) + MLP (16d^2) + QK^T and AV over ctx keys
    assert c_head == 2 * d * V
    L = cfg.n_layer
    assert ideal_speedup(cfg, L, L, 90, 20) == 1.0
    assert ideal_speedup(cfg, L, L / 2, 90, 20) == pytest.approx((L * c_layer + c_head) / (L / 2 * c_layer + c_head))
    # CALM: 2 layers run, each checked with the LM head, plus the final head; all layers -> L-1 checks
    assert calm_ideal_speedup(cfg, L, 2, ctx) == pytest.approx((L * c_layer + c_head) / (2 * c_layer + 3 * c_head))
    assert calm_ideal_speedup(cfg, L, L, ctx) == pytest.approx((L * c_layer + c_head) / (L * c_layer + L * c_head))


def test_bench_cell_rows_and_summary():
    m = tiny_model("tiny-llama")
    decs = [build_decoder("vanilla"), build_decoder("skipdecode", e_min=1, e_max=2), build_decoder("calm", d=0.1)]
    rows = speed.bench_cell(m, batch=2, beams=2, prompt="short", new_tokens=4, reps=1, decoders=decs, prefill_reps=1)
    assert [r["decoder"] for r in rows] == ["hf_generate", "vanilla", "skipdecode(min=1,max=2)", "calm(d=0.1)"]
    by = {r["decoder"]: r for r in rows}
    assert by["vanilla"]["speedup"] == 1.0 and by["vanilla"]["efficiency"] is None
    assert by["hf_generate"]["vs_hf_generate"] == 1.0 and by["hf_generate"]["efficiency"] is None
    sk = by["skipdecode(min=1,max=2)"]
    assert sk["efficiency"] == pytest.approx(sk["speedup"] / sk["ideal_speedup"])
    assert sk["avg_layers"] < 6 and sk["ideal_speedup"] > 1
    assert sk["kv_cache_mb"] < by["vanilla"]["kv_cache_mb"] == by["hf_generate"]["kv_cache_mb"]
    assert sk["executed_layers"] == pytest.approx(sk["avg_layers"])  # one schedule for every row
    calm = by["calm(d=0.1)"]
    assert calm["avg_layers"] <= calm["executed_layers"] <= 6
    assert calm["efficiency_with_checks"] == pytest.approx(calm["speedup"] / calm["ideal_with_checks"])
    for r in rows:
        assert r["prompt_tokens"] == 48 and r["decode_s"] < r["total_s"]
        assert r["tokens_per_s"] == pytest.approx(2 * 4 / (r["prefill_s"] + r["total_s"]))
    summary = speed.summarize(rows, ["long prompt, batch 8 x beams 4 (too big)"])
    assert "vanilla vs HF generate (decode tok/s): min" in summary and "target >= 0.90" in summary
    assert "CALM efficiency" in summary and "skipped: long prompt" in summary


def test_main_writes_results_and_lists_skipped_cells(tmp_path):
    speed.main(["--model", "tiny-gpt2", "--batch", "1", "--beams", "1", "--prompts", "short", "long",
                "--max_cell_tokens", "100", "--reps", "1", "--prefill_reps", "1", "--new_tokens", "3",
                "--decoders", "hsd", "--out", str(tmp_path)])
    res = json.loads(Path(tmp_path, "results.json").read_text())
    assert {r["prompt"] for r in res["rows"]} == {"short"}
    assert [r["decoder"] for r in res["rows"]] == ["hf_generate", "vanilla", "hsd(s=1,min=0,max=2)", "hsd(s=2,min=0,max=1)"]
    assert "long prompt, batch 1 x beams 1 (900 prompt tokens > --max_cell_tokens 100)" in res["meta"]["skipped"][0]
    assert "| tiny-gpt2 | short | 1 | 1 | hsd(s=1,min=0,max=2) |" in Path(tmp_path, "results.md").read_text()


def test_memory_probe_sees_an_allocation():
    probe = speed.MemoryProbe(torch.device("cpu"))
    with probe:
        x = torch.ones(40_000_000)  # 160 MB, touched
        del x
    if probe.peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 150 * 2**20 < probe.peak < 400 * 2**20


def test_copy_cache_is_independent():
    m = tiny_model("tiny-llama")
    template, _ = speed.prefill(m, torch.randint(5, 200, (1, 5)))
    c = speed.copy_cache(template, m.config)
    assert isinstance(c, DynamicCache) and speed.kv_bytes(c) == speed.kv_bytes(template)
    c.layers[0].keys.zero_()
    assert template.layers[0].keys.abs().sum() > 0


def test_train_step_benchmark_checks_the_mask_and_reports_medians(capsys):
    from hsd_lightning.benchmark import train_step

    out = train_step.main(["--model", "tiny-llama", "--device", "cpu", "--batch", "2", "--seq", "24", "--prompt", "16",
                           "--t_max", "8", "--reps", "2"])
    assert out["reps"] == 1 and min(out["plain_ms"], out["mask_ms"], out["planned_ms"]) > 0
    assert out["planned_over_plain"] == pytest.approx(out["planned_ms"] / out["plain_ms"])
    assert out["all_plans_over_plain"] == pytest.approx(out["all_plans_ms"] / out["plain_ms"]) and out["plans"] == 4
    with pytest.raises(SystemExit):
        train_step.main(["--model", "tiny-llama", "--seq", "24", "--prompt", "24"])
    assert "--prompt 24 must be between 1 and --seq - 1 (23)" in capsys.readouterr().err
