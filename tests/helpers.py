"""Shared test helpers."""
import torch

from hsd_lightning.decoding import model_parts
from hsd_lightning.models.loading import load_model


def tiny_model(name: str, sharp: bool = False):
    """A tiny random model (eval mode) with larger initial weights, so greedy tokens differ between layer plans;
    ``sharp``: peaked next-token distributions, so CALM's confidence crosses its thresholds at varied layers."""
    m = load_model(name, tiny_overrides=dict(initializer_range=0.1)).eval()
    if sharp:
        with torch.no_grad():
            model_parts(m).final_norm.weight.mul_(12)
    return m
