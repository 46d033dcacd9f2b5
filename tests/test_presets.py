"""GPU presets, dry-run here (no GPU): the composed config prints, and its strategy object builds."""
import contextlib
import io

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from hsd_lightning.cli import CONFIG_DIR, cli_main


def _printed(*configs: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        cli_main(["fit", *[x for c in configs for x in ("--config", str(CONFIG_DIR / c))], "--print_config"])
    return yaml.safe_load(buf.getvalue())


def test_ddp_preset_for_gpt2_large_full_fine_tuning():
    cfg = _printed("gpt2_cnndm.yaml", "presets/ddp.yaml")
    assert cfg["model"]["model_name_or_path"] == "gpt2-large" and cfg["model"]["finetune"] == "full"
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["precision"] == "bf16-mixed"
    # the same composition builds a DDP trainer (on CPU here: gloo)
    cli = cli_main(["--config", str(CONFIG_DIR / "gpt2_cnndm.yaml"), "--config", str(CONFIG_DIR / "presets/ddp.yaml"),
                    "--model.model_name_or_path", "tiny-gpt2", "--trainer.accelerator", "cpu",
                    "--trainer.devices", "1", "--trainer.precision", "32-true"], run=False)
    assert isinstance(cli.trainer.strategy, DDPStrategy)


def test_fsdp_preset_for_phi2_full_fine_tuning():
    cfg = _printed("phi2_xsum.yaml", "presets/fsdp_phi2.yaml")
    assert cfg["model"]["model_name_or_path"] == "microsoft/phi-2" and cfg["model"]["finetune"] == "full"
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    # Lightning refuses FSDP without a GPU, so the strategy object is built alone, as the CLI would build it
    parser = ArgumentParser()
    parser.add_subclass_arguments(FSDPStrategy, "strategy")
    strategy = parser.instantiate(parser.parse_object({"strategy": cfg["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy.name == "FULL_SHARD"
    from transformers.models.phi.modeling_phi import PhiDecoderLayer
    policy = strategy.kwargs["auto_wrap_policy"]
    assert PhiDecoderLayer in policy._module_classes
    assert strategy._state_dict_type == "full"


def test_gpu_preset_keeps_one_weights_only_checkpoint_and_leaves_bertscore_for_later():
    # a full fine-tune's resumable checkpoint (weights + AdamW) is 1.6 GB: on a GPU, writing it every 50 steps costs
    # more than the training, so the preset replaces base.yaml's callbacks with one weights-only last.ckpt
    cfg = _printed("experiments/xsum/smollm2_xsum_skipaware_full.yaml", "presets/gpu.yaml")
    assert cfg["trainer"]["accelerator"] == "gpu" and cfg["trainer"]["precision"] == "bf16-mixed"
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in cfg["trainer"]["callbacks"]}
    assert "ModelCheckpoint" not in callbacks  # no latest-{step} every 50 steps
    ckpt = callbacks["FinalModelCheckpoint"]
    assert ckpt["save_weights_only"] and ckpt["save_last"] and ckpt["save_top_k"] == 0
    assert callbacks["PredictionScorer"]["bertscore"] is False
    assert cfg["model"]["train_plans"] and cfg["model"]["t_max"] == 40  # the task's skip-aware recipe is kept
