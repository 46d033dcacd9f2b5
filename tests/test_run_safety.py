"""Runs that say what they did: flags given with --ckpt_path are honoured or refused, failures fail (NaN loss,
SIGTERM, a missing or cut checkpoint), no entry point runs code from a checkpoint file, bad values are refused up
front with one line, and the command line prints that line with exit status 2."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hsd_lightning.cli import CONFIG_DIR, cli_main

ROOT = CONFIG_DIR.parent
TINY_PLANS = '[{"name": "vanilla"}, {"name": "hsd", "s": 1, "e_max": 3}]'


def _base(tmp_path: Path, name: str = "run") -> list[str]:
    return ["--config", str(CONFIG_DIR / "smollm2_pairs.yaml"), "--model.model_name_or_path", "tiny-llama",
            "--model.train_plans", TINY_PLANS, "--data.init_args.data_dir", str(ROOT),
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name,
            "--trainer.callbacks.bertscore=false", "--trainer.enable_progress_bar", "false"]


def _cli(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "hsd_lightning", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-step fit (one epoch of the example's 24 pairs) on tiny-llama, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("trained")
    cli_main(["fit", *_base(tmp), "--trainer.max_epochs", "1"])
    return tmp, tmp / "run" / "version_0" / "checkpoints" / "last.ckpt"


# ---- flags given with --ckpt_path ------------------------------------------------------------------------------------
def test_decode_settings_follow_the_command_line(trained, tmp_path):
    tmp, ckpt = trained
    cli_main(["predict", *_base(tmp), "--ckpt_path", str(ckpt), "--model.num_beams", "2", "--model.max_new_tokens",
              "3", "--model.t_max", "3", f"--trainer.callbacks.output_dir={tmp_path / 'p'}"])
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert (run["num_beams"], run["max_new_tokens"], run["t_max"]) == (2, 3, 3)
    assert all(len(json.loads(x)["token_ids"]) <= 3 for x in (tmp_path / "p" / "predictions.jsonl").open())


@pytest.mark.parametrize("sub,flag,value,msg", [
    ("predict", "--model.model_name_or_path", "tiny-gpt2",
     r"--model.model_name_or_path='tiny-gpt2' differs from the checkpoint's 'tiny-llama': it defines the weights"),
    ("fit", "--model.learning_rate", "0.001",
     r"--model.learning_rate=0.001 differs from the checkpoint's 0.0003: a resumed fit restores its optimizer state"),
])
def test_settings_a_checkpoint_fixes_are_refused_when_they_differ(trained, sub, flag, value, msg):
    tmp, ckpt = trained
    with pytest.raises(ValueError, match=msg):
        cli_main([sub, *_base(tmp), "--ckpt_path", str(ckpt), flag, value])


def test_a_finished_fit_continued_with_more_steps_trains_them_with_the_new_schedule(trained, tmp_path):
    tmp, ckpt = trained
    cli_main(["fit", *_base(tmp_path, "more"), "--ckpt_path", str(ckpt), "--trainer.max_epochs", "2",
              "--trainer.max_steps", "6", "--model.lr_decay_steps", "3"])
    summary = json.loads((tmp_path / "more" / "version_0" / "fit_summary.json").read_text())
    assert summary["steps"] == 6 and summary["steps_this_run"] == 3
    hp = (tmp_path / "more" / "version_0" / "hparams.yaml").read_text()
    assert "lr_decay_steps: 3" in hp  # as given, not the checkpoint's 0


# ---- checkpoints that are missing, cut short, or carry code ----------------------------------------------------------
def test_predict_last_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"predict --ckpt_path last: no readable last checkpoint under .*none"):
        cli_main(["predict", *_base(tmp_path, "none"), "--ckpt_path", "last"])


def test_last_skips_a_checkpoint_cut_short(trained, tmp_path):
    tmp, ckpt = trained
    folder = tmp_path / "cut" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    good = folder / "latest-step=3.ckpt"
    good.write_bytes(ckpt.read_bytes())
    time.sleep(0.05)
    (folder / "last.ckpt").write_bytes(ckpt.read_bytes()[:5000])  # newer, cut short by a kill
    with pytest.raises(ValueError, match=r"--ckpt_path='.*last.ckpt' is not a readable checkpoint .* cut short"):
        cli_main(["predict", *_base(tmp_path, "cut"), "--ckpt_path", str(folder / "last.ckpt")])
    cli_main(["predict", *_base(tmp_path, "cut"), "--ckpt_path", "last", "--model.max_new_tokens", "2",
              f"--trainer.callbacks.output_dir={tmp_path / 'p'}"])
    assert json.loads((tmp_path / "p" / "run.json").read_text())["checkpoint"] == str(good)


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.fixture()
def evil(trained, tmp_path):
    _, ckpt = trained
    state = torch.load(ckpt, weights_only=True)
    state["extra"] = Payload(str(tmp_path / "ran.txt"))
    path = tmp_path / "evil.ckpt"
    torch.save(state, path)
    return path, tmp_path / "ran.txt"


@pytest.mark.parametrize("entry", ["predict", "fit_init_weights", "sweep", "export-adapter"])
def test_no_entry_point_runs_code_from_a_checkpoint(evil, trained, entry):
    path, marker = evil
    tmp, _ = trained
    base = _base(tmp)
    if entry == "predict":
        out = _cli("predict", *base, "--ckpt_path", str(path))
    elif entry == "fit_init_weights":
        out = _cli("fit", *[a for a in base if a != "--trainer.callbacks.bertscore=false"],
                   "--model.finetune", "full", "--model.init_weights", str(path), "--trainer.max_steps", "1")
    elif entry == "sweep":
        out = _cli("sweep", *base[:2], *base[2:], "--ckpt_path", str(path), "--out", str(tmp / "sw"), "--decoders",
                   '[["vanilla", {}]]')
    else:
        out = _cli("export-adapter", "--config", str(CONFIG_DIR / "smollm2_pairs.yaml"), "--ckpt_path", str(path),
                   "--out", str(tmp / "ad"), "--model.model_name_or_path", "tiny-llama")
    assert out.returncode != 0 and not marker.exists(), (out.stdout[-500:], out.stderr[-1500:])
    assert "holds objects other than weights and plain values" in out.stderr


# ---- failures that fail --------------------------------------------------------------------------------------------
def test_a_diverged_run_stops_and_never_saves_its_weights(tmp_path):
    with pytest.raises(ValueError, match=r"fit: the (loss is (nan|inf)|weights hold NaN or inf) at step (\d+).*no "
                                         r"checkpoint was written") as err:
        cli_main(["fit", *_base(tmp_path, "nan"), "--model.learning_rate", "1e12", "--trainer.max_epochs", "3",
                  "--model.warmup_steps", "0"])
    import re

    stopped = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    for path in (tmp_path / "nan").rglob("*.ckpt"):  # what was saved before it diverged is finite
        state = torch.load(path, weights_only=True)
        assert state["global_step"] < stopped or state["global_step"] == stopped == 0
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_decoding_nan_weights_is_refused(trained):
    from hsd_lightning.models.module import CausalLMModule

    module = CausalLMModule("tiny-llama")
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match=r"the weights hold NaN or inf values \(first: model\..*\), e.g. from a fit "
                                         r"whose loss diverged; decode an earlier"):
        module.check_finite_weights()


def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "hsd_lightning", "fit", *_base(tmp_path, "term"),
                             "--trainer.max_epochs", "1000", "--trainer.max_steps", "3000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # the progress line every 10 steps: the run is training
        if line.startswith("step 20") or "step 20/" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 143, rest[-1500:]
    assert "stopped by SIGTERM at step" in rest and "resume with --ckpt_path last" in rest
    saved = list((tmp_path / "term").rglob("latest-step=*.ckpt"))
    assert saved, rest[-800:]
    step = torch.load(saved[-1], weights_only=True)["global_step"]
    cli_main(["fit", *_base(tmp_path, "term"), "--trainer.max_epochs", "1000", "--trainer.max_steps", str(step + 3),
              "--ckpt_path", "last"])
    summary = json.loads(next((tmp_path / "term").rglob("fit_summary.json")).read_text())
    assert summary["steps"] == step + 3 and summary["steps_this_run"] == 3


# ---- bad values refused up front, one line, exit 2 -------------------------------------------------------------------
@pytest.mark.parametrize("args,msg", [
    (["--data.init_args.max_eval_samples", "-1"], "max_eval_samples=-1: give a number of examples >= 1, or null"),
    (["--data.init_args.max_train_samples", "-40000"], "max_train_samples=-40000: give a number of examples >= 1"),
    (["--data.init_args.max_source_tokens", "0"], "max_source_tokens=0 must be an integer >= 1"),
    (["--model.t_max", "0"], "t_max=0 must be an integer >= 1"),
    (["--model.t_max", "-5"], "t_max=-5 must be an integer >= 1"),
    (["--decoder", "hsd", "--decoder.s", "0"], "s=0 runs every layer (no skipping); use s >= 1"),
    (["--decoder", "hsd", "--decoder.e_min", "12", "--decoder.e_max", "3"], "e_min=12 > e_max=3: the exit budget"),
    (["--decoder", "hds"], "--decoder 'hds' is not a decoder; choose one of vanilla, skipdecode, hsd, calm"),
    (["--data.init_args.prompt_template", "{source} and {source}"], "has 2 '{source}' placeholders; use exactly one"),
    (["--data.init_args.prompt_template", "Q: {oops"], "is not a valid template (expected '}' before end of string)"),
    (["--data.init_args.prompt_template", "{name}: {source}"], "has the field(s) ['name']; only {source} is filled"),
    (["--model.num_beams", "0"], "num_beams=0 must be an integer >= 1 (1 = greedy)"),
])
@pytest.mark.parametrize("sub", ["fit", "predict"])
def test_bad_values_print_one_line_and_exit_2(tmp_path, capsys, sub, args, msg):
    """As the command line runs (``run_cli``, in this process: the subprocess test below shows the same path)."""
    from hsd_lightning.cli import run_cli

    with pytest.raises(SystemExit) as exit_:
        run_cli([sub, *_base(tmp_path), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines == [f"error: {lines[-1][7:]}"] and msg in lines[-1], err[-1500:]


def test_a_yaml_error_names_the_file_and_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_beams: [1\n")
    out = _cli("predict", "--config", str(bad))
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: config {bad} is not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'; "
        "fix the file")
    debug = subprocess.run([sys.executable, "-m", "hsd_lightning", "predict", "--config", str(bad)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "HSD_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
