"""What the libraries print that tells our users nothing, removed where our commands start (``main.py``, the sweep).

Written by hand because each library has its own switch and none of them has one for the lines below: Lightning's
"💡 Tip" for its cloud logger comes through the same logger as its (and our) progress lines, and the deprecation
warnings are raised by Lightning's and torchdata's own calls into torch, not by anything a user wrote.
"""
from __future__ import annotations

import logging
import sys
import warnings

# the start of each warning's message (a regex, as ``warnings.filterwarnings`` takes it) and why it is noise
NOISE_WARNINGS = (
    ".*LeafSpec.*",                      # lightning's own use of a deprecated torch API (utilities/_pytree.py)
    ".*'set_vital' is deprecated.*",     # torchdata's StatefulDataLoader calls a deprecated torch API
    ".*is_gradient_checkpointing.*",     # peft's use of a transformers API
    # bf16-mixed keeps the weights in float32, so the 32-bit size the summary prints is the true one
    ".*Precision bf16-mixed is not supported by the model summary.*",
)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.fabric.utilities.seed")


class _DropTips(logging.Filter):
    """Lightning's advertisement for its cloud logger ("💡 Tip: ... litlogger ..."), printed by every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        # the seed is the config's, every run; "no GPU / no TPU" says nothing on a CPU machine
        return not str(record.msg).startswith(("💡 Tip", "Seed set to", "TPU available", "GPU available: False"))


_DROP_TIPS = _DropTips()


def drop_library_noise() -> None:
    """Always on: the warnings above, Lightning's tip line, and the progress bars of datasets' ``map`` and of
    transformers' weight loading when the output is not a terminal (in a log file a bar is a run of carriage
    returns; ``fit`` writes its own plain progress lines there, ``training/progress.py``). Idempotent."""
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in RANK_ZERO_LOGGERS:
        logging.getLogger(name).addFilter(_DROP_TIPS)  # adding the same filter twice keeps one
    if not sys.stderr.isatty():
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.logging.disable_progress_bar()


def quiet_libraries() -> None:
    """For the main job's sweep (``--quiet``): also Lightning's device lines, every datasets and transformers progress
    bar, and transformers' load reports (e.g. "layers were not sharded" for the BERTScore encoder)."""
    import datasets
    import transformers

    drop_library_noise()
    # a resumed row whose inputs are all written already has an empty predict loader: expected, not a mistake
    warnings.filterwarnings("ignore", message=".*Total length of `DataLoader` across ranks is zero.*")
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("lightning.pytorch", "lightning.fabric", *RANK_ZERO_LOGGERS):
        logging.getLogger(name).setLevel(logging.WARNING)
