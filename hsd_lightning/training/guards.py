"""Runs that stop say so: a SIGTERM'd fit saves a resumable checkpoint first, and the exit status is not 0.

Lightning turns SIGTERM into ``SIGTERMException`` (a ``SystemExit`` with status 0) at the next batch boundary and
saves nothing, so a scheduler's kill looked like a finished run and lost the steps since the last checkpoint. The
module adds :class:`SigtermCheckpoint` to every run (``configure_callbacks``); the command line turns the exception
into exit status 143 with one line (``cli.run_cli``). A non-finite loss is stopped in ``training_step``.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SigtermCheckpoint(Callback):
    """On SIGTERM during ``fit``: write ``latest-step=N.ckpt`` beside the run's checkpoints (``--ckpt_path last``
    resumes it)."""

    def __init__(self):
        self.saved: Path | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        ckpt = trainer.checkpoint_callback
        folder = Path(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else Path(trainer.log_dir or ".") / "checkpoints"
        self.saved = folder / f"latest-step={trainer.global_step}.ckpt"
        trainer.save_checkpoint(self.saved)
        exception.saved_checkpoint = str(self.saved)  # for the one line the command prints
        exception.global_step = trainer.global_step
