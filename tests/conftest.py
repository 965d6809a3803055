"""Shared fixtures: tests never touch the real MNIST unless marked ``slow``."""

from __future__ import annotations

import pytest
import torch
from helpers import fake_image_data

from rlopt.data import ImageData


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # one thread keeps timings stable and results reproducible across machines
    torch.set_num_threads(1)
    monkeypatch.setenv("RLOPT_DATA_DIR", str(tmp_path_factory.getbasetemp() / "rlopt-data"))


@pytest.fixture(scope="session")
def tiny_data() -> ImageData:
    """A tiny, learnable, seeded stand-in for MNIST."""
    return fake_image_data(n_train=256, n_test=64, seed=0)
