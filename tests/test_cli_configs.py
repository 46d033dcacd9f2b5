"""Every config parses and runs (fit with fast_dev_run, then predict) on a tiny model of the same family."""
import json
from pathlib import Path

import pytest

from hsd_lightning.cli import CONFIG_DIR, _composition, cli_main

CONFIGS = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("experiments/*/*.yaml")])
TINY = {"gpt2": "tiny-gpt2", "phi2": "tiny-phi", "smollm2": "tiny-llama", "default": "tiny-llama"}


# settings that only fit the real model are swapped for tiny-model ones: plans sized for 30 layers, adapters,
# continuation rows longer than the tiny sources
TINY_PLANS = '[{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 3, "weight": 2}]'


def _tiny_model_args(cfg: Path) -> list[str]:
    text = "\n".join(p.read_text() for p in _composition(cfg))  # the cell and every file it composes
    out = ["--model.train_plans", TINY_PLANS] if "train_plans:" in text else []
    out += ["--data.init_args.continuation_tokens", "8"] if "source_continuations:" in text else []  # 48-token sources
    out += ["--model.adapter_rank", "null"] if "adapter_rank:" in text else []  # widens an adapter: tests/test_adapters.py
    # a frozen teacher of the real model: tests/test_skip_aware.py
    out += ["--model.teacher_adapter", "null"] if "teacher_adapter:" in text else []
    return out + (["--model.adapter", "null"] if "adapter:" in text else [])


def _tiny_args(cfg: Path, tmp_path: Path, data_dir: Path) -> list[str]:
    family = cfg.stem.split("_")[0]
    text = "\n".join(p.read_text() for p in _composition(cfg))
    files = []
    if "runs/seqkd/" in text:  # pairs an experiment script writes (E2E fields mr/ref): the E2E fixture stands in
        files = ["--data.init_args.train_file", "e2e/trainset.csv", "--data.init_args.validation_file",
                 "e2e/devset.csv", "--data.init_args.test_file", "e2e/testset_w_refs.csv"]
    elif "TextPairDataModule" in text:
        data_dir = CONFIG_DIR.parent  # your-own-data configs name files relative to the checkout (examples/)
    return ["--config", str(cfg), *files, *_tiny_model_args(cfg), "--model.model_name_or_path", TINY[family],
            "--data.init_args.data_dir", str(data_dir), "--data.init_args.max_train_samples", "4",
            "--data.init_args.max_eval_samples", "2", "--data.init_args.batch_size", "2",
            "--data.init_args.eval_batch_size", "2", "--data.init_args.max_source_tokens", "48",
            "--model.max_new_tokens", "3", "--model.num_beams", "2",
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
            "--trainer.accelerator", "cpu",
            "--trainer.callbacks+=hsd_lightning.evaluation.writer.PredictionScorer",
            "--trainer.callbacks.bertscore=false", f"--trainer.callbacks.output_dir={tmp_path / 'pred'}"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_fits_and_predicts_on_tiny_model(cfg, tmp_path, fixture_dir):
    args = _tiny_args(cfg, tmp_path, fixture_dir)
    cli_main(["fit", *args, "--trainer.fast_dev_run", "1"])
    cli_main(["predict", *args, "--decoder", "hsd", "--decoder.s", "1", "--decoder.e_max", "3"])
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert metrics["decoder"] == "hsd(s=1,min=0,max=3)" and metrics["examples"] == 2
    lines = (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {"id", "prediction", "references", "layers_per_token"} <= set(json.loads(lines[0]))


def test_checkpoint_roundtrip_and_cli_decoder_wins(tmp_path, fixture_dir):
    cfg = CONFIG_DIR / "phi2_e2e.yaml"  # LoRA: the checkpoint must hold only adapter weights
    args = _tiny_args(cfg, tmp_path, fixture_dir)
    cli_main(["fit", *args, "--trainer.max_steps", "2", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
              "--model.decoder", "calm", "--model.decoder.d", "0.5"])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    import torch
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state), list(state)[:5]
    # no --decoder: the checkpoint's decoder is used
    cli_main(["predict", *args, "--ckpt_path", str(ckpt)])
    assert json.loads((tmp_path / "pred" / "metrics.json").read_text())["decoder"] == "calm(d=0.5)"
    # --decoder on the command line wins over the checkpoint's; the folder of another run's predictions is refused
    sd = ["--decoder", "skipdecode", "--decoder.e_min", "1", "--decoder.e_max", "3"]
    with pytest.raises(ValueError, match=r"pred holds predictions of another run \(decoder: 'calm\(d=0.5\)', now "
                                         r"'skipdecode\(min=1,max=3\)'\); write to a new output_dir"):
        cli_main(["predict", *args, "--ckpt_path", str(ckpt), *sd])
    assert json.loads((tmp_path / "pred" / "metrics.json").read_text())["decoder"] == "calm(d=0.5)"  # kept
    cli_main(["predict", *args, "--ckpt_path", str(ckpt), *sd, f"--trainer.callbacks.output_dir={tmp_path / 'sd'}"])
    assert json.loads((tmp_path / "sd" / "metrics.json").read_text())["decoder"] == "skipdecode(min=1,max=3)"


def test_bad_cli_input_is_named(tmp_path, fixture_dir, capsys):
    args = _tiny_args(CONFIG_DIR / "default.yaml", tmp_path, fixture_dir)
    with pytest.raises(ValueError, match=r"--decoder 'beam' is not a decoder; choose one of vanilla, skipdecode, hsd"):
        cli_main(["predict", *args, "--decoder", "beam"])
    with pytest.raises(SystemExit):
        cli_main(["predict", *args, "--model.not_a_key", "1"])
    assert "not_a_key" in capsys.readouterr().err


def test_unknown_model_and_bad_lora_target():
    from hsd_lightning.models.module import CausalLMModule
    with pytest.raises(ValueError, match="unknown model 'tiny-bert'"):
        CausalLMModule("tiny-bert")
    with pytest.raises(ValueError, match=r"lora_target_modules \['nope'\] match no module"):
        CausalLMModule("tiny-llama", finetune="lora", lora_target_modules=["nope"])


def test_print_config_works(capsys):
    with pytest.raises(SystemExit):
        cli_main(["predict", "--config", str(CONFIG_DIR / "gpt2_cnndm.yaml"), "--print_config"])
    out = capsys.readouterr().out
    assert "gpt2-large" in out and "CNNDMDataModule" in out


def test_cells_compose_model_and_task_files(tmp_path):
    from hsd_lightning.cli import _expand_compose

    cell = str(CONFIG_DIR / "gpt2_cnndm.yaml")
    once = _expand_compose(["fit", "--config", cell, "--trainer.devices", "2"])
    assert once == ["fit", "--config", str(CONFIG_DIR / "models/gpt2_large.yaml"), "--config",
                    str(CONFIG_DIR / "data/cnndm.yaml"), "--config", cell, "--trainer.devices", "2"]
    assert _expand_compose(once) == once  # a relaunched DDP rank parses the same arguments
    nested = _expand_compose(["-c", str(CONFIG_DIR / "smollm2_e2e_skipaware.yaml")])
    assert [Path(x).name for x in nested[1::2]] == ["smollm2.yaml", "e2e.yaml", "lora_cpu.yaml", "smollm2_e2e_lora.yaml",
                                                    "skipaware_30l.yaml", "smollm2_e2e_skipaware.yaml"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("compose: [loop.yaml]\n")
    with pytest.raises(ValueError, match="composes itself"):
        _expand_compose(["--config", str(loop)])
