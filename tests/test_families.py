"""One record per model family: every consumer reads FAMILIES, so a new family is one entry."""
import dataclasses

import torch

from hsd_lightning import families
from hsd_lightning.benchmark.flops import step_flops
from hsd_lightning.decoding import Vanilla, build_decoder, model_parts
from hsd_lightning.models.loading import known_names, load_model
from hsd_lightning.models.module import CausalLMModule


def test_a_new_family_entry_reaches_every_consumer(monkeypatch):
    # mistral has no tiny config and a gated MLP; give its record a tiny config, a plain-MLP flag for the FLOP model
    # and a single LoRA target, and every consumer must follow
    spec = dataclasses.replace(families.FAMILIES["mistral"], lora_targets=("q_proj",), gated_mlp=False,
                               tiny=dict(num_hidden_layers=3, hidden_size=32, intermediate_size=64,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    monkeypatch.setitem(families.FAMILIES, "mistral", spec)
    assert "tiny-mistral" in known_names()
    model = load_model("tiny-mistral")  # loading: the tiny config
    assert model.config.model_type == "mistral" and model.config.num_hidden_layers == 3
    parts = model_parts(model)  # decoding: the layer stack
    assert parts.num_layers == 3 and parts.final_norm is model.model.norm
    lora = CausalLMModule("tiny-mistral", finetune="lora", lora_r=2)  # module: the LoRA targets
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, p in lora.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj"}
    plain, _ = step_flops(model.config, context=0)  # FLOP model: 2 MLP matrices
    d, ffn = 32, 64
    assert plain == 2 * d * (32 + 2 * 16) + 2 * 32 * d + 2 * d * ffn * 2
    ids = torch.tensor([[5, 6, 7]])
    out = build_decoder("hsd", s=1, e_max=1).generate(model, ids, max_new_tokens=3, num_beams=1, t_max=3)
    ref = Vanilla().generate(model, ids, max_new_tokens=3, num_beams=1)
    assert out.new_tokens.shape == ref.new_tokens.shape  # the decoders run on it


def test_every_family_record_is_complete():
    for name, spec in families.FAMILIES.items():
        assert spec.backbone and spec.layers and spec.final_norm and spec.attn_norm and spec.attn, name
        assert spec.lora_targets, name
    assert families.FAMILIES["smollm3"].gated_mlp  # the drift the old gated-MLP list had
