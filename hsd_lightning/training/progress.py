"""A plain-text progress line for ``fit`` every N steps, for logs on disk, and a record of the run at its end.

Lightning's progress bar redraws one terminal line; redirected to a file it writes nothing useful until the end.
This callback prints step, loss, seconds per step, tokens per second and the time left, and when ``fit`` ends
writes ``fit_summary.json`` into the run folder: steps, examples, tokens, wall time, final validation losses.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info


class ProgressLog(Callback):
    """Args:
        every_n_steps: print a line every N optimizer steps (and after each validation).
    """

    def __init__(self, every_n_steps: int = 10):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 1")
        self.every = every_n_steps
        self._t0 = self._start_step = self._printed = self._val_step = None
        self._tokens = self._examples = 0

    def on_train_start(self, trainer, pl_module):
        self._t0, self._tokens, self._examples = time.perf_counter(), 0, 0
        self._start_step = self._printed = trainer.global_step
        rank_zero_info(f"fit: starting at step {trainer.global_step}, max_steps {self._total(trainer)}")

    @staticmethod
    def _total(trainer) -> int:
        return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
        self._examples += int(batch["input_ids"].shape[0]) if "input_ids" in batch else 0
        step = trainer.global_step
        if step == self._printed or step % self.every:
            return
        self._printed = step
        elapsed = time.perf_counter() - self._t0
        done = step - self._start_step
        per_step = elapsed / max(done, 1)
        total = self._total(trainer)
        left = max(total - step, 0) * per_step
        loss = trainer.callback_metrics.get("train/loss_step")
        rank_zero_info(f"fit: step {step}/{total}  loss {float(loss):.4f}  {per_step:.2f} s/step  "
                       f"{self._tokens / elapsed:.0f} tokens/s  ~{left / 60:.1f} min left"
                       if loss is not None else f"fit: step {step}/{total}  {per_step:.2f} s/step")

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if vals:
            self._val_step = trainer.global_step
            rank_zero_info("fit: validation at step %d: %s" % (trainer.global_step,
                           "  ".join(f"{k} {v:.4f}" for k, v in sorted(vals.items()))))

    def on_train_end(self, trainer, pl_module):
        if self._t0 is None:
            return
        # collectives on every rank: the sums over ranks and log_dir (which broadcasts from rank 0)
        examples, tokens = (int(trainer.strategy.reduce(torch.tensor(float(x)), reduce_op="sum"))
                            for x in (self._examples, self._tokens))
        log_dir = trainer.log_dir
        summary = {
            "steps": trainer.global_step, "steps_this_run": trainer.global_step - self._start_step,
            "examples_this_run": examples, "tokens_this_run": tokens,
            "wall_seconds_this_run": round(time.perf_counter() - self._t0, 1),
            "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "val_at_step": self._val_step,  # the step those losses were measured at (None: no validation)
        }
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "fit_summary.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2))
            rank_zero_info(f"fit: done, {json.dumps(summary)} -> {path}")
