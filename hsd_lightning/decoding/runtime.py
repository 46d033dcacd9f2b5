"""Run a transformers causal LM with a per-step layer plan, inside transformers' own ``generate``.

How it plugs in (why it is hand-written: transformers has no notion of skipping layers):

* For the duration of one ``generate`` call the backbone's layer ``ModuleList`` is swapped for a
  :class:`ScheduledLayers` holding the very same modules (parameters and ``state_dict`` keys unchanged). The
  backbone's forward iterates ``self.layers[:num_hidden_layers]`` (or ``self.h``); our list answers that iteration
  with the layers of the *current step only*, so a skipped layer costs nothing -- it is not even visited.
* A forward pre-hook on the backbone advances the step counter: call 0 is the prompt pass (all layers), call t
  processes token t-1 and produces token t.
* :class:`SkipCache` is transformers' ``DynamicCache`` with one change: sequence length and mask size are read from
  the longest layer instead of layer 0. A layer that stopped running (SkipDecode/HSD skip the *bottom* layers)
  falls behind and would otherwise shrink every mask and position. Every layer that runs has seen every token
  (schedules only shrink, CALM propagates state), so the longest layer is the true length.
* CALM: each layer is wrapped by :class:`CalmLayer`; rows that exited keep their hidden state frozen, and once
  every row has exited the remaining layers only write their K/V from the exited state (state propagation): the
  layer's attention is entered, writes K/V to the cache, and is stopped right after the cache update
  (``SkipCache.stop_after_update``), so no attention, MLP or output projection is computed.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import DynamicCache

from .families import ModelParts


class _KVWritten(Exception):
    """Raised by SkipCache right after storing K/V when only the K/V of a layer were wanted."""


class SkipCache(DynamicCache):
    """DynamicCache whose lengths come from the top layer, with beam reorders deferred for layers that did not run.

    Beam search reorders every layer's K/V after every step (an ``index_select`` copy of the whole cache). A layer
    that SkipDecode/HSD dropped never reads its K/V again, so copying it each step is pure waste -- with a 900-token
    prompt and 4 beams it cost SmolLM2 ~10% of a skip decoder's step. Layers that ran since the last reorder are
    reordered at once, exactly as ``DynamicCache`` does (same copies, same memory pattern as plain ``generate``);
    for the others a reorder only composes the beam indices (a few integers), applied when the layer next runs
    (``update``), and ``flush_reorders`` brings every layer up to date at the end of ``generate``, so the cache
    handed back is exactly what eager reordering gives. (transformers' quantized cache layers also defer reorders.)
    """

    stop_after_update = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_bookkeeping()

    def init_bookkeeping(self) -> None:
        """Reorder bookkeeping (also called on a user's DynamicCache re-classed to SkipCache)."""
        self._pending: dict[int, torch.Tensor] = {}  # layer -> beam indices not yet applied to its K/V
        self._touched: set[int] = set()  # layers updated since the last reorder

    def reorder_cache(self, beam_idx: torch.LongTensor):
        deferred = None  # transformers owns beam_idx: layers that start a chain share one clone of it
        composed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(old) -> (old kept alive, old[beam_idx])
        pending = self._pending
        for i, layer in enumerate(self.layers):
            if not layer.is_initialized:
                continue
            old = pending.get(i)
            if old is None:
                if i in self._touched:
                    layer.reorder_cache(beam_idx)
                else:
                    deferred = beam_idx.clone() if deferred is None else deferred
                    pending[i] = deferred
                continue
            if id(old) not in composed:  # layers dropped at the same step share one chain: compose it once
                composed[id(old)] = (old, old.index_select(0, beam_idx.to(old.device)))
            pending[i] = composed[id(old)][1]
        self._touched.clear()

    def _apply_pending(self, layer_idx: int) -> None:
        idx = self._pending.pop(layer_idx, None)
        if idx is not None:
            self.layers[layer_idx].reorder_cache(idx)

    def flush_reorders(self) -> None:
        for i in list(self._pending):
            self._apply_pending(i)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self._pending:
            self._apply_pending(layer_idx)
        self._touched.add(layer_idx)
        out = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if self.stop_after_update:
            raise _KVWritten
        return out

    def _longest(self, layer_idx: int) -> int:
        """Index of a layer that has seen every token: the top layer, which runs at every step under every decoder
        here (SkipDecode/HSD always keep layer L; CALM propagates into it). Hybrid caches: scan same-type layers."""
        if not self.layers:
            return layer_idx
        if not any(self.is_sliding):
            return len(self.layers) - 1
        sliding = self.is_sliding[layer_idx] if layer_idx < len(self.layers) else False
        lengths = [(layer.get_seq_length() if layer.is_initialized else -1) if self.is_sliding[i] == sliding else -2
                   for i, layer in enumerate(self.layers)]
        return max(range(len(lengths)), key=lengths.__getitem__)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return super().get_seq_length(self._longest(layer_idx))

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return super().get_mask_sizes(query_length, self._longest(layer_idx))



def kv_bytes(cache: DynamicCache) -> int:
    """Bytes of K/V held by a cache (all layers, whatever their lengths)."""
    return sum(t.numel() * t.element_size() for layer in cache.layers if layer.is_initialized
               for t in (layer.keys, layer.values))


class ScheduledLayers(nn.ModuleList):
    """The original layers, iterated as the current step's plan says."""

    def __init__(self, original: nn.ModuleList, runtime: "StepRuntime"):
        super().__init__(list(original))
        self._runtime = runtime

    def __iter__(self):
        return iter(self._runtime.current)

    def __getitem__(self, idx):
        if isinstance(idx, slice) and idx.indices(len(self)) == (0, len(self), 1):
            return self._runtime.current
        return super().__getitem__(idx)


class StepRuntime:
    """Per-``generate`` state: step counter, the callables to run at this step, layers used per step."""

    def __init__(self, parts: ModelParts, plan: Callable[[int], Sequence[Callable]], layers_used: Callable[[int], object]):
        self.parts = parts
        self.all_layers = list(parts.layers)
        self._plan = plan
        self._layers_used = layers_used
        self.step = -1
        self.current: Sequence[Callable] = self.all_layers
        self.history: list = []  # per scheduled step (t >= 1): int (same for all rows) or LongTensor [rows]

    def on_forward(self, module, args, kwargs):
        if self.step >= 1:
            self.history.append(self._layers_used(self.step))
        self.step += 1
        self.current = self.all_layers if self.step == 0 else self._plan(self.step)

    def finish(self):
        if self.step >= 1:
            self.history.append(self._layers_used(self.step))


@contextmanager
def scheduled(parts: ModelParts, runtime: StepRuntime):
    """Swap the layer list for the scheduled one and count steps, for the duration of the block."""
    parent, name = parts.backbone, parts.spec.layers
    original = getattr(parent, name)
    setattr(parent, name, ScheduledLayers(original, runtime))
    handle = parent.register_forward_pre_hook(runtime.on_forward, with_kwargs=True)
    try:
        yield runtime
    finally:
        handle.remove()
        setattr(parent, name, original)
    runtime.finish()


class CalmState:
    """CALM's per-step exit state, shared by the CalmLayer wrappers of one generate call."""

    def __init__(self, parts: ModelParts, thresholds: list[float]):
        self.parts = parts
        self.thresholds = thresholds  # thresholds[i] for 0-based layer i (after which the check runs)
        self.num_layers = parts.num_layers
        self.exit_layer: torch.Tensor | None = None
        self.reset(None)

    def reset(self, rows: int | None, device=None):
        self.exited = None if rows is None else torch.zeros(rows, dtype=torch.bool, device=device)
        self.exit_layer = None if rows is None else torch.full((rows,), self.num_layers, dtype=torch.long, device=device)
        self.n_exited = 0
        self.all_exited = False

    def confidence(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """CALM's softmax response: gap between the two largest next-token probabilities."""
        probs = torch.softmax(self.parts.logits(hidden_last).float(), dim=-1)
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]


class CalmLayer:
    """One decoder layer under CALM (generated tokens only; the prompt pass uses the plain layers)."""

    _arg_names: dict[type, list[str]] = {}

    def __init__(self, index: int, layer: nn.Module, state: CalmState):
        self.index, self.layer, self.state = index, layer, state
        self.attn_norm = getattr(layer, state.parts.spec.attn_norm)
        self.attn = getattr(layer, state.parts.spec.attn)

    def __call__(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        st = self.state
        if self.index == 0:
            st.reset(hidden_states.shape[0], hidden_states.device)
        if st.all_exited:
            self._propagate(hidden_states, args, kwargs)
            return hidden_states
        out = self.layer(hidden_states, *args, **kwargs)
        if st.n_exited:  # exited rows keep their state; this layer's K/V for them came from that state
            out = torch.where(st.exited[:, None, None], hidden_states, out)
        if self.index < st.num_layers - 1:
            conf = st.confidence(out[:, -1])
            newly = (conf >= st.thresholds[self.index]) & ~st.exited
            st.exited |= newly
            st.exit_layer = torch.where(newly, self.index + 1, st.exit_layer)
            st.n_exited = int(st.exited.sum())  # the one host sync per layer that early exit needs
            st.all_exited = st.n_exited == st.exited.numel()
        return out

    def _propagate(self, hidden_states, args, kwargs):
        """State propagation: write this layer's K/V computed from the exited hidden state, nothing else."""
        if args:
            names = self._arg_names.get(type(self.layer))
            if names is None:
                names = list(inspect.signature(self.layer.forward).parameters)[1:]
                self._arg_names[type(self.layer)] = names
            kwargs = {**dict(zip(names, args)), **kwargs}
        cache = kwargs.get("cache")
        if not isinstance(cache, SkipCache):
            raise RuntimeError("CALM state propagation needs the SkipCache created by the decoder")
        cache.stop_after_update = True
        try:
            self.attn(hidden_states=self.attn_norm(hidden_states), **kwargs)
        except _KVWritten:
            pass
        else:
            raise RuntimeError(f"{type(self.attn).__name__} did not write to the cache; CALM cannot propagate state")
        finally:
            cache.stop_after_update = False
