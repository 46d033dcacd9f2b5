"""Skip-aware fine-tuning: the training forward under a layer plan is exactly what decoding with that plan computes."""
import logging
import random

import pytest
import torch
from helpers import tiny_model

from hsd_lightning.decoding import build_decoder
from hsd_lightning.decoding.plans import PlanMixture, first_target_index, planned, position_plans, step_plan_matrix
from hsd_lightning.decoding.reference import reference_greedy
from hsd_lightning.models.module import CausalLMModule

ARCHS = ["tiny-gpt2", "tiny-phi", "tiny-llama"]
PROMPTS = ["The restaurant serves", "name[Aromi], eatType[coffee shop], food[Chinese] and more words", "a"]
PLANS = [build_decoder("hsd", s=1, e_min=0, e_max=3), build_decoder("skipdecode", e_min=1, e_max=4),
         build_decoder("hsd", s=2, e_min=0, e_max=2, always_run=[1]), build_decoder("vanilla")]
NEW = 9
T_MAX = 7  # shorter than NEW: steps past t_max keep the plan of t_max



def _train_batch(tokenizer, prompts, continuations):
    """Right-padded training batch (prompt + continuation), labels -100 on prompt and padding."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    seqs = [r + c for r, c in zip(rows, continuations)]
    S = max(map(len, seqs))
    ids = torch.full((len(seqs), S), tokenizer.pad_token_id)
    mask = torch.zeros(len(seqs), S, dtype=torch.long)
    labels = torch.full((len(seqs), S), -100)
    for b, (r, s) in enumerate(zip(rows, seqs)):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
        labels[b, len(r):len(s)] = torch.tensor(s[len(r):])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}, [len(r) for r in rows]


def test_position_plans_follow_the_decoding_steps():
    dec = build_decoder("hsd", s=2, e_min=0, e_max=2)
    labels = torch.tensor([[-100, -100, 5, 6, 7, -100], [-100, 5, 6, -100, -100, -100]])
    assert first_target_index(labels).tolist() == [2, 1]
    run = position_plans([dec, build_decoder("vanilla")], first_target_index(labels), 6, 6, t_max=4)
    assert run[1].all()  # vanilla row: every layer everywhere
    # row 0: positions 0,1 are prompt (position 1 feeds token 0: the prompt pass), position 2+k is step k+1
    assert run[0, :2].all()
    for k in range(4):
        want = dec.layers_for_step(k + 1, 6, 4)
        assert run[0, 2 + k].nonzero().flatten().add(1).tolist() == want


def test_position_plans_equal_the_step_by_step_plans_past_t_max():
    # the gathered masks (cached step tables over 0..t_max) equal each row's step_plan_matrix over every position,
    # also for sequences far longer than t_max and mixtures with always-run layers
    decs = [build_decoder("vanilla"), build_decoder("hsd", s=1, e_min=0, e_max=10),
            build_decoder("hsd", s=2, e_min=0, e_max=10, always_run=[1]), build_decoder("skipdecode", e_min=8, e_max=20)]
    rng = random.Random(0)
    for _ in range(20):
        B, S, t_max = rng.randint(1, 6), rng.randint(1, 90), rng.choice([1, 4, 16, 40])
        rows = [rng.choice(decs) for _ in range(B)]
        first = torch.tensor([rng.randint(0, S) for _ in range(B)])
        run = position_plans(rows, first, S, 30, t_max)
        for b, dec in enumerate(rows):
            full = step_plan_matrix(dec, 30, t_max, S + 1)
            assert torch.equal(run[b], full[(torch.arange(S) - first[b] + 1).clamp(min=0)])


@pytest.mark.parametrize("arch", ARCHS)
def test_training_forward_under_a_plan_equals_the_cache_free_reference(arch, tokenizer):
    """Each row follows another plan (a mixture batch); its logits equal the reference decoder's, step by step."""
    m = tiny_model(arch)
    L = m.config.num_hidden_layers
    refs = []
    for p, dec in zip(PROMPTS, PLANS):
        ids = tokenizer(p, return_tensors="pt")["input_ids"]
        tokens, logits, _ = reference_greedy(m, dec, ids, max_new_tokens=NEW, t_max=T_MAX)
        refs.append((tokens[0].tolist(), logits[:, 0]))
    batch, plens = _train_batch(tokenizer, PROMPTS, [t for t, _ in refs])
    mix = PlanMixture(PLANS, [1.0] * len(PLANS), T_MAX)
    run = mix.run_mask(PLANS[:len(PROMPTS)], batch["labels"], L)
    with torch.no_grad(), planned(m, run):
        out = m(**batch).logits
    for b, (tokens, ref_logits) in enumerate(refs):
        # logits at position plen-1+k predict generated token k (k=0: the prompt pass)
        got = out[b, plens[b] - 1:plens[b] - 1 + NEW]
        torch.testing.assert_close(got, ref_logits, atol=1e-4, rtol=1e-4)
        assert got.argmax(-1).tolist() == tokens


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dec", PLANS[:3], ids=lambda d: d.describe())
def test_per_token_loss_equals_decode_time_log_probability(arch, dec, tokenizer):
    m = tiny_model(arch)
    mod = CausalLMModule(arch, max_new_tokens=NEW, t_max=T_MAX, train_plans=[{"name": dec.name, **dec.settings()}])
    mod.model = m
    ids = tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    out = dec.generate(m, ids, max_new_tokens=NEW, t_max=T_MAX, output_logits=True, eos_token_id=None)
    new = out.new_tokens[0]
    decode_logp = torch.stack([lg[0].float().log_softmax(-1)[tok] for lg, tok in zip(out.raw.logits, new)])
    batch, plens = _train_batch(tokenizer, PROMPTS[1:2], [new.tolist()])
    run = mod.plans.run_mask([dec], batch["labels"], m.config.num_hidden_layers)
    with torch.no_grad(), planned(m, run):
        logits = m(**batch).logits[0, plens[0] - 1:-1]
    train_nll = torch.nn.functional.cross_entropy(logits.float(), new, reduction="none")
    torch.testing.assert_close(train_nll, -decode_logp, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the module's training loss is their mean
        torch.testing.assert_close(mod.plan_loss(batch, [dec]), -decode_logp.mean(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("plans,msg", [
    ([{"s": 1}], "each plan is a mapping with a decoder name"),
    ([{"name": "calm", "d": 0.1}], "calm has no static layer plan"),
    ([{"name": "hsd", "weight": -1}], "non-negative"),
    ([{"name": "hsd", "always_run": [0]}], "always_run=\\[0\\]"),
])
def test_bad_train_plans_are_named(plans, msg):
    with pytest.raises(ValueError, match=msg):
        CausalLMModule("tiny-gpt2", train_plans=plans)


def test_always_run_layers_join_every_step_and_are_checked():
    dec = build_decoder("hsd", s=1, e_min=0, e_max=2, always_run=[1, 3])
    plain = build_decoder("hsd", s=1, e_min=0, e_max=2)
    for t in range(1, 12):
        assert dec.layers_for_step(t, 6, 10) == sorted(set(plain.layers_for_step(t, 6, 10)) | {1, 3})
    assert dec.describe() == "hsd(s=1,min=0,max=2,always=1+3)"
    assert build_decoder(**{"name": "hsd", **dec.settings()}).describe() == dec.describe()
    with pytest.raises(ValueError, match="always_run=\\[7\\] names layer 7 but the model has 6 layers"):
        build_decoder("skipdecode", e_min=1, e_max=2, always_run=[7]).layers_for_step(1, 6, 10)


def test_checkpoint_records_t_max_and_predict_warns_when_it_differs(caplog):
    mod = CausalLMModule("tiny-gpt2", max_new_tokens=16, train_plans=[{"name": "hsd", "s": 1, "e_max": 2}])
    ckpt = {"state_dict": {}}
    mod.on_save_checkpoint(ckpt)
    assert ckpt["skip_aware"]["t_max"] == 16
    other = CausalLMModule("tiny-gpt2", max_new_tokens=40)
    other.on_load_checkpoint(ckpt)
    with caplog.at_level(logging.WARNING):
        assert other.check_t_max() is False
    assert "t_max=16 but decoding uses t_max=40" in caplog.text and "--model.t_max 16" in caplog.text
    same = CausalLMModule("tiny-gpt2", max_new_tokens=40, t_max=16)
    same.on_load_checkpoint(ckpt)
    assert same.check_t_max() is True


# ---- agreement with vanilla ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
def test_plan_argmax_reproduces_each_decoders_own_greedy_tokens(arch, tokenizer):
    """Teacher-forced on a decoder's own greedy output (a left-padded batch), its plan's argmax is that output."""
    from hsd_lightning.evaluation.agreement import agreement_counts, plan_argmax

    m = tiny_model(arch)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    for dec in PLANS:
        out = dec.generate(m, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=NEW,
                           t_max=T_MAX, eos_token_id=None)
        conts = out.new_tokens.tolist()
        assert plan_argmax(m, dec, prompts, conts, tokenizer.pad_token_id, T_MAX) == [c[1:] for c in conts]
    vanilla = build_decoder("vanilla").generate(m, enc["input_ids"], attention_mask=enc["attention_mask"],
                                                max_new_tokens=NEW, eos_token_id=None).new_tokens.tolist()
    counts = agreement_counts(m, [build_decoder("vanilla"), PLANS[1]], prompts, vanilla, tokenizer.pad_token_id,
                              T_MAX, batch_size=2)
    assert counts["vanilla"] == (3 * (NEW - 1), 3 * (NEW - 1))
    agree, total = counts[PLANS[1].describe()]
    skip = plan_argmax(m, PLANS[1], prompts, vanilla, tokenizer.pad_token_id, T_MAX)
    assert total == 3 * (NEW - 1) and agree == sum(x == y for s, v in zip(skip, vanilla) for x, y in zip(s, v[1:]))


def test_self_distillation_mixes_label_loss_and_kl_to_the_full_model(tokenizer):
    plans = [{"name": "hsd", "s": 1, "e_max": 2}]
    batch, _ = _train_batch(tokenizer, PROMPTS[:2], [[11, 12, 13, 14], [21, 22]])
    dec = [build_decoder("hsd", s=1, e_max=2)] * 2
    torch.manual_seed(0)
    ce = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans, distill_weight=0.0)
    both = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans, distill_weight=0.5)
    both.model.load_state_dict(ce.model.state_dict())
    ce.model.eval(), both.model.eval()  # no dropout: the two losses see the same forward
    with torch.no_grad():
        l_ce = ce.plan_loss(batch, dec)
        l_mix = both.plan_loss(batch, dec)
        # KL computed by hand over the 4 scheduled target predictions (labels shifted by one)
        full = both.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        run = both.plans.run_mask(dec, batch["labels"], 6)
        with planned(both.model, run):
            skip = both.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        m = batch["labels"][:, 1:] != -100
        p, q = full[:, :-1][m].log_softmax(-1), skip[:, :-1][m].log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1).mean()
    assert kl > 0
    torch.testing.assert_close(l_mix, 0.5 * l_ce + 0.5 * kl, atol=1e-5, rtol=1e-5)
    vanilla = [build_decoder("vanilla")] * 2  # the full plan is its own teacher: only the label loss remains
    with torch.no_grad():
        torch.testing.assert_close(both.plan_loss(batch, vanilla), 0.5 * ce.plan_loss(batch, vanilla))
    with pytest.raises(ValueError, match="distill_weight=2"):
        CausalLMModule("tiny-gpt2", train_plans=plans, distill_weight=2)


def test_teacher_adapter_is_a_frozen_full_depth_teacher_kept_out_of_checkpoints(tmp_path, tokenizer):
    """``teacher_adapter``: the KL pulls every row, vanilla included, towards another adapter's full depth; the
    teacher is loaded once, never trained, and never saved."""
    from hsd_lightning.models.adapters import export

    targets = ["q_proj", "v_proj"]
    plans = [{"name": "hsd", "s": 1, "e_max": 2}]
    lora = {"finetune": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_modules": targets, "max_new_tokens": 8}
    torch.manual_seed(0)
    teacher = CausalLMModule("tiny-llama", **lora)
    with torch.no_grad():
        for n, q in teacher.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.5)
    export(teacher, tmp_path / "teacher", {})
    teacher = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "teacher")).eval()  # as stored
    mod = CausalLMModule("tiny-llama", **lora, train_plans=plans, distill_weight=0.5,
                         teacher_adapter=str(tmp_path / "teacher"))
    keys = set(mod.state_dict())
    batch, _ = _train_batch(tokenizer, PROMPTS[:2], [[11, 12, 13, 14], [21, 22]])
    for dec in ([build_decoder("hsd", s=1, e_max=2)] * 2, [build_decoder("vanilla")] * 2):
        mod.model.eval()  # no dropout; plan_loss distils only while training
        mod.training = True
        with torch.no_grad():
            loss = mod.plan_loss(batch, dec)
            ce = mod.model(**batch).loss if dec[0].name == "vanilla" else None
            run = mod.plans.run_mask(dec, batch["labels"], 6)
            with planned(mod.model, run):
                out = mod.model(**batch)
            full = teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        m = batch["labels"][:, 1:] != -100
        p, q = full[:, :-1][m].log_softmax(-1), out.logits[:, :-1][m].log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1).mean()
        assert kl > 1e-3  # another model's full depth: even the vanilla row has something to learn
        torch.testing.assert_close(loss, 0.5 * out.loss + 0.5 * kl, atol=1e-5, rtol=1e-5)
        if ce is not None:
            torch.testing.assert_close(out.loss, ce)
    assert set(mod.state_dict()) == keys  # the teacher is no submodule: not in checkpoints
    trained = {id(q) for q in mod.parameters()}
    assert not any(id(q) in trained or q.requires_grad for q in mod._teacher().parameters())
    assert mod._teacher() is mod._teacher()  # loaded once
    with pytest.raises(ValueError, match=r"^teacher_adapter='t' is the teacher of the distillation loss"):
        CausalLMModule("tiny-llama", train_plans=plans, teacher_adapter="t")
    with pytest.raises(ValueError, match=r"^teacher_adapter='t' applies to one drawn plan per row"):
        CausalLMModule("tiny-llama", train_plans=plans, distill_weight=0.5, teacher_adapter="t", all_plans_per_row=True)


def test_unlikelihood_penalises_tokens_the_target_already_holds():
    from hsd_lightning.models.module import unlikelihood

    # one row: prompt (label -100) then targets a=1, b=2, a=1, c=3; logits at i predict labels[i + 1]
    labels = torch.tensor([[-100, 1, 2, 1, 3]])
    logits = torch.randn(1, 5, 5)
    p = logits[0, :-1].softmax(-1)
    # positions due to give 1 (nothing before), 2 (cand {1}), 1 (cand {2}: 1 is due), 3 (cand {1, 2})
    want = torch.stack([torch.tensor(0.0), -torch.log(1 - p[1, 1]), -torch.log(1 - p[2, 2]),
                        -torch.log(1 - p[3, 1]) - torch.log(1 - p[3, 2])]).mean()
    torch.testing.assert_close(unlikelihood(logits, labels, torch.tensor([True])), want)
    assert unlikelihood(logits, labels, torch.tensor([False])) == 0  # a vanilla row gets none


def test_unlikelihood_joins_the_plan_loss_of_skipping_rows_only(tokenizer):
    from hsd_lightning.models.module import unlikelihood

    plans = [{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 2}]
    batch, _ = _train_batch(tokenizer, PROMPTS[:2], [[11, 12, 11, 14], [21, 22, 23]])
    torch.manual_seed(0)
    ce = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans)
    ul = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans, unlikelihood_weight=0.5)
    ul.model.load_state_dict(ce.model.state_dict())
    ce.model.eval(), ul.model.eval()
    decs = [build_decoder("vanilla"), build_decoder("hsd", s=1, e_max=2)]
    with torch.no_grad():
        run = ul.plans.run_mask(decs, batch["labels"], 6)
        with planned(ul.model, run):
            logits = ul.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        extra = unlikelihood(logits, batch["labels"], torch.tensor([False, True]))
        torch.testing.assert_close(ul.plan_loss(batch, decs), ce.plan_loss(batch, decs) + 0.5 * extra)
    assert extra > 0
    with pytest.raises(ValueError, match="unlikelihood_weight=-1"):
        CausalLMModule("tiny-gpt2", train_plans=plans, unlikelihood_weight=-1)
