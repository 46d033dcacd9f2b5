"""The learning-rate schedule: linear warm-up, constant, then (``lr_decay_steps``) a linear decay to 0 that ends at
``trainer.max_steps`` and is a function of the global step, so a stage continued from a checkpoint anneals only
its own last steps. Resuming a decaying run mid-way is covered by test_distributed's kill-and-resume test."""
from types import SimpleNamespace

import pytest

from hsd_lightning.models.module import CausalLMModule


def _lrs(max_steps: int, first: int = 0, **kw) -> list[float]:
    """Learning rate of optimizer steps first+1 .. max_steps (first > 0: a run restored at global step `first`)."""
    module = CausalLMModule("tiny-gpt2", learning_rate=1.0, **kw)
    module.trainer = SimpleNamespace(max_steps=max_steps)  # configure_optimizers reads only max_steps
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    if first:  # Lightning's restore: the scheduler's step count, the optimizer's lr as the constant run left it
        sched.load_state_dict({**sched.state_dict(), "last_epoch": first})
        opt.param_groups[0]["lr"] = 1.0
    out = []
    for _ in range(first, max_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_constant_by_default():
    assert _lrs(6, warmup_steps=2) == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_decay_ends_at_max_steps():
    assert _lrs(8, warmup_steps=2, lr_decay_steps=4) == [0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_continued_stage_anneals_only_its_own_last_steps():
    # a 3-step stage started from step 5 of a constant run, e.g. epoch 6 of a 5-epoch run: decay over steps 6..8
    assert _lrs(8, first=5, warmup_steps=2, lr_decay_steps=3) == pytest.approx([1.0, 2 / 3, 1 / 3])


def test_bad_decay_is_named():
    with pytest.raises(ValueError, match=r"lr_decay_steps=-1 must be an integer >= 0 \(0 = no decay\)"):
        CausalLMModule("tiny-gpt2", lr_decay_steps=-1)
    with pytest.raises(ValueError, match=r"lr_decay_steps=4 decays towards trainer.max_steps, which is not set; "
                                         r"set --trainer.max_steps"):
        _lrs(-1, lr_decay_steps=4)
