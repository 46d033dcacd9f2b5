"""Training-side helpers: progress reporting for runs whose output is not a terminal."""
from .progress import ProgressLog

__all__ = ["ProgressLog"]
