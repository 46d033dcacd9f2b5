"""Decoders: exact schedules, equality with transformers' generate and with a cache-free reference, batching,
beams, sampling, LoRA, bad input."""
import math

import pytest
import torch
from helpers import tiny_model

from hsd_lightning.decoding import build_decoder, model_parts
from hsd_lightning.decoding.reference import reference_greedy
from hsd_lightning.decoding.schedules import hierarchical_layers, skipdecode_budget

ARCHS = ["tiny-gpt2", "tiny-phi", "tiny-llama"]
PROMPTS = ["The restaurant serves", "name[Aromi], eatType[coffee shop], food[Chinese] and more words", "a"]



@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


SKIPPERS = [("hsd", dict(s=1, e_min=0, e_max=3)), ("hsd", dict(s=2, e_min=1, e_max=2)),
            ("skipdecode", dict(e_min=1, e_max=4)), ("vanilla", {})]


# ---- schedules --------------------------------------------------------------------------------------------------
def test_skipdecode_schedule_follows_eq4():
    dec = build_decoder("skipdecode", e_min=10, e_max=20)
    L, T = 36, 100
    for t in range(0, 120):
        tt = min(t, T)
        n = math.floor((tt * 10 + (T - tt) * 20) / T + 0.5)
        assert dec.layers_for_step(t, L, T) == [i for i in range(1, L + 1) if i >= L - n]
    assert dec.layers_for_step(0, L, T) == list(range(16, 37))
    assert dec.layers_for_step(100, L, T) == list(range(26, 37))
    assert dec.layers_for_step(500, L, T) == dec.layers_for_step(100, L, T)  # stays at its last value


def test_hsd_schedule_is_union_of_eq4_and_eq5():
    dec = build_decoder("hsd", s=2, e_min=0, e_max=8)
    assert hierarchical_layers(12, 2) == [3, 6, 9, 12]
    assert dec.layers_for_step(0, 12, 10) == sorted({3, 6, 9, 12} | set(range(4, 13)))
    assert dec.layers_for_step(10, 12, 10) == [3, 6, 9, 12]
    assert skipdecode_budget(5, 10, 0, 8) == 4


@pytest.mark.parametrize("name,kw,paper", [
    ("skipdecode", dict(e_min=10, e_max=20), 16.07), ("skipdecode", dict(e_min=10, e_max=24), 18.09),
    ("hsd", dict(s=1, e_min=0, e_max=18), 22.82), ("hsd", dict(s=2, e_min=0, e_max=18), 18.43),
    ("hsd", dict(s=1, e_min=0, e_max=12), 21.32), ("hsd", dict(s=2, e_min=0, e_max=12), 16.42),
    ("hsd", dict(s=1, e_min=0, e_max=8), 20.33), ("hsd", dict(s=2, e_min=0, e_max=8), 15.09)])
def test_mean_layers_match_paper_avg_layer_column(name, kw, paper):
    dec = build_decoder(name, **kw)
    mean = sum(len(dec.layers_for_step(t, 36, 100)) for t in range(100)) / 100
    assert abs(mean - paper) <= 0.1, (mean, paper)


# ---- equality with transformers' generate -------------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [1, 4])
def test_vanilla_is_token_identical_to_generate(arch, batch, num_beams):
    m = tiny_model(arch)
    ref = m.generate(**batch, max_new_tokens=12, num_beams=num_beams, do_sample=False)
    out = build_decoder("vanilla").generate(m, batch["input_ids"], attention_mask=batch["attention_mask"],
                                            max_new_tokens=12, num_beams=num_beams)
    assert torch.equal(out.sequences, ref)
    assert out.avg_layers == m.config.num_hidden_layers


# ---- equality with the cache-free reference ----------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", SKIPPERS + [("calm", dict(d=0.1)), ("calm", dict(d=0.25))])
def test_decoder_matches_cache_free_reference(arch, batch, name, kw):
    m = tiny_model(arch, sharp=name == "calm")
    dec = build_decoder(name, **kw)
    out = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=10,
                       output_logits=True, eos_token_id=None)
    tokens, logits, layers = reference_greedy(m, dec, batch["input_ids"], batch["attention_mask"], max_new_tokens=10)
    assert torch.equal(out.new_tokens, tokens)
    torch.testing.assert_close(torch.stack(out.raw.logits), logits, atol=1e-4, rtol=0)
    assert torch.equal(out.layers_per_token, layers)
    if name == "calm":  # the test must exercise early exits and state propagation, not only full passes
        assert (layers[:, 1:] < m.config.num_hidden_layers).any()


# ---- batching -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", SKIPPERS + [("calm", dict(d=0.1))])
def test_left_padded_batch_equals_each_prompt_alone(arch, tokenizer, batch, name, kw):
    m = tiny_model(arch, sharp=name == "calm")
    dec = build_decoder(name, **kw)
    out = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                       eos_token_id=None)
    for i, prompt in enumerate(PROMPTS):
        alone = tokenizer([prompt], return_tensors="pt")
        one = dec.generate(m, alone["input_ids"], attention_mask=alone["attention_mask"], max_new_tokens=8,
                           eos_token_id=None)
        assert torch.equal(out.new_tokens[i], one.new_tokens[0]), (name, i)
        assert torch.equal(out.layers_per_token[i], one.layers_per_token[0])


def test_avg_layers_is_mean_of_scheduled_passes(batch):
    m = tiny_model("tiny-llama", sharp=True)
    for dec in (build_decoder("hsd", s=1, e_min=0, e_max=3), build_decoder("calm", d=0.1)):
        out = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=9)
        lpt = out.layers_per_token
        assert (lpt[:, 0] == 6).all()
        real = lpt[:, 1:] > 0
        assert out.avg_layers == pytest.approx(lpt[:, 1:][real].float().mean().item())


def test_layers_are_zero_after_eos(batch):
    m = tiny_model("tiny-gpt2")
    dec = build_decoder("hsd", s=1, e_min=0, e_max=3)
    free = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                        eos_token_id=None)
    eos = int(free.new_tokens[0, 2])  # pretend the 3rd token of row 0 is EOS
    out = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                       eos_token_id=eos, pad_token_id=eos)
    first = int((out.new_tokens[0] == eos).nonzero()[0])
    assert (out.layers_per_token[0, first + 1:] == 0).all() and (out.layers_per_token[0, :first + 1] > 0).all()


# ---- beams and sampling --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", SKIPPERS + [("calm", dict(d=0.1))])
def test_beam_search_and_sampling_run_and_stop(arch, batch, name, kw):
    m = tiny_model(arch, sharp=True)
    dec = build_decoder(name, **kw)
    L = m.config.num_hidden_layers
    beams = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=7,
                         num_beams=4, eos_token_id=None)
    assert beams.new_tokens.shape == (3, 7)
    assert ((beams.layers_per_token >= 1) & (beams.layers_per_token <= L)).all()
    kw_s = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, eos_token_id=None)
    torch.manual_seed(0)
    s1 = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=7, **kw_s)
    torch.manual_seed(0)
    s2 = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=7, **kw_s)
    assert torch.equal(s1.sequences, s2.sequences) and s1.new_tokens.shape == (3, 7)


@pytest.mark.parametrize("name,kw", SKIPPERS + [("calm", dict(d=0.1))])
def test_beams_share_one_prompt_pass_per_input_with_the_same_outputs(arch, batch, name, kw):
    # share_prompt (the default with beams): the prompt but its last token runs for the 3 inputs, not 3 x 3 beam rows,
    # and the padded batch decodes to the same tokens and layer counts as transformers' per-beam prompt pass
    m = tiny_model(arch, sharp=True)
    rows = []
    hook = model_parts(m).backbone.register_forward_pre_hook(
        lambda mod, args, kwargs: rows.append(tuple((args[0] if args else kwargs["input_ids"]).shape)), with_kwargs=True)
    try:
        args = dict(attention_mask=batch["attention_mask"], max_new_tokens=6, num_beams=3, eos_token_id=None)
        shared = build_decoder(name, **kw).generate(m, batch["input_ids"], **args)
        first_shared = rows[:2]
        rows.clear()
        per_beam = build_decoder(name, **kw).generate(m, batch["input_ids"], share_prompt=False, **args)
    finally:
        hook.remove()
    B, P = batch["input_ids"].shape
    assert first_shared == [(B, P - 1), (3 * B, 1)]  # the prefix once per input, then the last token per beam
    assert rows[0] == (3 * B, P)  # transformers' way: the whole prompt for every beam
    assert torch.equal(shared.sequences, per_beam.sequences)
    assert torch.equal(shared.layers_per_token, per_beam.layers_per_token)


def test_skip_decoder_beam_search_matches_generate_with_same_plan_when_nothing_skipped(batch):
    # e_max = L keeps every layer for t=1.. only if n(t) >= L-1: with e_min=e_max=L the skip machinery is a no-op
    m = tiny_model("tiny-llama")
    L = m.config.num_hidden_layers
    ref = m.generate(**batch, max_new_tokens=8, num_beams=4, do_sample=False)
    out = build_decoder("skipdecode", e_min=L, e_max=L).generate(
        m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8, num_beams=4)
    assert torch.equal(out.sequences, ref)


# ---- LoRA -----------------------------------------------------------------------------------------------------------
def test_lora_wrapped_model_decodes_like_its_merged_copy(batch):
    import copy

    from peft import LoraConfig, get_peft_model
    m = tiny_model("tiny-llama")
    peft_model = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload()
    for dec in (build_decoder("hsd", s=1, e_min=0, e_max=3), build_decoder("calm", d=0.1)):
        a = dec.generate(peft_model, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8)
        b = dec.generate(merged, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8)
        assert torch.equal(a.sequences, b.sequences)


# ---- KV cache ------------------------------------------------------------------------------------------------------
def test_layers_that_never_run_do_not_grow_their_cache(batch):
    m = tiny_model("tiny-llama")
    dec = build_decoder("skipdecode", e_min=1, e_max=2)  # layers 1..3 never run after the prompt
    out = dec.generate(m, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=6,
                       eos_token_id=None)
    cache = out.raw.cache if hasattr(out.raw, "cache") else out.raw.past_key_values
    P = batch["input_ids"].shape[1]
    lengths = [layer.keys.shape[-2] for layer in cache.layers]
    assert lengths[:3] == [P, P, P]
    assert lengths[-1] == P + 5  # the top layer saw every generated token it processed
    vanilla = build_decoder("vanilla").generate(m, batch["input_ids"], attention_mask=batch["attention_mask"],
                                                max_new_tokens=6, eos_token_id=None)
    assert out.kv_cache_bytes < vanilla.kv_cache_bytes


@pytest.mark.parametrize("name,kw", [("hsd", dict(s=1, e_min=0, e_max=3)), ("skipdecode", dict(e_min=1, e_max=4)),
                                     ("calm", dict(d=0.1))])
def test_deferred_beam_reorders_equal_eager_ones(batch, monkeypatch, name, kw):
    """SkipCache defers beam reorders of layers that do not run; tokens and the final cache must not change."""
    from transformers import DynamicCache

    from hsd_lightning.decoding.runtime import SkipCache
    m = tiny_model("tiny-llama", sharp=name == "calm")
    args = dict(attention_mask=batch["attention_mask"], max_new_tokens=7, min_new_tokens=7, num_beams=3,
                eos_token_id=None)
    dec = build_decoder(name, **kw)
    lazy = dec.generate(m, batch["input_ids"], **args)
    monkeypatch.setattr(SkipCache, "reorder_cache", DynamicCache.reorder_cache)
    eager = dec.generate(m, batch["input_ids"], **args)
    assert torch.equal(lazy.sequences, eager.sequences) and torch.equal(lazy.layers_per_token, eager.layers_per_token)
    for a, b in zip(lazy.raw.cache.layers, eager.raw.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_executed_layers_is_the_deepest_row_per_step(batch):
    m = tiny_model("tiny-llama", sharp=True)
    args = dict(attention_mask=batch["attention_mask"], max_new_tokens=6, min_new_tokens=6, eos_token_id=None)
    calm = build_decoder("calm", d=0.1).generate(m, batch["input_ids"], **args)
    deepest = calm.layers_per_token[:, 1:].max(dim=0).values.float().mean()
    assert calm.executed_layers == pytest.approx(float(deepest)) and calm.executed_layers >= calm.avg_layers
    dec = build_decoder("skipdecode", e_min=1, e_max=4)
    sk = dec.generate(m, batch["input_ids"], **args)
    assert sk.executed_layers == pytest.approx(sum(len(dec.layers_for_step(t, 6, 6)) for t in range(1, 6)) / 5)


# ---- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw,msg", [
    ("hsd", dict(s=-1), "s=-1"), ("skipdecode", dict(e_min=20, e_max=10), "e_min=20 > e_max=10"),
    ("calm", dict(d=0.0), "d=0.0"), ("calm", dict(d=1.5), "d=1.5"), ("beam", {}, "unknown decoder 'beam'"),
    ("hsd", dict(d=0.1), "takes ['s', 'e_min', 'e_max', 'always_run']")])
def test_bad_settings_fail_before_compute(name, kw, msg):
    with pytest.raises(ValueError) as err:
        build_decoder(name, **kw)
    assert msg in str(err.value)


def test_depth_and_beam_errors(batch):
    m = tiny_model("tiny-gpt2")
    with pytest.raises(ValueError, match="e_max=12 exceeds the model's 6 layers"):
        build_decoder("hsd", s=1, e_min=0, e_max=12).generate(m, batch["input_ids"], max_new_tokens=2)
    with pytest.raises(ValueError, match="num_beams=0"):
        build_decoder("vanilla").generate(m, batch["input_ids"], max_new_tokens=2, num_beams=0)


def test_unsupported_family_is_named():
    with pytest.raises(ValueError, match="model family 'bert' is not described"):
        from transformers import BertConfig, BertLMHeadModel
        model_parts(BertLMHeadModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=32, is_decoder=True)))
