"""benchmarks/unseen_models.py: the shipped schedulers in plain loops on models no agent trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def unseen() -> ModuleType:
    return load_benchmark("unseen_models")


def test_every_method_runs_paired_and_the_same_seed_gives_the_same_numbers(unseen: ModuleType, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The teacher task needs no dataset: 2 seeds x 4 methods, each learned scheduler against its constant
    rate on the same seed, written to --out; a second run reproduces every number."""
    out = tmp_path / "unseen.json"
    argv = ["--tasks", "teacher", "--seeds", "2", "--budgets", "30", "--out", str(out)]
    assert unseen.main(argv) == 0
    records = json.loads(out.read_text())["records"]
    assert sorted((r["seed"], r["method"]) for r in records) == sorted(
        (seed, method) for seed in {r["seed"] for r in records} for method in unseen.METHODS
    )
    for r in records:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_metric"]) and not r["diverged"]
        assert r["lr_at"][0] == (0.1 if r["method"].endswith("sgd") else 1e-3)
        if not r["method"].startswith("learned-"):
            assert set(r["lr_at"]) == {r["lr_at"][0]}  # constant
    assert "learned-sgd vs sgd: " in capsys.readouterr().out
    first = records
    assert unseen.main(argv) == 0
    again = json.loads(out.read_text())["records"]
    assert [(r["train_loss"], r["test_metric"]) for r in again] == [(r["train_loss"], r["test_metric"]) for r in first]
