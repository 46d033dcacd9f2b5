"""Multi-device runs with Lightning's own DDP (gloo, 2 CPU processes) and runs that survive a crash.

The DDP runs are real ``python main.py`` processes: Lightning's launcher starts rank 1 from ``sys.argv``.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from hsd_lightning.cli import CONFIG_DIR, cli_main

ROOT = Path(__file__).resolve().parents[1]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def _args(fixture_dir: Path, tmp_path: Path, out: str, n_inputs: int = 5) -> list[str]:
    # 5 inputs, batches of 2 on 2 ranks: rank 0 decodes 3, rank 1 decodes 2 (uneven on purpose)
    return ["--model.model_name_or_path", "tiny-gpt2", "--model.adapter", "null", "--model.finetune", "full",
            "--data.init_args.data_dir", str(fixture_dir), "--data.init_args.max_eval_samples", str(n_inputs),
            "--data.init_args.eval_batch_size", "2", "--data.init_args.max_train_samples", "8",
            "--data.init_args.batch_size", "2", "--model.max_new_tokens", "4", "--model.num_beams", "2",
            "--decoder", "hsd", "--decoder.s", "1", "--decoder.e_max", "2",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
            f"--trainer.callbacks.output_dir={tmp_path / out}"]


def _main(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _read(folder: Path) -> tuple[list[dict], dict]:
    """Predictions and metrics without what differs by machine, rank or batching: timings, forward passes (an input's
    share of its batch's) and the rank field."""
    recs = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("rank"), r.pop("generation_seconds"), r.pop("forward_passes")
    metrics = json.loads((folder / "metrics.json").read_text())
    return recs, {k: v for k, v in metrics.items() if "per_second" not in k and "per_pass" not in k}


def test_ddp_predict_and_test_equal_the_single_process_run(tmp_path, fixture_dir):
    single = ["predict", *_args(fixture_dir, tmp_path, "single"), "--trainer.accelerator", "cpu"]
    cli_main(single)
    _main(["predict", *_args(fixture_dir, tmp_path, "ddp_predict"), *DDP])
    _main(["test", *_args(fixture_dir, tmp_path, "ddp_test"), *DDP])
    ref_recs, ref_metrics = _read(tmp_path / "single")
    assert [r["id"] for r in ref_recs] == [f"e2e-test-{i}" for i in range(5)] and ref_metrics["examples"] == 5
    assert ref_metrics["bertscore"] > 0  # BERTScore of every input is its own, not rank 0's
    for run in ("ddp_predict", "ddp_test"):  # test's padding sampler decodes one input twice: counted once
        recs, metrics = _read(tmp_path / run)
        assert recs == ref_recs, run
        # rank 0 scores the same merged records alone, but a DDP process runs the BERTScore encoder with fewer
        # intra-op threads (Lightning splits the cores between the ranks), and CPU matmul kernels may then sum in
        # another order: the last digits can differ (seen: 4.2922813 vs 4.2922821 on an AMX CPU); the rest is exact
        assert metrics == {**ref_metrics, "bertscore": pytest.approx(ref_metrics["bertscore"], rel=1e-6, abs=1e-6)}, run
        assert not list((tmp_path / run).glob("predictions.rank*.jsonl"))  # parts merged away
    ranks = {json.loads(line)["rank"] for line in (tmp_path / "ddp_predict" / "predictions.jsonl").open()}
    assert ranks == {0, 1}


def test_ddp_predict_with_fewer_inputs_than_ranks(tmp_path, fixture_dir):
    """One input on two ranks: rank 1 gets none and skips its loop (Lightning's sampler asserted there)."""
    cli_main(["predict", *_args(fixture_dir, tmp_path, "one", n_inputs=1), "--trainer.accelerator", "cpu"])
    _main(["predict", *_args(fixture_dir, tmp_path, "one_ddp", n_inputs=1), *DDP])
    assert _read(tmp_path / "one_ddp")[0] == _read(tmp_path / "one")[0]


def test_ddp_fit_then_validate(tmp_path, fixture_dir):
    args = _args(fixture_dir, tmp_path, "unused")
    _main(["fit", *args, *DDP, "--trainer.max_steps", "2", "--trainer.max_epochs", "1"])
    import torch
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    assert torch.load(ckpt, weights_only=False)["global_step"] == 2
    _main(["validate", *args, *DDP, "--ckpt_path", str(ckpt)])


class Crash(Callback):
    """Fails after ``n`` batches were written (stands for a killed run)."""

    def __init__(self, n: int):
        self.n = n

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx + 1 == self.n:
            raise RuntimeError("simulated crash")


class Spy(Callback):
    """Records the ids each predict batch decodes."""

    def __init__(self):
        self.seen = []

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen.extend(batch["ids"])


def _predict_with(args: list[str], callback: Callback) -> None:
    cli = cli_main(["--config", str(CONFIG_DIR / "default.yaml"), *args[1:]], run=False)  # no subcommand: run=False
    cli.trainer.callbacks.append(callback)  # after the writer: a batch is on disk before Crash fails
    cli.trainer.predict(cli.model, datamodule=cli.datamodule)


def test_predict_resumes_into_the_same_folder(tmp_path, fixture_dir):
    args = ["predict", *_args(fixture_dir, tmp_path, "resumed"), "--trainer.accelerator", "cpu"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        _predict_with(args, Crash(1))  # batch 1 (2 inputs) is on disk
    part = tmp_path / "resumed" / "predictions.rank0.jsonl"
    assert len(part.read_text().splitlines()) == 2 and not (tmp_path / "resumed" / "metrics.json").exists()

    _predict_with(args, spy := Spy())
    assert spy.seen == ["e2e-test-2", "e2e-test-3", "e2e-test-4"]  # finished ids are not decoded again
    cli_main(["predict", *_args(fixture_dir, tmp_path, "straight"), "--trainer.accelerator", "cpu"])
    assert _read(tmp_path / "resumed") == _read(tmp_path / "straight")
    # a third run into the finished folder decodes nothing and rewrites the same files
    _predict_with(args, spy := Spy())
    assert spy.seen == [] and _read(tmp_path / "resumed") == _read(tmp_path / "straight")


def test_resume_after_a_half_written_line_loses_no_input(tmp_path, fixture_dir):
    """A kill mid-write leaves a cut last line: resuming decodes that input again and every input is kept once."""
    args = ["predict", *_args(fixture_dir, tmp_path, "cut"), "--trainer.accelerator", "cpu"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        _predict_with(args, Crash(1))
    part = tmp_path / "cut" / "predictions.rank0.jsonl"
    lines = part.read_text().splitlines()
    part.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # the second record cut short, no newline
    _predict_with(args, spy := Spy())
    assert spy.seen == ["e2e-test-1", "e2e-test-2", "e2e-test-3", "e2e-test-4"]  # the cut record's input again
    cli_main(["predict", *_args(fixture_dir, tmp_path, "whole"), "--trainer.accelerator", "cpu"])
    assert _read(tmp_path / "cut") == _read(tmp_path / "whole")


def test_a_rerun_with_other_inputs_or_split_is_refused(tmp_path, fixture_dir):
    cli_main(["predict", *_args(fixture_dir, tmp_path, "done", n_inputs=3), "--trainer.accelerator", "cpu"])
    with pytest.raises(ValueError, match=r"done holds predictions of another run \(inputs: '3 inputs, .*', now "
                                         r"'5 inputs, .*'\); write to a new output_dir"):
        cli_main(["predict", *_args(fixture_dir, tmp_path, "done", n_inputs=5), "--trainer.accelerator", "cpu"])
    with pytest.raises(ValueError, match=r"\(split: 'test', now 'validation'\)"):
        cli_main(["predict", *_args(fixture_dir, tmp_path, "done", n_inputs=3), "--trainer.accelerator", "cpu",
                  "--data.init_args.predict_split", "validation"])
    assert len((tmp_path / "done" / "predictions.jsonl").read_text().splitlines()) == 3  # kept as it was


class CrashAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated kill")


def test_fit_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, fixture_dir):
    """16 training pairs in batches of 2: 8 steps an epoch. Killed at step 5 (mid-epoch, after the checkpoint of
    step 4), resumed with ``--ckpt_path last``: step 12 has the weights of a run never stopped (dropout included)."""
    import torch

    every_2 = tmp_path / "every2.yaml"  # the base preset's periodic checkpoint, every 2 steps instead of 50
    every_2.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                       "      init_args: {every_n_train_steps: 2, save_top_k: 1, filename: 'latest-{step}'}\n")

    def args(root: Path) -> list[str]:
        return ["--config", str(CONFIG_DIR / "default.yaml"), "--config", str(every_2),
                "--model.model_name_or_path", "tiny-gpt2", "--model.adapter", "null", "--model.finetune", "full",
                "--model.learning_rate", "1e-3", "--model.lr_decay_steps", "8",  # the decay spans the kill
                "--data.init_args.data_dir", str(fixture_dir),
                "--data.init_args.max_train_samples", "16", "--data.init_args.batch_size", "2",
                "--trainer.max_steps", "12", "--trainer.max_epochs", "3", "--trainer.limit_val_batches", "1",
                "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                "--trainer.logger.init_args.save_dir", str(root), "--trainer.default_root_dir", str(root)]

    def final(root: Path) -> dict:
        ckpts = list(root.rglob("latest-step=12.ckpt"))
        assert len(ckpts) == 1, list(root.rglob("*.ckpt"))
        return torch.load(ckpts[0], weights_only=False)["state_dict"]

    cli_main(["fit", *args(tmp_path / "straight")])
    cli = cli_main(args(tmp_path / "killed"), run=False)
    cli.trainer.callbacks.append(CrashAtStep(5))
    with pytest.raises(RuntimeError, match="simulated kill"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert [p.name for p in (tmp_path / "killed").rglob("latest-*.ckpt")] == ["latest-step=4.ckpt"]
    cli_main(["fit", *args(tmp_path / "killed"), "--ckpt_path", "last"])
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["default"]
    assert [p.name for p in (tmp_path / "killed" / "default").iterdir()] == ["version_0"]  # one run folder
    straight, resumed = final(tmp_path / "straight"), final(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_a_checkpoint_written_after_its_epoch_ended_continues_with_a_full_epoch(tmp_path, fixture_dir):
    """Our CommonGen 1,600-step last.ckpt was written after its epoch had ended (epoch_progress completed == started,
    the epoch's batch count full, the loader's pass used up); continued to max_steps one epoch further, Lightning
    trained 0 steps and stopped at max_epochs. Such a checkpoint must start a fresh epoch
    (resume.start_next_epoch_fresh). Made here from an 8-step epoch's last.ckpt, marked ended as that one was."""
    import torch

    def args(root: Path, *extra: str) -> list[str]:
        return ["fit", "--config", str(CONFIG_DIR / "default.yaml"), "--model.model_name_or_path", "tiny-gpt2",
                "--model.adapter", "null", "--model.finetune", "full", "--data.init_args.data_dir", str(fixture_dir),
                "--data.init_args.max_train_samples", "16", "--data.init_args.batch_size", "2",
                "--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu",
                "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(root),
                "--trainer.default_root_dir", str(root), *extra]

    cli_main(args(tmp_path / "first", "--trainer.max_epochs", "1"))
    ckpt = torch.load(next((tmp_path / "first").rglob("last.ckpt")), weights_only=False)
    assert ckpt["global_step"] == 8
    for k in ("total", "current"):
        ckpt["loops"]["fit_loop"]["epoch_progress"][k] = {"ready": 1, "completed": 1, "started": 1, "processed": 1}
    ckpt["epoch"] = 1
    torch.save(ckpt, tmp_path / "ended.ckpt")
    cli_main(args(tmp_path / "second", "--trainer.max_epochs", "2", "--trainer.max_steps", "16",
                  "--ckpt_path", str(tmp_path / "ended.ckpt")))
    summary = json.loads(next((tmp_path / "second").rglob("fit_summary.json")).read_text())
    assert summary["steps"] == 16 and summary["steps_this_run"] == 8 and summary["examples_this_run"] == 16


def test_last_ckpt_holds_the_end_of_fit_when_validation_does_not_fall_on_it(tmp_path, fixture_dir):
    """5 steps, validation every 2: Lightning alone leaves last.ckpt at step 4 (the XSum cell decoded step 50 of 75).
    The base preset's checkpoint writes it at the end too, and fit_summary.json says where val/loss was measured."""
    import torch

    cli_main(["fit", "--config", str(CONFIG_DIR / "default.yaml"), "--model.model_name_or_path", "tiny-gpt2",
              "--model.adapter", "null", "--model.finetune", "full", "--data.init_args.data_dir", str(fixture_dir),
              "--data.init_args.max_train_samples", "16", "--data.init_args.batch_size", "2",
              "--trainer.max_steps", "5", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
              "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)])
    last = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert last["global_step"] == 5
    summary = json.loads(next(tmp_path.rglob("fit_summary.json")).read_text())
    assert summary["steps"] == 5 and summary["val_at_step"] == 4 and "val/loss" in summary["val"]


def test_final_checkpoint_keeps_lightnings_state_key():
    """Checkpoints written under Lightning's ModelCheckpoint resume with their state (else last.ckpt is not
    overwritten: a new last-v1.ckpt appears beside it, and `--ckpt_path last` tools read the stale one)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hsd_lightning.training import FinalModelCheckpoint

    kw = dict(monitor="val/loss", mode="min", save_top_k=1, save_last=True)
    assert FinalModelCheckpoint(**kw).state_key == ModelCheckpoint(**kw).state_key
