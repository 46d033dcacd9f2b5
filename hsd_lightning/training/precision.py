"""Is bfloat16 worth it on this CPU? A measured check behind ``--trainer.precision bf16-mixed`` on a CPU.

The CPU configs use ``bf16-mixed`` because it trains 1.4-1.5x faster on CPUs with native bfloat16 (AVX-512-BF16 or
AMX). On a CPU without it the same matmuls fall back to a slow path: measured on a 2-core AVX2 AMD EPYC, a 2048x2048
matmul took 0.40 s in float32 and 64 s in bfloat16 (160x), and ``fit`` of
configs/experiments/commongen/smollm2_commongen_skipaware_full_25k.yaml
printed no step line in 8 minutes where float32 ran 18 s/step.
Neither Lightning nor torch says so; this check times one small matmul both ways (well under a second) and warns,
with the fix, when bfloat16 is many times slower. It warns instead of failing: the run is still correct, only slow,
and a user may want bfloat16 numerics on purpose.
"""
from __future__ import annotations

import time

import torch

SLOW_RATIO = 4.0  # bfloat16 this many times slower than float32 -> warn (native bf16 is faster, not slower)


def bf16_slowdown(n: int = 256, reps: int = 5) -> float:
    """Fastest of ``reps`` n x n bfloat16 matmuls over the fastest float32 one, on this CPU (one warm-up each). The
    fastest, not the median: another process busy on the same cores (a training run beside an export) slows single
    calls at random, and a median of three then read 5x on a CPU with native bfloat16 (AVX-512-BF16)."""
    a = torch.randn(n, n)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        runs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            x @ x
            runs.append(time.perf_counter() - t0)
        times[dtype] = min(runs)
    return times[torch.bfloat16] / max(times[torch.float32], 1e-9)


def cpu_bf16_warning(precision: str, on_cpu: bool, slowdown=None) -> str | None:
    """The one-line warning for ``precision`` on this machine, or None when there is nothing to say."""
    if not on_cpu or not str(precision).startswith("bf16"):
        return None
    ratio = (slowdown or bf16_slowdown)()
    if ratio < SLOW_RATIO:
        return None
    return (f"precision {precision}: this CPU runs bfloat16 matmuls {ratio:.0f}x slower than float32 (no native "
            f"bfloat16, e.g. AVX2 only), so this run will be far slower than in float32; add "
            f"--trainer.precision 32-true")
