"""Layer schedules of the paper (§3): which layers (1-based, as in the paper) run for generated token t.

* SkipDecode, eq. 4: ``{i : i >= L - n(t)}`` with ``n(t) = (t*E_min + (t_max - t)*E_max) / t_max`` rounded to the
  nearest integer (halves up) -- the top ``n(t)+1`` layers, fewer as ``t`` grows.
* Hierarchical skipping, eq. 5: ``{i : i mod (s+1) = 0}``.
* HSD: the union of both.

Past ``t_max`` the schedule keeps its value at ``t_max``. The sets only shrink as ``t`` grows, which is why a
layer that stops running never needs key/values for later tokens (see ``runtime.py``).
"""
from __future__ import annotations

import math


def skipdecode_budget(t: int, t_max: int, e_min: int, e_max: int) -> int:
    """n(t) of eq. 4, rounded half up; ``t`` is clamped to ``[0, t_max]``."""
    t = min(max(t, 0), t_max)
    return math.floor((t * e_min + (t_max - t) * e_max) / t_max + 0.5)


def skipdecode_layers(t: int, num_layers: int, t_max: int, e_min: int, e_max: int) -> list[int]:
    n = skipdecode_budget(t, t_max, e_min, e_max)
    return list(range(max(1, num_layers - n), num_layers + 1))


def hierarchical_layers(num_layers: int, s: int) -> list[int]:
    return [i for i in range(1, num_layers + 1) if i % (s + 1) == 0]


def hsd_layers(t: int, num_layers: int, t_max: int, s: int, e_min: int, e_max: int) -> list[int]:
    return sorted(set(skipdecode_layers(t, num_layers, t_max, e_min, e_max)) | set(hierarchical_layers(num_layers, s)))


def calm_threshold(i: int, d: float) -> float:
    """CALM's decreasing confidence threshold after layer ``i`` (1-based): clamp(1 - d*i, 0, 1)."""
    return min(max(1.0 - d * i, 0.0), 1.0)


def scale_exit(e: int, num_layers: int, reference_layers: int = 36) -> int:
    """Scale an exit budget tuned for the paper's 36-layer GPT-2 to a model with ``num_layers`` layers:
    ``round(e * num_layers / 36)``, so E_max=12 keeps meaning "a third of the depth"."""
    return math.floor(e * num_layers / reference_layers + 0.5)
