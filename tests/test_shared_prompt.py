"""Every plan on every row (``model.all_plans_per_row``): one shared prompt pass gives each plan exactly the loss
the full-sequence planned forward gives, and the training gradient is the plans' weighted mean."""
import pytest
import torch
from helpers import tiny_model
from test_skip_aware import PLANS, PROMPTS, T_MAX, _train_batch

from hsd_lightning.decoding import build_decoder
from hsd_lightning.decoding.plans import PlanMixture, planned
from hsd_lightning.models.module import CausalLMModule
from hsd_lightning.training.shared_prompt import shared_prompt_losses, split_prompt_target

# rows of different prompt and target lengths: left/right padding on both sides of the split
TARGETS = [[11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [21, 22], [5] * 12]


def _planned_loss(model, batch, dec):
    run = PlanMixture([dec], [1.0], T_MAX).run_mask([dec] * batch["input_ids"].shape[0], batch["labels"],
                                                    model.config.num_hidden_layers)
    with planned(model, run):
        return model(**batch).loss


def test_split_keeps_every_prompt_and_target_token(tokenizer):
    batch, plens = _train_batch(tokenizer, PROMPTS, TARGETS)
    s = split_prompt_target(batch)
    for b, (p, t) in enumerate(zip(plens, TARGETS)):
        assert s["prompt"][b][s["prompt_mask"][b].bool()].tolist() == batch["input_ids"][b, :p].tolist()
        assert s["target"][b][s["target_mask"][b].bool()].tolist() == t
        assert s["prompt_pos"][b][s["prompt_mask"][b].bool()].tolist() == list(range(p))
        assert s["target_pos"][b, :len(t)].tolist() == list(range(p, p + len(t)))


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-phi", "tiny-llama"])
def test_each_plans_loss_equals_the_full_sequence_planned_loss(arch, tokenizer):
    m = tiny_model(arch)
    batch, _ = _train_batch(tokenizer, PROMPTS, TARGETS)
    with torch.no_grad():
        got = shared_prompt_losses(m, batch, PLANS, T_MAX)
        want = [_planned_loss(m, batch, d) for d in PLANS]
    assert len({round(w.item(), 3) for w in want}) == len(PLANS)  # the plans really differ
    torch.testing.assert_close(torch.stack(got), torch.stack(want), atol=2e-5, rtol=1e-5)


def test_distillation_term_equals_the_one_drawn_rows_get(tokenizer):
    torch.manual_seed(0)
    plans = [{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 2}, {"name": "skipdecode", "e_min": 1, "e_max": 3}]
    mod = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans, distill_weight=0.3,
                         all_plans_per_row=True)
    mod.model.eval()  # no dropout: both paths see the same forward
    batch, _ = _train_batch(tokenizer, PROMPTS, TARGETS)
    mod.training = True  # the distillation term is a training-time loss
    with torch.no_grad():
        got = mod.all_plan_losses(batch, mod.plans.decoders)
        want = [mod.plan_loss(batch, [d] * 3) for d in mod.plans.decoders]
        # without vanilla among the plans a full-depth teacher branch is added, and its loss is not returned
        skip_only = mod.all_plan_losses(batch, mod.plans.decoders[1:])
    torch.testing.assert_close(torch.stack(got), torch.stack(want), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(skip_only), torch.stack(want[1:]), atol=2e-5, rtol=1e-5)


def test_training_gradient_is_the_weighted_mean_of_the_plans_gradients(tokenizer):
    torch.manual_seed(0)
    plans = [{"name": "vanilla", "weight": 1}, {"name": "hsd", "s": 1, "e_max": 2, "weight": 3}]
    mod = CausalLMModule("tiny-llama", max_new_tokens=8, train_plans=plans, all_plans_per_row=True)
    mod.model.eval()
    batch, _ = _train_batch(tokenizer, PROMPTS, TARGETS)
    mod.log = lambda *a, **k: None  # no trainer attached
    mod.training_step(batch, 0).backward()
    got = [p.grad.clone() for p in mod.model.parameters()]
    mod.model.zero_grad()
    loss = sum(w * mod.plan_loss(batch, [d] * 3) for w, d in zip([1, 3], mod.plans.decoders)) / 4
    loss.backward()
    for g, p in zip(got, mod.model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)


def test_validation_logs_the_same_losses_both_ways(tokenizer):
    plans = [{"name": "vanilla"}, {"name": "hsd", "s": 2, "e_max": 2}]
    batch, _ = _train_batch(tokenizer, PROMPTS, TARGETS)
    logged = {}
    for shared in (False, True):
        torch.manual_seed(0)
        mod = CausalLMModule("tiny-gpt2", max_new_tokens=8, train_plans=plans, all_plans_per_row=shared).eval()
        mod.log = lambda name, value, **k: logged.setdefault(name, []).append(float(value))
        with torch.no_grad():
            mod.validation_step(batch, 0)
    assert set(logged) == {"val/loss", f"val/loss_{build_decoder('hsd', s=2, e_max=2).describe()}"}
    for name, (plain, shared) in logged.items():
        assert plain == pytest.approx(shared, abs=2e-5), name


def test_bad_settings_are_named(tokenizer):
    with pytest.raises(ValueError, match="all_plans_per_row=True .* train_plans"):
        CausalLMModule("tiny-gpt2", all_plans_per_row=True)
    batch, _ = _train_batch(tokenizer, PROMPTS[:1], TARGETS[:1])
    batch["labels"][:] = batch["input_ids"]  # a row without prompt
    with pytest.raises(ValueError, match="no prompt token"):
        shared_prompt_losses(tiny_model("tiny-gpt2"), batch, PLANS, T_MAX)
