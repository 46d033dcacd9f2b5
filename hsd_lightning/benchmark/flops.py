"""FLOP model of one decoding step, from the model's shapes, for the *ideal* speed-up of skipping layers."""
from __future__ import annotations

from ..families import family


def step_flops(config, context: int) -> tuple[float, float]:
    """(c_layer, c_head): FLOPs of one decoder layer and of the LM head for one token at a given context length.

    A layer = Q/K/V/O projections + attention over ``context`` keys (QK^T and AV) + MLP (gated MLPs have three
    matrices, GPT-2/Phi two). Multiply-add = 2 FLOPs. Norms, biases and activations are ignored (< 1%).
    """
    cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    ffn = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    gated = family(cfg.model_type).gated_mlp
    q, kv = heads * head_dim, kv_heads * head_dim
    proj = 2 * d * (q + 2 * kv) + 2 * q * d
    attn = 2 * 2 * context * q
    mlp = 2 * d * ffn * (3 if gated else 2)
    head = 2 * d * cfg.vocab_size
    return float(proj + attn + mlp), float(head)


def ideal_speedup(config, num_layers: int, avg_layers: float, prompt_len: int, new_tokens: int) -> float:
    """(L*c_layer + c_head) / (avg_layers*c_layer + c_head) at the mean decode context."""
    c_layer, c_head = step_flops(config, prompt_len + new_tokens // 2)
    return (num_layers * c_layer + c_head) / (avg_layers * c_layer + c_head)


def calm_ideal_speedup(config, num_layers: int, executed_layers: float, context: int) -> float:
    """What CALM's own compute allows: per step the batch runs ``executed_layers`` layers (its deepest row), and
    after each of them except the last layer the confidence check applies the LM head (softmax response), then the
    final LM head. K/V propagation for the skipped layers (two projections) is ignored."""
    c_layer, c_head = step_flops(config, context)
    checks = min(executed_layers, num_layers - 1)
    return (num_layers * c_layer + c_head) / (executed_layers * c_layer + checks * c_head + c_head)
