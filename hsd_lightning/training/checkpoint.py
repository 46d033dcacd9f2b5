"""Lightning's ``ModelCheckpoint``, except that with ``save_last`` the state at the end of ``fit`` is always in
``last.ckpt``.

Written by hand because Lightning writes ``last.ckpt`` only when it writes another checkpoint (here: after each
validation) and, at the end of training, only if it never wrote one. A fit whose ``max_steps`` is not a multiple of
``val_check_interval`` therefore left its last steps out of ``last.ckpt``: the XSum cell (75 steps, validation at
step 50) decoded the weights of step 50. Here ``on_train_end`` also writes ``last.ckpt`` when it is behind.
"""
from __future__ import annotations

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
