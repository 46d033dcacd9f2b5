"""Skip-aware training with every plan on every row: the prompt runs once, its KV cache is shared by the plans.

Every plan runs the prompt with all layers (step 0), so the prompt's keys, values and the logits that predict the
first target token are the same under every plan. For a summary (a 384-token article, a 25-token target) a plan's
row is ~94 % prompt: running each plan on the whole sequence (``plans.planned`` over ``prompt + target``) pays the
prompt once per plan. Here the prompt runs once, its cache is repeated once per plan
(``DynamicCache.batch_repeat_interleave``, differentiable) and only the targets run per plan, under the per-position
run masks of ``decoding/plans.py`` (position k of the target holds generated token k: step k + 1).

The numbers are the same as the full-sequence forward's: a plan's loss here equals ``planned`` + transformers' own
loss on the same batch (tested), its KL term equals ``CausalLMModule.plan_loss``'s self-distillation term.

Why hand-written: transformers computes one loss per forward; it has no notion of one prompt feeding several
continuations that follow different layer plans.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..decoding.plans import first_target_index, planned, position_plans


def split_prompt_target(batch: dict) -> dict:
    """A right-padded training batch (``prompt + target``, labels -100 on prompt and padding) as a left-padded
    prompt ``[B, P]`` and a right-padded target ``[B, T]``, with masks, positions and per-row lengths."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B, S = ids.shape
    first = first_target_index(labels)  # prompt lengths
    n = (mask.sum(1) - first).clamp(min=0)  # target tokens per row
    if (first < 1).any():
        raise ValueError("a training row has no prompt token before its first label; shared-prompt training needs "
                         "one (the prompt predicts the first target token)")
    P, T = int(first.max()), max(1, int(n.max()))
    j = torch.arange(P, device=ids.device)
    src = j[None, :] - (P - first[:, None])  # left padding: column j holds prompt token j - (P - first)
    p_mask = src >= 0
    prompt = ids.gather(1, src.clamp(min=0)).masked_fill(~p_mask, 0)
    k = torch.arange(T, device=ids.device)
    t_mask = k[None, :] < n[:, None]
    target = ids.gather(1, (first[:, None] + k[None, :]).clamp(max=S - 1)).masked_fill(~t_mask, 0)
    return {"prompt": prompt, "prompt_mask": p_mask.long(), "prompt_pos": src.clamp(min=0),
            "target": target, "target_mask": t_mask.long(), "target_pos": first[:, None] + k[None, :],
            "target_len": n}


def shared_prompt_losses(model, batch: dict, decoders: list, t_max: int, distill_weight: float = 0.0,
                         teacher: int | None = None) -> list[torch.Tensor]:
    """Mean target-token loss of the batch under each of ``decoders`` (a list of plans), one prompt pass for all.

    Args:
        model: a transformers causal LM (or a peft model wrapping one).
        batch: right-padded training batch with ``labels``.
        decoders: the plans; plan ``k``'s loss is what ``planned`` with ``[decoders[k]] * B`` and the model's own
            loss give on the whole batch (mean over the batch's target tokens).
        t_max: schedule horizon (the one decoding will use).
        distill_weight, teacher: with ``distill_weight > 0``, plan k's loss is ``(1 - w) * CE + w * KL(teacher ||
            plan k)`` over the target tokens, the teacher being plan ``decoders[teacher]`` (a full-depth plan),
            its logits taken without gradient.
    """
    s = split_prompt_target(batch)
    B, K, T = s["target"].shape[0], len(decoders), s["target"].shape[1]
    L = model.config.num_hidden_layers
    out = model(input_ids=s["prompt"], attention_mask=s["prompt_mask"], position_ids=s["prompt_pos"],
                use_cache=True, logits_to_keep=1)
    cache = out.cache
    # CE of the first target token: predicted by the last prompt position (full depth, the same for every plan)
    first_ce = F.cross_entropy(out.logits[:, -1].float(), s["target"][:, 0], reduction="none")
    first_ce = (first_ce * (s["target_len"] > 0)).sum()
    cache.batch_repeat_interleave(K)  # row b*K + k: row b under plan k
    rep = lambda x: x.repeat_interleave(K, dim=0)  # noqa: E731
    run = position_plans(list(decoders) * B, torch.zeros(B * K, dtype=torch.long, device=s["target"].device), T, L,
                         t_max)
    with planned(model, run):
        logits = model(input_ids=rep(s["target"]),
                       attention_mask=rep(torch.cat([s["prompt_mask"], s["target_mask"]], dim=1)),
                       position_ids=rep(s["target_pos"]), cache=cache, use_cache=True).logits
    logits = logits.view(B, K, T, -1)[:, :, :-1]  # target position j predicts target token j + 1
    nxt = s["target"][:, 1:]
    valid = s["target_mask"][:, 1:].bool()  # [B, T-1]
    sel = logits.transpose(1, 2)[valid].float()  # [N, K, V]: the N valid (row, position) pairs, every plan
    gold = nxt[valid]  # [N]
    ce = F.cross_entropy(sel.transpose(1, 2), gold[:, None].expand(-1, K), reduction="none").sum(0)  # [K]
    count = s["target_len"].sum().clamp(min=1)
    losses = [(first_ce + ce[k]) / count for k in range(K)]
    if not distill_weight:
        return losses
    if teacher is None:
        raise ValueError("distill_weight > 0 needs a full-depth teacher plan among the decoders")
    logp = sel.log_softmax(-1)
    ref = logp[:, teacher].detach()
    kl = (ref.exp()[:, None] * (ref[:, None] - logp)).sum(-1).sum(0)  # [K]; the first token's KL is 0 (full depth in both)
    w = distill_weight
    return [(1 - w) * losses[k] + w * kl[k] / count for k in range(K)]
