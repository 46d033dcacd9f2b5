"""`fit` with its output in a log file (as the experiment scripts run it): our plain progress lines, none of the
libraries' lines that tell a user nothing (hsd_lightning/library_noise.py)."""
import subprocess
import sys
from pathlib import Path

from hsd_lightning.cli import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("💡 Tip", "litlogger", "LeafSpec", "set_vital", "no last checkpoint available",
         "not supported by the model summary", "Map:", "Loading weights")


def test_fit_log_file_shows_progress_and_no_library_noise(tmp_path, fixture_dir):
    log = tmp_path / "fit.log"
    args = [sys.executable, "main.py", "fit", "--config", str(CONFIG_DIR / "default.yaml"),
            "--model.model_name_or_path", "tiny-gpt2", "--model.adapter", "null", "--model.finetune", "full",
            "--data.init_args.data_dir", str(fixture_dir), "--data.init_args.max_train_samples", "16",
            "--data.init_args.batch_size", "2", "--trainer.max_steps", "10", "--trainer.max_epochs", "2",
            "--trainer.limit_val_batches", "1", "--trainer.precision", "bf16-mixed",  # its model-summary warning
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.default_root_dir", str(tmp_path),
            "--ckpt_path", "last"]  # nothing to resume yet: our one line, not Lightning's warning as well
    with log.open("w") as f:
        proc = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, text=True, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "fit --ckpt_path last: no last checkpoint under" in text and "starting from the first step" in text
    assert "fit: starting at step 0, max_steps 10" in text and "fit: step 10/10" in text
    assert [n for n in NOISE if n in text] == [], text
