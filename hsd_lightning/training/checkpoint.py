"""Lightning's ``ModelCheckpoint``, except that with ``save_last`` the state at the end of ``fit`` is always in
``last.ckpt``.

Written by hand because Lightning writes ``last.ckpt`` only when it writes another checkpoint (here: after each
validation) and, at the end of training, only if it never wrote one. A fit whose ``max_steps`` is not a multiple of
``val_check_interval`` therefore left its last steps out of ``last.ckpt``: the XSum cell (75 steps, validation at
step 50) decoded the weights of step 50. Here ``on_train_end`` also writes ``last.ckpt`` when it is behind.
"""
from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class FinalModelCheckpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        # Lightning's ModelCheckpoint key: a checkpoint written before this class existed resumes with its state
        # (best score, the path of last.ckpt to overwrite), and one written now resumes under plain ModelCheckpoint
        return ModelCheckpoint.__qualname__ + super().state_key[len(type(self).__qualname__):]

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        # _should_skip_saving_checkpoint is Lightning's own test: not fitting, fast_dev_run, or this step already saved
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def read_checkpoint(path, what: str = "--ckpt_path") -> dict:
    """A checkpoint file's contents, weights and plain values only (``torch.load(weights_only=True)``, local or
    remote through Lightning's fsspec loader): a crafted file cannot run code. Errors are one line that names the
    file: missing, cut short (a killed save), or holding objects that are not weights."""
    import pickle

    from lightning.fabric.utilities.cloud_io import _load

    if "://" not in str(path) and not Path(str(path)).is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such file; give a checkpoint written by fit, e.g. "
                                "runs/<name>/version_0/checkpoints/last.ckpt")
    try:
        if "://" in str(path):
            return _load(str(path), map_location="cpu", weights_only=True)
        # memory-mapped: tensors are read when used, so a look at the settings (or a readability check) is cheap
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{what}={str(path)!r} holds objects other than weights and plain values, which are not "
                         f"loaded (they could run code): {str(err).splitlines()[0][:200]}; use a checkpoint written "
                         "by fit") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{what}={str(path)!r} is not a readable checkpoint ({str(err).splitlines()[0][:160]}); it "
                         "may be cut short by a kill during its save: use an earlier one") from None


def is_readable(path) -> bool:
    """Whether a local checkpoint loads (a save cut short by a kill does not); memory-mapped, so it reads little."""
    try:
        read_checkpoint(path)
        return True
    except (ValueError, FileNotFoundError):
        return False
