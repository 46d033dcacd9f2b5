"""The decoders: vanilla, SkipDecode, HSD and CALM behind one API (``build_decoder`` + ``Decoder.generate``).

Search itself (greedy, beams, sampling, logits processors, stopping) is transformers' ``generate``; the decoders
only decide which layers run at each step (``runtime.py`` does the plumbing).
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from . import schedules
from .families import ModelParts, model_parts
from .runtime import CalmLayer, CalmState, SkipCache, StepRuntime, kv_bytes, scheduled


@dataclass
class DecodeOutput:
    sequences: torch.LongTensor  # [rows, prompt + new], as transformers' generate
    layers_per_token: torch.LongTensor  # [rows, new]; 0 after EOS / padding
    avg_layers: float  # mean layers per scheduled pass (t >= 1, real tokens): the paper's "Avg. Layer"
    prompt_length: int
    kv_cache_bytes: int = 0
    raw: Any = field(default=None, repr=False)  # the GenerateOutput of transformers (scores/logits if asked)
    # layers the batch actually ran per scheduled step, averaged over steps: the deepest of all rows (beams and
    # finished rows included), since CALM keeps running layers until every row has exited; for SkipDecode/HSD the
    # mean schedule length
    executed_layers: float = math.nan

    @property
    def new_tokens(self) -> torch.LongTensor:
        return self.sequences[:, self.prompt_length:]


class Decoder:
    """Base class. Subclasses define the per-step layer plan."""

    name = "decoder"
    # True when rows of one step run different depths (CALM's per-row exits): with beams, the recorded depths are
    # then traced through transformers' beam reorders (beam_indices); static plans run one depth per step
    per_row_depth = False

    # ---- schedule -------------------------------------------------------------------------------------------
    def layers_for_step(self, t: int, num_layers: int, t_max: int) -> list[int]:
        """Sorted 1-based indices of the layers run for generated token ``t`` (schedule decoders)."""
        raise NotImplementedError(f"{self.name} has no static schedule")

    def check_depth(self, num_layers: int) -> None:
        """Raise before any compute if the decoder's settings do not fit a model of this depth."""

    def describe(self) -> str:
        return self.name

    def slug(self) -> str:
        """``describe()`` as a plain file name (a run folder): ``hsd(s=1,min=0,max=10)`` -> ``hsd_s1_min0_max10``."""
        return decoder_slug(self.describe())

    def settings(self) -> dict:
        return {}

    # ---- decoding -------------------------------------------------------------------------------------------
    def _runtime(self, parts: ModelParts, t_max: int) -> StepRuntime:
        layers = list(parts.layers)
        L = len(layers)
        plans = [layers] + [[layers[i - 1] for i in self.layers_for_step(t, L, t_max)] for t in range(1, t_max + 1)]
        counts = [len(p) for p in plans]
        return StepRuntime(parts, plan=lambda t: plans[min(t, t_max)], layers_used=lambda t: counts[min(t, t_max)])

    @torch.no_grad()
    def generate(self, model: nn.Module, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 64, num_beams: int = 1, do_sample: bool = False, t_max: int | None = None,
                 cache: DynamicCache | None = None, share_prompt: bool = True, **generation_kwargs) -> DecodeOutput:
        """Decode with this decoder's layer plan. ``cache``: optional ``DynamicCache`` already holding the first
        tokens of ``input_ids`` for every row (``batch * num_beams`` rows, beams of a prompt adjacent), e.g. a
        prompt prefix computed once; it is extended in place, exactly as transformers' ``generate`` does with a
        user cache. The first forward pass (all layers) covers the prompt tokens the cache does not hold.

        ``share_prompt`` (beam search without a ``cache``): the prompt but its last token runs once per input and its
        K/V are copied to the beams, instead of once per beam as in ``generate`` -- the beams of a prompt hold the
        same prompt, so the result is the same (up to float rounding of the GEMM shapes) for 1/num_beams of the
        prompt pass, a cost every decoder pays alike (at beam 4 on E2E it was a third of vanilla's time)."""
        if not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams={num_beams!r} must be an integer >= 1")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be >= 1")
        parts = model_parts(model)
        self.check_depth(parts.num_layers)
        t_max = t_max or max_new_tokens
        runtime = self._runtime(parts, t_max)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if cache is None and share_prompt and num_beams > 1 and input_ids.shape[1] > 1:
            cache = prefill_prompt(parts, input_ids[:, :-1], attention_mask[:, :-1], num_beams)
        cache = _as_skip_cache(cache, input_ids, num_beams, parts)
        trace_beams = self.per_row_depth and num_beams > 1
        if trace_beams:
            generation_kwargs["output_scores"] = True  # transformers returns beam_indices only then
        with scheduled(parts, runtime):
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                 num_beams=num_beams, do_sample=do_sample, cache=cache,
                                 return_dict_in_generate=True, **generation_kwargs)
        cache.flush_reorders()
        prompt_len = input_ids.shape[1]
        new = out.sequences[:, prompt_len:]
        layers = self._layers_matrix(runtime.history, new, parts.num_layers,
                                     out.beam_indices if trace_beams else None)
        real = _real_tokens(new, _eos_ids(model, generation_kwargs))
        layers = layers * real
        sched = real[:, 1:]
        avg = float(layers[:, 1:][sched].float().mean()) if sched.any() else math.nan
        per_step = [h if isinstance(h, int) else int(h.max()) for h in runtime.history]
        executed = sum(per_step) / len(per_step) if per_step else math.nan
        return DecodeOutput(out.sequences, layers, avg, prompt_len, kv_bytes(cache), out, executed)

    @staticmethod
    def _layers_matrix(history: list, new: torch.Tensor, num_layers: int, beam_indices) -> torch.LongTensor:
        rows, n = new.shape
        cols = [torch.full((rows,), num_layers, dtype=torch.long, device=new.device)]
        for t in range(1, n):
            h = history[t - 1]
            if isinstance(h, int):
                cols.append(torch.full((rows,), h, dtype=torch.long, device=new.device))
            elif beam_indices is not None:
                src = beam_indices[:, t].clamp(min=0).to(h.device)
                cols.append(h[src])
            else:
                cols.append(h)
        return torch.stack(cols, dim=1)


def prefill_prompt(parts: ModelParts, input_ids: torch.LongTensor, attention_mask: torch.Tensor,
                   repeats: int) -> SkipCache:
    """The prompt's K/V at every layer, computed once per input and repeated ``repeats`` times per row (beams of a
    prompt adjacent, as transformers expands them). Positions are those ``generate`` gives a padded prompt (the
    mask's running count), so continuing from this cache sees what one pass over the whole prompt would.
    transformers' beam search cannot do this itself: it expands the inputs to ``batch * num_beams`` rows before its
    first forward pass."""
    cache = SkipCache(config=parts.lm.config.get_text_config(decoder=True))
    kwargs = {}
    if "position_ids" in inspect.signature(parts.lm.forward).parameters:
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    parts.lm(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True, logits_to_keep=1, **kwargs)
    cache.batch_repeat_interleave(repeats)
    return cache


def _as_skip_cache(cache, input_ids: torch.Tensor, num_beams: int, parts: ModelParts) -> SkipCache:
    if cache is None:
        return SkipCache(config=parts.lm.config.get_text_config(decoder=True))
    if type(cache) not in (DynamicCache, SkipCache):
        raise TypeError(f"cache={type(cache).__name__}: layer skipping needs a DynamicCache (or SkipCache), "
                        "whose per-layer lengths may differ; pass cache=None or a DynamicCache")
    rows, held = input_ids.shape[0] * num_beams, cache.get_seq_length()
    if held and cache.layers[-1].keys.shape[0] != rows:
        raise ValueError(f"cache holds {cache.layers[-1].keys.shape[0]} rows but batch {input_ids.shape[0]} x "
                         f"num_beams {num_beams} = {rows}; prefill input_ids.repeat_interleave(num_beams, 0)")
    if held >= input_ids.shape[1]:
        raise ValueError(f"cache already holds {held} tokens but input_ids has {input_ids.shape[1]}; the cache must "
                         "hold a strict prefix of the prompt (prefill input_ids[:, :-1])")
    lengths = {i: layer.get_seq_length() for i, layer in enumerate(cache.layers)
               if layer.is_initialized and not cache.is_sliding[i]}
    if len(set(lengths.values())) > 1:  # e.g. left by a skip decoder: a skipped layer lacks the tokens it skipped
        short = min(lengths, key=lengths.get)
        raise ValueError(f"cache layer {short} holds {lengths[short]} tokens but layer {len(cache.layers) - 1} holds "
                         f"{held}; continue only from a cache whose layers all saw every token (prefill with all layers)")
    # The user's cache is re-classed in place rather than copied: the prompt's K/V may be gigabytes, and transformers
    # extends a user cache in place too. SkipCache only adds behaviour and reorder bookkeeping.
    if type(cache) is DynamicCache:
        cache.__class__ = SkipCache
        cache.init_bookkeeping()
    return cache


def _eos_ids(model: nn.Module, kwargs: dict) -> list[int]:
    eos = kwargs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _real_tokens(new: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """True for generated tokens up to and including the first EOS of each row."""
    if not eos_ids:
        return torch.ones_like(new, dtype=torch.bool)
    is_eos = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # EOS seen strictly before this position
    return before == 0


class Vanilla(Decoder):
    """All layers for every token (the baseline)."""

    name = "vanilla"

    def layers_for_step(self, t, num_layers, t_max):
        return list(range(1, num_layers + 1))


def _check_exits(e_min: int, e_max: int) -> None:
    if not (isinstance(e_min, int) and isinstance(e_max, int)) or e_min < 0:
        raise ValueError(f"e_min={e_min!r}, e_max={e_max!r}: exit budgets must be integers >= 0")
    if e_min > e_max:
        raise ValueError(f"e_min={e_min} > e_max={e_max}: the exit budget falls from e_max to e_min, so e_min <= e_max "
                         "(swap them)")


def _check_always(always_run) -> tuple[int, ...]:
    always = tuple(always_run or ())
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 1 for i in always):
        raise ValueError(f"always_run={list(always)!r}: give 1-based layer indices >= 1, e.g. [1] to keep layer 1")
    return tuple(sorted(set(always)))


class SkipDecode(Decoder):
    """SkipDecode (eq. 4): the top n(t)+1 layers, n falling linearly from E_max to E_min over t_max tokens.

    ``always_run`` (1-based layer indices, default none) adds layers that run at every step on top of the schedule,
    e.g. ``[1]``: eq. 5 never runs layer 1 for generated tokens, and on a fine-tuned SmolLM2 running it too was a
    large quality lever. Plans still only shrink as t grows, so the KV-cache argument holds unchanged.
    """

    name = "skipdecode"

    def __init__(self, e_min: int = 10, e_max: int = 20, always_run: list[int] | None = None):
        _check_exits(e_min, e_max)
        self.e_min, self.e_max = e_min, e_max
        self.always_run = _check_always(always_run)

    def check_depth(self, num_layers):
        if self.e_max > num_layers:
            raise ValueError(f"e_max={self.e_max} exceeds the model's {num_layers} layers; "
                             f"use e_max <= {num_layers} (e_max counts layers of the model decoded)")
        if self.always_run and self.always_run[-1] > num_layers:
            raise ValueError(f"always_run={list(self.always_run)} names layer {self.always_run[-1]} but the model has "
                             f"{num_layers} layers; use indices 1..{num_layers}")

    def _schedule(self, t, num_layers, t_max) -> list[int]:
        return schedules.skipdecode_layers(t, num_layers, t_max, self.e_min, self.e_max)

    def layers_for_step(self, t, num_layers, t_max):
        self.check_depth(num_layers)
        layers = self._schedule(t, num_layers, t_max)
        return sorted(set(layers) | set(self.always_run)) if self.always_run else layers

    def _always_suffix(self) -> str:
        return f",always={'+'.join(map(str, self.always_run))}" if self.always_run else ""

    def describe(self):
        return f"skipdecode(min={self.e_min},max={self.e_max}{self._always_suffix()})"

    def settings(self):
        out = {"e_min": self.e_min, "e_max": self.e_max}
        return {**out, "always_run": list(self.always_run)} if self.always_run else out


class HSD(SkipDecode):
    """Hierarchical Skip Decoding: eq. 4 united with the hierarchical set of eq. 5 (and ``always_run``, if any)."""

    name = "hsd"

    def __init__(self, s: int = 1, e_min: int = 0, e_max: int = 12, always_run: list[int] | None = None):
        super().__init__(e_min, e_max, always_run)
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            why = "s=0 runs every layer (no skipping)" if s == 0 else "the hierarchical stride must be an integer >= 1"
            raise ValueError(f"s={s!r}: {why}; use s >= 1 (s=1 runs every 2nd layer), or --decoder vanilla for all")
        self.s = s

    def _schedule(self, t, num_layers, t_max):
        return schedules.hsd_layers(t, num_layers, t_max, self.s, self.e_min, self.e_max)

    def describe(self):
        return f"hsd(s={self.s},min={self.e_min},max={self.e_max}{self._always_suffix()})"

    def settings(self):
        return {"s": self.s, **super().settings()}


class CALM(Decoder):
    """CALM with the softmax-response confidence and the decreasing threshold clamp(1 - d*i, 0, 1)."""

    per_row_depth = True

    name = "calm"

    def __init__(self, d: float = 0.02):
        if not isinstance(d, (int, float)) or not (0 < d <= 1):
            raise ValueError(f"d={d!r}: CALM's threshold decay must lie in (0, 1] (the paper uses 0.02 and 0.005)")
        self.d = float(d)

    def _runtime(self, parts, t_max):
        L = parts.num_layers
        state = CalmState(parts, [schedules.calm_threshold(i + 1, self.d) for i in range(L)])
        wrapped = [CalmLayer(i, layer, state) for i, layer in enumerate(parts.layers)]
        return StepRuntime(parts, plan=lambda t: wrapped, layers_used=lambda t: state.exit_layer.clone())

    def describe(self):
        return f"calm(d={self.d:g})"

    def settings(self):
        return {"d": self.d}


DECODERS: dict[str, type[Decoder]] = {"vanilla": Vanilla, "skipdecode": SkipDecode, "hsd": HSD, "calm": CALM}


def decoder_slug(description: str) -> str:
    """A decoder's description as a plain file name: letters, digits, dots and underscores only."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", description.replace("=", "").replace("+", "-")).strip("_")


def build_decoder(name: str, **kwargs) -> Decoder:
    """``build_decoder("hsd", s=1, e_min=0, e_max=12)``; names: vanilla, skipdecode, hsd, calm."""
    cls = DECODERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown decoder {name!r}; choose one of {sorted(DECODERS)}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        valid = list(inspect.signature(cls.__init__).parameters)[1:]
        raise ValueError(f"decoder {name!r} got arguments {sorted(kwargs)}; it takes {valid}") from err


def build_paper_decoder(name: str, settings: dict, num_layers: int, paper_depth: int = 36) -> Decoder:
    """A decoder from the paper's settings, whose exit budgets (``e_*``) are given for its 36-layer GPT-2 large:
    they are scaled to ``num_layers`` (``schedules.scale_exit``: HSD E_max 12 becomes 10 on 30 layers). Only the
    paper's built-in rows go through here; an ``e_max`` a user gives is always layers of the model decoded."""
    return build_decoder(name, **{k: schedules.scale_exit(v, num_layers, paper_depth) if k.startswith("e_") else v
                                  for k, v in settings.items()})
