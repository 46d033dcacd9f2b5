"""Where each decoder-only family keeps its parts.

The decoders need five things from a model: the module that owns the layer stack (its forward is where a step
starts), the layer list, the final norm (for CALM's confidence head), and inside one layer the norm in front of
self-attention and the self-attention module (for CALM's state propagation). The LM head is found through
``get_output_embeddings()`` for every family. The names come from the family records in ``hsd_lightning/families.py``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..families import FAMILIES, FamilySpec, family  # noqa: F401  (re-exported)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside a peft wrapper; its LoRA layers are used as peft has them (predict folds
    them into the base weights first: ``CausalLMModule(merge_lora=True)``)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass
class ModelParts:
    lm: nn.Module
    spec: FamilySpec
    backbone: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    head: nn.Module

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_norm(hidden))


def model_parts(model: nn.Module) -> ModelParts:
    lm = unwrap(model)
    model_type = getattr(lm.config, "model_type", type(lm).__name__)
    spec = family(model_type)
    try:
        backbone = _get(lm, spec.backbone)
        layers = getattr(backbone, spec.layers)
        final_norm = getattr(backbone, spec.final_norm) or nn.Identity()
        first = layers[0]
        getattr(first, spec.attn_norm), getattr(first, spec.attn)
    except AttributeError as err:
        raise ValueError(f"{type(lm).__name__} does not have the parts {spec} says ({err}); fix its FamilySpec") from err
    head = lm.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(lm).__name__} has no LM head (get_output_embeddings() is None)")
    return ModelParts(lm, spec, backbone, layers, final_norm, head)


@contextmanager
def counted_forward_passes(model: nn.Module) -> Iterator[list[int]]:
    """Count the forward passes of ``model``'s layer stack while the block runs (``len()`` of the list yielded): the
    prompt pass, which gives the first token, then one per further token; every decoder starts a step there. Beam
    search runs a batch until every beam has ended, so a batch can pay for more passes than its longest kept output."""
    passes: list[int] = []
    hook = model_parts(model).backbone.register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        yield passes
    finally:
        hook.remove()
