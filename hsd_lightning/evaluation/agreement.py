"""Agreement with vanilla: how often a skipping pass already gives the full model's greedy token.

Teacher-forced on a reference continuation (vanilla's own output), one forward runs every layer and one runs the
decoder's per-position plan (``decoding/plans.py``); at every scheduled step (t >= 1, tokens up to and including
EOS) we compare the two argmax tokens. The prompt pass (t = 0) runs every layer under every decoder and is not
counted. With a greedy vanilla continuation the full-depth argmax *is* vanilla's token; with beam search it is the
token vanilla's model prefers at that prefix.
"""
from __future__ import annotations

import torch

from ..decoding.plans import planned, position_plans


def _batch(prompts: list[list[int]], continuations: list[list[int]], pad_id: int):
    """Prompts left-padded to a common length P, continuations right-padded after them: generated token k of
    every row sits at position P + k, the layout of a decoding batch."""
    P = max(map(len, prompts))
    S = P + max(map(len, continuations))
    ids = torch.full((len(prompts), S), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), S, dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, continuations)):
        ids[b, P - len(p):P + len(c)] = torch.tensor(p + c, dtype=torch.long)
        mask[b, P - len(p):P + len(c)] = 1
    return ids, mask, P


@torch.no_grad()
def plan_argmax(model, decoder, prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                t_max: int) -> list[list[int]]:
    """Greedy token of every scheduled step under ``decoder``'s plan, teacher-forced on ``continuations``: row b
    gets ``len(continuations[b]) - 1`` tokens, the predictions of continuation tokens 1, 2, ... (one forward)."""
    device = next(model.parameters()).device
    ids, mask, P = _batch(prompts, continuations, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    first = torch.full((len(prompts),), P, dtype=torch.long, device=device)
    run = position_plans([decoder] * len(prompts), first, ids.shape[1], model.config.num_hidden_layers, t_max)
    with planned(model, run):
        top = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.argmax(-1).cpu()
    # logits at P-1+k predict generated token k; k >= 1 are the scheduled steps
    return [top[b, P:P - 1 + len(c)].tolist() for b, c in enumerate(continuations)]


def agreement_counts(model, decoders: list, prompts: list[list[int]], continuations: list[list[int]], pad_id: int,
                     t_max: int, batch_size: int = 8) -> dict[str, tuple[int, int]]:
    """Per decoder (by ``describe()``): (scheduled steps where its greedy token equals the full model's, steps
    compared). The full-depth pass runs once per batch for all decoders."""
    from ..decoding import Vanilla

    counts = {d.describe(): [0, 0] for d in decoders}
    for start in range(0, len(prompts), batch_size):
        ps, cs = prompts[start:start + batch_size], continuations[start:start + batch_size]
        full = plan_argmax(model, Vanilla(), ps, cs, pad_id, t_max)
        for dec in decoders:
            skip = full if dec.name == "vanilla" else plan_argmax(model, dec, ps, cs, pad_id, t_max)
            c = counts[dec.describe()]
            for f, k in zip(full, skip):
                c[0] += sum(int(x == y) for x, y in zip(f, k))
                c[1] += len(f)
    return {k: (a, t) for k, (a, t) in counts.items()}
