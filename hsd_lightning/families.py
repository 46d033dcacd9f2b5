"""One record per decoder-only model family: every fact the package needs about an architecture, in one place.

Looked up by ``config.model_type``. Consumers:
- ``decoding/families.py``: where the layer stack, final norm, LM head and attention live (layer skipping, CALM);
- ``models/module.py``: the default LoRA target modules;
- ``benchmark/flops.py``: whether the MLP is gated (three matrices) or plain (two) in the FLOP model;
- ``models/loading.py``: the tiny random config ``tiny-<name>`` used by tests and smoke runs, if the family has one.
Adding a family is one entry in ``FAMILIES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # LoRA paper: adapt the attention projections


@dataclass(frozen=True)
class FamilySpec:
    backbone: str  # dotted path from the *ForCausalLM to the module holding the layers
    layers: str  # attribute of the backbone: the nn.ModuleList of decoder layers
    final_norm: str  # attribute of the backbone: norm applied before the LM head
    attn_norm: str  # attribute of one layer: norm in front of self-attention
    attn: str  # attribute of one layer: self-attention module (its forward updates the cache)
    lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS  # default LoRA target module names
    gated_mlp: bool = True  # gate/up/down MLP (3 matrices) vs. fc1/fc2 (2): the FLOP model counts them
    tiny: dict | None = field(default=None, hash=False)  # config of ``tiny-<family>`` (GPT-2 vocabulary added)


_LLAMA_LIKE = FamilySpec("model", "layers", "norm", "input_layernorm", "self_attn")
FAMILIES: dict[str, FamilySpec] = {
    "gpt2": FamilySpec("transformer", "h", "ln_f", "ln_1", "attn", lora_targets=("c_attn", "c_proj"),
                       gated_mlp=False, tiny=dict(n_layer=6, n_embd=64, n_head=4, n_positions=1024)),
    "phi": FamilySpec("model", "layers", "final_layernorm", "input_layernorm", "self_attn",
                      lora_targets=("q_proj", "k_proj", "v_proj", "dense"), gated_mlp=False,
                      tiny=dict(num_hidden_layers=6, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                num_key_value_heads=4, partial_rotary_factor=0.5, max_position_embeddings=1024)),
    "gpt_neox": FamilySpec("gpt_neox", "layers", "final_layer_norm", "input_layernorm", "attention",
                           lora_targets=("query_key_value", "dense"), gated_mlp=False),
    "opt": FamilySpec("model.decoder", "layers", "final_layer_norm", "self_attn_layer_norm", "self_attn",
                      lora_targets=("q_proj", "k_proj", "v_proj", "out_proj"), gated_mlp=False),
    "llama": FamilySpec("model", "layers", "norm", "input_layernorm", "self_attn",
                        tiny=dict(num_hidden_layers=6, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=1024)),
    **{name: _LLAMA_LIKE for name in ("mistral", "qwen2", "qwen3", "phi3", "gemma", "granite", "olmo2", "smollm3")},
}


def family(model_type: str) -> FamilySpec:
    spec = FAMILIES.get(model_type)
    if spec is None:
        raise ValueError(f"model family {model_type!r} is not described; supported: {sorted(FAMILIES)} "
                         "(add one FamilySpec entry in hsd_lightning/families.py)")
    return spec


def tiny_configs() -> dict[str, dict]:
    """``tiny-<family>`` -> its config (with ``model_type``), for every family that has one."""
    return {f"tiny-{name}": dict(spec.tiny, model_type=name) for name, spec in FAMILIES.items() if spec.tiny}
