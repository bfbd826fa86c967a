import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a test that passed once passes every time."""
    import random

    import torch

    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mnist_available() -> bool:
    """Tests that need MNIST fail loudly (never skip) when it is missing: CI must provide it."""
    from labsupport import data

    raw = data.data_root() / "MNIST" / "raw"
    if not all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in data.MNIST_FILES):
        pytest.fail(f"MNIST is not in {raw}: set LABSUPPORT_DATA to a folder holding MNIST/raw (CI uses ../shared/data)")
    return True
