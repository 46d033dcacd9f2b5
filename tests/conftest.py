import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("HSD_DATA_DIR", ROOT / "data"))
FIXTURES = ROOT / "tests" / "fixtures" / "data"  # made-up rows in each dataset's native format (any clone)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-weight (SmolLM2) or long tests; run with -m slow")


@pytest.fixture(scope="session")
def tokenizer():
    from hsd_lightning.models.loading import load_tokenizer
    return load_tokenizer("tiny-gpt2")


@pytest.fixture(scope="session")
def data_dir():
    if not DATA_DIR.exists():
        pytest.skip(f"data root {DATA_DIR} is absent (set HSD_DATA_DIR to the datasets folder)")
    return DATA_DIR


@pytest.fixture(scope="session")
def fixture_dir():
    """The committed tiny datasets: data and config tests run on any clone."""
    return FIXTURES


@pytest.fixture(params=["fixtures", "real"])
def data_root(request):
    """Both roots: the committed fixtures always, the real data folder where it exists."""
    if request.param == "fixtures":
        return FIXTURES
    if not DATA_DIR.exists():
        pytest.skip(f"data root {DATA_DIR} is absent (set HSD_DATA_DIR to the datasets folder)")
    return DATA_DIR
