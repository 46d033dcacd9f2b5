"""A slow, cache-free reference for the skip decoders (used by the tests; handy when porting to a new family).

At every step the *whole* sequence is recomputed from scratch with a per-position layer plan: prompt positions run
every layer, generated token k-1 (processed at step k) runs the layers the decoder gives step k; a position that
does not run a layer passes its hidden state through unchanged. For CALM the plan of each earlier position is the
exit layer the reference itself chose when that position was last, and a position above its exit keeps its exit
state -- the state its keys/values at those layers are computed from (CALM's state propagation). No KV cache is
involved, so agreement with ``Decoder.generate`` checks the cache handling of the fast path.
"""
from __future__ import annotations

import torch

from . import schedules
from .decoders import CALM, Decoder
from .families import model_parts
from .plans import MaskedLayer, PlanRuntime, step_plan_matrix
from .runtime import scheduled


class _Masked(MaskedLayer):
    """A masked layer that also runs CALM's exit check for the newest position."""

    def __call__(self, hidden_states, *args, **kwargs):
        rt = self.rt
        if rt.calm is None:
            return super().__call__(hidden_states, *args, **kwargs)
        out = self.layer(hidden_states, *args, **kwargs)
        run = rt.run[:, :, self.index].clone()
        run[:, -1] = ~rt.exited  # the newest position runs until it exits
        out = torch.where(run[..., None], out, hidden_states)
        if self.index < rt.num_layers - 1:
            conf = rt.parts.logits(out[:, -1]).float().softmax(-1).topk(2, dim=-1).values
            newly = (conf[:, 0] - conf[:, 1] >= rt.calm[self.index]) & ~rt.exited
            rt.exit_layer[newly] = self.index + 1
            rt.exited |= newly
        return out


class _Runtime(PlanRuntime):
    layer_class = _Masked
    calm = None


@torch.no_grad()
def reference_greedy(model, decoder: Decoder, input_ids, attention_mask=None, max_new_tokens=16, t_max=None):
    """Greedy decoding without cache. Returns (new tokens [B, n], per-step logits [n, B, V], layers [B, n])."""
    parts = model_parts(model)
    L = parts.num_layers
    t_max = t_max or max_new_tokens
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    B, P = input_ids.shape
    rt = _Runtime(parts)
    if isinstance(decoder, CALM):
        rt.calm = [schedules.calm_threshold(i + 1, decoder.d) for i in range(L)]
    seq, mask = input_ids, attention_mask
    prompt_run = torch.ones(B, P, L, dtype=torch.bool)
    done_cols: list[torch.Tensor] = []  # [B, L] layer plan of each generated position already processed
    tokens, logits_all, layers = [], [], []
    calm = rt.calm
    step_plans = None if calm is not None else step_plan_matrix(decoder, L, t_max, max_new_tokens + 1)
    with scheduled(parts, rt):
        for t in range(max_new_tokens):
            rt.calm = calm if t >= 1 else None  # the prompt pass runs every layer
            if t == 0:
                rt.run = prompt_run
            else:
                cur = torch.ones(B, L, dtype=torch.bool)
                if calm is None:
                    cur[:] = step_plans[t]
                rt.run = torch.cat([prompt_run, torch.stack(done_cols + [cur], dim=1)], dim=1)
            rt.exited = torch.zeros(B, dtype=torch.bool)
            rt.exit_layer = torch.full((B,), L, dtype=torch.long)
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            out = parts.lm(input_ids=seq, attention_mask=mask, position_ids=pos, use_cache=False)
            if t == 0:
                layers.append(torch.full((B,), L, dtype=torch.long))
            else:
                if calm is not None:
                    cur = torch.arange(L)[None, :] < rt.exit_layer[:, None]
                done_cols.append(cur)
                layers.append(cur.sum(-1))
            step_logits = out.logits[:, -1].float()
            nxt = step_logits.argmax(-1)
            tokens.append(nxt)
            logits_all.append(step_logits)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype)], dim=1)
    return torch.stack(tokens, 1), torch.stack(logits_all, 0), torch.stack(layers, 1)
