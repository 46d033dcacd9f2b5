"""Where each decoder-only family keeps its parts.

The decoders need five things from a model: the module that owns the layer stack (its forward is where a step
starts), the layer list, the final norm (for CALM's confidence head), and inside one layer the norm in front of
self-attention and the self-attention module (for CALM's state propagation). The LM head is found through
``get_output_embeddings()`` for every family. A new family is one line here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FamilySpec:
    backbone: str  # dotted path from the *ForCausalLM to the module holding the layers
    layers: str  # attribute of the backbone: the nn.ModuleList of decoder layers
    final_norm: str  # attribute of the backbone: norm applied before the LM head
    attn_norm: str  # attribute of one layer: norm in front of self-attention
    attn: str  # attribute of one layer: self-attention module (its forward updates the cache)


_LLAMA_LIKE = FamilySpec("model", "layers", "norm", "input_layernorm", "self_attn")
FAMILIES: dict[str, FamilySpec] = {
    "gpt2": FamilySpec("transformer", "h", "ln_f", "ln_1", "attn"),
    "phi": FamilySpec("model", "layers", "final_layernorm", "input_layernorm", "self_attn"),
    "gpt_neox": FamilySpec("gpt_neox", "layers", "final_layer_norm", "input_layernorm", "attention"),
    "opt": FamilySpec("model.decoder", "layers", "final_layer_norm", "self_attn_layer_norm", "self_attn"),
    **{name: _LLAMA_LIKE for name in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "granite", "olmo2",
                                      "smollm3")},
}


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside a peft wrapper (LoRA stays unmerged; its layers are used as they are)."""
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
    spec = FAMILIES.get(model_type)
    if spec is None:
        raise ValueError(
            f"model family {model_type!r} is not described for layer skipping; supported: {sorted(FAMILIES)} "
            "(add one FamilySpec line in hsd_lightning/decoding/families.py)"
        )
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
