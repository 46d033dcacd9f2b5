"""Bad input gets one clear line naming the value and the fix (the README's bad-input table, one test per row)."""
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from hsd_lightning.cli import CONFIG_DIR, cli_main
from hsd_lightning.data import E2EDataModule
from hsd_lightning.data.readers import SPECS, read_pairs
from hsd_lightning.models.module import CausalLMModule


def _e2e_root(tmp_path: Path, fixture_dir: Path, test_csv: bytes | None = None) -> Path:
    root = tmp_path / "data"
    shutil.copytree(fixture_dir / "e2e", root / "e2e")
    if test_csv is not None:
        (root / "e2e" / "testset_w_refs.csv").write_bytes(test_csv)
    return root


def _warned(fn) -> str:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return "\n".join(str(x.message) for x in w)


def _args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["predict", "--model.model_name_or_path", "tiny-gpt2", "--model.adapter", "null", "--model.finetune",
            "full", "--data.init_args.data_dir", str(data), "--data.init_args.max_eval_samples", "2",
            "--model.max_new_tokens", "2", "--model.num_beams", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks.bertscore=false", f"--trainer.callbacks.output_dir={tmp_path / 'out'}", *extra]


def test_empty_source_and_empty_reference_rows_are_skipped_by_row(tmp_path, fixture_dir):
    csv = b'mr,ref\n"name[A], food[Thai]",A serves Thai food.\n"   ",Nothing to describe.\n"name[B]",\n'
    root = _e2e_root(tmp_path, fixture_dir, csv)
    msg = _warned(lambda: read_pairs(SPECS["e2e"], root, "test"))
    assert ("e2e/testset_w_refs.csv: skipped 2 malformed rows: 1 with an empty source (row 2); 1 with an empty "
            "reference (row 3); fix or remove them in the file") in msg
    assert read_pairs(SPECS["e2e"], root, "test") == [("name[A], food[Thai]", "A serves Thai food.")]


def test_invalid_utf8_names_the_line_and_control_characters_are_replaced(tmp_path, fixture_dir):
    root = _e2e_root(tmp_path, fixture_dir, b'mr,ref\n"name[A]",A is fine.\n"name[Caf\xe9]",B.\n')
    with pytest.raises(ValueError, match=r"testset_w_refs.csv: line 3 is not valid UTF-8 \(byte 0xe9\); re-save the "
                                         r"file as UTF-8"):
        read_pairs(SPECS["e2e"], root, "test")
    root = _e2e_root(tmp_path / "2", fixture_dir, b'mr,ref\n"name[A\x07]",A\x00 is fine.\n')
    msg = _warned(lambda: read_pairs(SPECS["e2e"], root, "test"))
    assert "replaced control characters by spaces in 1 rows (first: row 1)" in msg
    assert read_pairs(SPECS["e2e"], root, "test") == [("name[A ]", "A  is fine.")]


def test_template_without_source_placeholder():
    with pytest.raises(ValueError, match=r"prompt_template 'Describe:' has no '\{source\}' placeholder; add one"):
        E2EDataModule(prompt_template="Describe:")


@pytest.mark.parametrize("kwargs,msg", [
    ({"max_new_tokens": 0}, r"max_new_tokens=0 must be an integer >= 1"),
    ({"num_beams": 0}, r"num_beams=0 must be an integer >= 1 \(1 = greedy\)"),
])
def test_generation_settings_out_of_range(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        CausalLMModule("tiny-gpt2", **kwargs)


def test_source_longer_than_the_context(tmp_path, fixture_dir):
    with pytest.raises(ValueError, match=r"prompts of up to 1035 tokens \(data.max_source_tokens=1020 \+ template\) "
                                         r"\+ max_new_tokens=2 exceed the model's context of 1024 tokens; set "
                                         r"data.init_args.max_source_tokens to at most 1007"):
        cli_main(_args(tmp_path, fixture_dir, "--data.init_args.max_source_tokens", "1020"))
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_checkpoint_of_another_model(tmp_path):
    state = {f"model.{k}": v for k, v in CausalLMModule("tiny-gpt2").model.state_dict().items()}
    llama = CausalLMModule("tiny-llama")
    with pytest.raises(ValueError, match=r"checkpoint does not fit this model: \d+ weights missing .* load it with the "
                                         r"model it was trained from \(not 'tiny-llama'\)"):
        llama.load_state_dict(state)
    lora = CausalLMModule("tiny-llama", finetune="lora", lora_r=4)
    with pytest.raises(ValueError, match=r"checkpoint does not fit this LoRA model: \d+ adapter weights missing"):
        lora.load_state_dict({k: v for k, v in state.items() if "attn" in k})
    with pytest.raises(ValueError, match=r"adapter 'smollm2-e2e-skipaware-4108-onpolicy' does not fit model 'tiny-gpt2' "
                                         r"\(GPT2LMHeadModel\): .*use the model it was trained on or "
                                         r"--model.adapter null"):
        CausalLMModule("tiny-gpt2", finetune="lora", adapter="smollm2-e2e-skipaware-4108-onpolicy")


def test_short_and_long_config_flags_are_the_same(capsys):
    cfg = str(CONFIG_DIR / "gpt2_e2e.yaml")
    printed = []
    for flag in ("-c", "--config"):
        with pytest.raises(SystemExit):
            cli_main(["fit", flag, cfg, "--print_config"])
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "gpt2-large" in printed[0]


def test_decoder_resolution_rule(tmp_path, fixture_dir):
    """--decoder > model.decoder (YAML or flag) > the checkpoint's decoder > vanilla."""
    module = CausalLMModule("tiny-gpt2")
    ckpt = {"decoder": {"name": "calm", "d": 0.5}}
    module.on_load_checkpoint(ckpt)
    assert module.decoder.describe() == "calm(d=0.5)"  # nothing given: the checkpoint's
    from hsd_lightning.decoding import build_decoder

    module = CausalLMModule("tiny-gpt2", decoder=build_decoder("hsd", s=1, e_max=2))
    module.on_load_checkpoint(ckpt)
    assert module.decoder.name == "hsd"  # model.decoder in the config wins over the checkpoint's
    module.use_decoder(build_decoder("vanilla"))
    module.on_load_checkpoint(ckpt)
    assert module.decoder.name == "vanilla"  # --decoder wins over both
    yaml = tmp_path / "dec.yaml"
    yaml.write_text("model:\n  decoder:\n    class_path: hsd_lightning.decoding.HSD\n    init_args: {s: 1, e_max: 2}\n")
    cli_main(["predict", "--config", str(CONFIG_DIR / "default.yaml"), "--config", str(yaml),
              *_args(tmp_path, fixture_dir)[1:], "--decoder", "skipdecode", "--decoder.e_min", "1",
              "--decoder.e_max", "2"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["decoder"] == "skipdecode(min=1,max=2)" and metrics["model"] == "tiny-gpt2"


@pytest.mark.parametrize("extra,msg", [
    (["--decoder", "calm", "--decoder.d", "2"], r"d=2.0: CALM's threshold decay must lie in \(0, 1\]"),
    (["--decoder", "hsd", "--decoder.e_max", "40"], r"e_max=40 exceeds the model's 6 layers; use e_max <= 6"),
])
def test_decoder_settings_out_of_range(tmp_path, fixture_dir, extra, msg):
    with pytest.raises(ValueError, match=msg):
        cli_main(_args(tmp_path, fixture_dir, *extra))


def test_out_of_memory_names_the_batch_setting(tmp_path, fixture_dir, monkeypatch):
    from hsd_lightning.decoding import Vanilla

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Vanilla, "generate", boom)
    with pytest.raises(MemoryError, match=r"out of memory decoding a batch of 2 inputs x 1 beams; set "
                                          r"--data.init_args.eval_batch_size below 2 \(e.g. 1\); the predictions "
                                          r"written so far are kept"):
        cli_main(_args(tmp_path, fixture_dir))
    # one input and many beams: the setting to lower is the beam count, not the batch
    with pytest.raises(MemoryError, match=r"out of memory decoding a batch of 1 inputs x 64 beams; set "
                                          r"--model.num_beams below 64 \(e.g. 32\)"):
        cli_main([*_args(tmp_path, fixture_dir), "--data.init_args.eval_batch_size", "1", "--model.num_beams", "64",
                  f"--trainer.callbacks.output_dir={tmp_path / 'beams'}"])
