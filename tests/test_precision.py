"""bf16-mixed on a CPU without native bfloat16: measured, warned once with the fix, never silently slow."""
import warnings

import pytest

from hsd_lightning.cli import CONFIG_DIR, cli_main
from hsd_lightning.training import precision
from hsd_lightning.training.precision import SLOW_RATIO, bf16_slowdown, cpu_bf16_warning
from tests.test_cli_configs import _tiny_args


def test_warning_names_the_ratio_and_the_fix():
    msg = cpu_bf16_warning("bf16-mixed", True, slowdown=lambda: 160.4)
    assert msg == ("precision bf16-mixed: this CPU runs bfloat16 matmuls 160x slower than float32 (no native "
                   "bfloat16, e.g. AVX2 only), so this run will be far slower than in float32; add "
                   "--trainer.precision 32-true")
    assert cpu_bf16_warning("bf16-true", True, slowdown=lambda: SLOW_RATIO).startswith("precision bf16-true:")


@pytest.mark.parametrize("prec,on_cpu,ratio", [("bf16-mixed", True, 1.3),     # native bf16: faster or near
                                               ("bf16-mixed", True, SLOW_RATIO - 0.1),
                                               ("bf16-mixed", False, 160.0),  # a GPU: not this check's business
                                               ("32-true", True, 160.0)])
def test_no_warning_when_bf16_is_not_slow_or_not_used(prec, on_cpu, ratio):
    calls = []
    assert cpu_bf16_warning(prec, on_cpu, slowdown=lambda: calls.append(1) or ratio) is None
    assert len(calls) == (prec.startswith("bf16") and on_cpu)  # timed only when it matters


def test_slowdown_is_a_measured_positive_ratio():
    assert bf16_slowdown(n=64, reps=1) > 0


def test_cli_warns_for_bf16_on_a_slow_cpu(tmp_path, fixture_dir, monkeypatch):
    args = _tiny_args(CONFIG_DIR / "default.yaml", tmp_path, fixture_dir)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda: 100.0)  # the check reads it at call time
    with pytest.warns(UserWarning, match=r"precision bf16-mixed: this CPU runs bfloat16 matmuls 100x slower .* "
                                         r"add --trainer.precision 32-true"):
        cli_main([*args, "--trainer.precision", "bf16-mixed"], run=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli_main([*args, "--trainer.precision", "32-true"], run=False)
    assert not [w for w in seen if "bfloat16 matmuls" in str(w.message)]
