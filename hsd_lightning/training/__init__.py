"""Training-side helpers: progress reporting for runs whose output is not a terminal, and a last.ckpt that holds
the end of fit."""
from .checkpoint import FinalModelCheckpoint
from .progress import ProgressLog

__all__ = ["FinalModelCheckpoint", "ProgressLog"]
