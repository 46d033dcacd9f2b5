"""--model.init_weights: a fit starts from another fit's weights (not its optimizer, step or schedule)."""
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from hsd_lightning.cli import CONFIG_DIR, cli_main
from tests.test_cli_configs import _tiny_args

# CFG: a full fine-tune under plans (tiny plans in tests)
CFG = CONFIG_DIR / "experiments" / "commongen" / "smollm2_commongen_skipaware_full_25k.yaml"
STARTED_WITH: dict = {}  # the weights the last fit trained from (WeightsAtStart)


class WeightsAtStart(Callback):
    """Keeps the model's weights when training starts: after init_weights and after any resumed checkpoint."""

    def on_train_start(self, trainer, pl_module):
        STARTED_WITH.clear()
        STARTED_WITH.update({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _fit(tmp_path, fixture_dir, name, *extra):
    args = _tiny_args(CFG, tmp_path / name, fixture_dir)
    cli_main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
              "--trainer.logger.init_args.name", name, *extra])
    return next((tmp_path / name).rglob("last.ckpt"))


def test_continues_from_the_weights_with_a_fresh_step_count(tmp_path, fixture_dir):
    standard = _fit(tmp_path, fixture_dir, "standard", "--model.train_plans", "null", "--trainer.max_steps", "2")
    first = torch.load(standard, weights_only=False)
    assert first["global_step"] == 2 and "skip_aware" not in first
    # learning rate 0: the continued run's weights stay those it started from, so they must equal the standard run's
    cont = _fit(tmp_path, fixture_dir, "cont", "--model.init_weights", str(standard), "--trainer.max_steps", "1",
                "--model.learning_rate", "0")
    second = torch.load(cont, weights_only=False)
    assert second["global_step"] == 1 and second["skip_aware"]  # its own step count, trained under the plans
    assert second["state_dict"].keys() == first["state_dict"].keys()
    for k, v in first["state_dict"].items():
        assert torch.equal(second["state_dict"][k], v), k
    # without init_weights the same run starts from the base weights, which differ
    base = torch.load(_fit(tmp_path, fixture_dir, "base", "--trainer.max_steps", "1", "--model.learning_rate", "0"),
                      weights_only=False)
    assert any(not torch.equal(base["state_dict"][k], v) for k, v in first["state_dict"].items())


def test_bad_init_weights_are_named(tmp_path, fixture_dir):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=r"init_weights='.*nope.ckpt': no such file; give a checkpoint "
                                                r"written by fit"):
        _fit(tmp_path, fixture_dir, "missing", "--model.init_weights", str(missing), "--trainer.max_steps", "1")
    with pytest.raises(ValueError, match=r"needs finetune=full .* --model.adapter"):
        _fit(tmp_path, fixture_dir, "lora", "--model.init_weights", str(missing), "--model.finetune", "lora",
             "--trainer.max_steps", "1")
    gpt2 = _tiny_args(CONFIG_DIR / "gpt2_e2e.yaml", tmp_path / "gpt2", fixture_dir)  # another architecture
    cli_main(["fit", *gpt2, "--trainer.max_steps", "1", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
              "--model.finetune", "full"])
    with pytest.raises(ValueError, match=r"checkpoint does not fit this model: .*load it with the model it was "
                                         r"trained from"):
        _fit(tmp_path, fixture_dir, "other", "--model.init_weights", str(next((tmp_path / "gpt2").rglob("last.ckpt"))),
             "--trainer.max_steps", "1")


def test_a_resumed_run_trains_on_from_its_own_weights_not_init_weights(tmp_path, fixture_dir):
    standard = _fit(tmp_path, fixture_dir, "standard", "--model.train_plans", "null", "--trainer.max_steps", "1")
    cont = ["--model.init_weights", str(standard), "--model.learning_rate", "1e-2", "--model.warmup_steps", "0",
            "--trainer.callbacks+=test_init_weights.WeightsAtStart"]  # this module as pytest imports it (tests/ on sys.path)
    after_one = torch.load(_fit(tmp_path, fixture_dir, "cont", *cont, "--trainer.max_steps", "1"),
                           weights_only=False)["state_dict"]
    init = torch.load(standard, weights_only=False)["state_dict"]
    assert all(torch.equal(STARTED_WITH[k], v) for k, v in init.items())  # the first start: init_weights
    assert any(not torch.equal(after_one[k], v) for k, v in init.items())  # one optimizer step moved them
    # one batch an epoch here: the resumed run trains step 2 in a second epoch
    _fit(tmp_path, fixture_dir, "cont", *cont, "--trainer.max_steps", "2", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert all(torch.equal(STARTED_WITH[k], v) for k, v in after_one.items())  # the resume: its own step-1 weights
