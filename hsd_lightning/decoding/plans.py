"""Per-position layer plans for one full-sequence forward pass: what skip-aware training, the agreement metric and
the cache-free reference run.

A decoder's plan says which layers run at decoding step ``t``. In a teacher-forced forward over
``prompt + generated tokens`` every position gets the plan of the step that processes it:

* prompt positions run every layer (the prompt pass, step 0);
* the position holding generated token ``k`` (0-based) is processed at step ``k + 1``: plan of step ``k + 1``.

A position that does not run a layer passes its hidden state through unchanged (its residual update is zero). For
the static schedules here (SkipDecode, HSD, vanilla, with or without always-run layers) a layer skipped at step t
is skipped at every later step, so no later position that *runs* a layer ever attends to a position that skipped
it: the masked forward gives exactly the logits that decoding with a KV cache gives (tested against the decoder).

Why hand-written: transformers has no per-position layer masking; we wrap the very same layer modules, so
parameters, LoRA adapters and ``state_dict`` keys are untouched and gradients flow as in a plain forward.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .families import ModelParts, model_parts
from .runtime import scheduled


def step_plan_matrix(decoder, num_layers: int, t_max: int, num_steps: int, device=None) -> torch.Tensor:
    """Bool ``[num_steps, num_layers]``: row ``t`` marks the layers the decoder runs at step ``t`` (row 0 = the
    prompt pass: every layer). Steps past ``t_max`` keep the plan of ``t_max``, as in decoding."""
    out = torch.ones(num_steps, num_layers, dtype=torch.bool, device=device)
    for t in range(1, num_steps):
        out[t] = False
        out[t, [i - 1 for i in decoder.layers_for_step(t, num_layers, t_max)]] = True
    return out


# (decoder type, describe(), num_layers, t_max, device) -> its step_plan_matrix over steps 0..t_max
_STEP_TABLES: dict[tuple, torch.Tensor] = {}


def step_table(decoder, num_layers: int, t_max: int, device=None) -> torch.Tensor:
    """``step_plan_matrix`` over steps ``0..t_max`` (the schedules keep their value past ``t_max``), built once per
    decoder setting, depth, horizon and device. Built on the CPU and copied once: filled step by step on a GPU, each
    step copies a Python index list to the device (a host-device synchronisation), at every training step."""
    key = (type(decoder), decoder.describe(), num_layers, t_max, str(torch.device(device or "cpu")))
    if key not in _STEP_TABLES:
        _STEP_TABLES[key] = step_plan_matrix(decoder, num_layers, t_max, t_max + 1).to(device)
    return _STEP_TABLES[key]


def position_plans(decoders: list, first_generated: torch.Tensor, seq_len: int, num_layers: int, t_max: int,
                   ) -> torch.Tensor:
    """Bool ``[B, S, L]`` run mask for a batch whose row ``b`` follows ``decoders[b]``.

    Args:
        decoders: one decoder per row (rows may follow different plans: a training mixture).
        first_generated: ``[B]`` index of the first generated (target) token in each row; positions before it are
            prompt (all layers), position ``first_generated + k`` is processed at step ``k + 1``.
        seq_len, num_layers, t_max: sequence length S, depth L and the schedule horizon decoding uses.

    One gather from the cached step tables, on ``first_generated``'s device: no per-row or per-step work.
    """
    device = first_generated.device
    distinct: dict[tuple, tuple[int, object]] = {}  # (type, describe()) -> (table index, first decoder with it)
    row_table = [distinct.setdefault((type(d), d.describe()), (len(distinct), d))[0] for d in decoders]
    tables = torch.stack([step_table(d, num_layers, t_max, device) for _, d in distinct.values()])  # [D, t_max+1, L]
    rows = torch.tensor(row_table, device=device)
    pos = torch.arange(seq_len, device=device)
    step = (pos[None, :] - first_generated[:, None] + 1).clamp(0, t_max)  # 0 on prompt positions
    return tables[rows[:, None], step]


class MaskedLayer:
    """Layer ``index`` applied where ``runtime.run[:, :, index]`` is True; elsewhere the hidden state passes through."""

    def __init__(self, index: int, layer, runtime: "PlanRuntime"):
        self.index, self.layer, self.rt = index, layer, runtime

    def __call__(self, hidden_states, *args, **kwargs):
        out = self.layer(hidden_states, *args, **kwargs)
        return torch.where(self.rt.run[:, :, self.index, None], out, hidden_states)


class PlanRuntime:
    """Holds the ``[B, S, L]`` run mask of the forward in progress; plugs into ``runtime.scheduled``."""

    layer_class = MaskedLayer

    def __init__(self, parts: ModelParts, run: torch.Tensor | None = None):
        self.parts, self.num_layers = parts, parts.num_layers
        self.current = [self.layer_class(i, layer, self) for i, layer in enumerate(parts.layers)]
        self.run = run

    def on_forward(self, module, args, kwargs):
        pass

    def finish(self):
        pass


@contextmanager
def planned(model, run: torch.Tensor):
    """Within the block, every forward of ``model`` runs layer ``i`` at position ``(b, s)`` only if
    ``run[b, s, i]``. ``run`` must match the batch and sequence length of those forwards (no KV cache)."""
    parts = model_parts(model)
    if run.shape[-1] != parts.num_layers:
        raise ValueError(f"run mask has {run.shape[-1]} layers but the model has {parts.num_layers}")
    rt = PlanRuntime(parts, run)
    with scheduled(parts, rt):
        yield rt


@dataclass
class PlanMixture:
    """Skip-aware training: each training row follows one decoder's plan, drawn with the given weights.

    Args:
        decoders: the plans to train for (``Vanilla()`` = full depth).
        weights: relative draw probabilities, one per decoder (default: equal).
        t_max: schedule horizon; must be the ``t_max`` decoding will use (the module passes ``max_new_tokens``).
    """

    decoders: list
    weights: list[float]
    t_max: int

    def __post_init__(self):
        if not self.decoders:
            raise ValueError("skip-aware training needs at least one plan; add e.g. {name: vanilla}")
        if len(self.weights) != len(self.decoders) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"plan weights {self.weights} must be {len(self.decoders)} non-negative numbers "
                             "with a positive sum, one per plan")
        if self.t_max < 1:
            raise ValueError(f"t_max={self.t_max} must be >= 1 (the decoding horizon, normally max_new_tokens)")

    def draw(self, rows: int, rng: random.Random) -> list:
        return rng.choices(self.decoders, weights=self.weights, k=rows)

    def run_mask(self, decoders: list, labels: torch.Tensor, num_layers: int) -> torch.Tensor:
        """Run mask for a right-padded training batch whose ``labels`` are -100 on prompt and padding."""
        first = first_target_index(labels)
        return position_plans(decoders, first, labels.shape[1], num_layers, self.t_max)


def first_target_index(labels: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the first label that is not -100 (the first generated token), ``S`` if none."""
    is_target = labels != -100
    S = labels.shape[1]
    idx = torch.where(is_target, torch.arange(S, device=labels.device), S)
    return idx.min(dim=1).values
