"""Smoke test of benchmarks/rsgd_table1.py (Table I of the R-SGD paper) on tiny fake data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import fake_image_data

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "rsgd_table1.py"


@pytest.fixture(scope="module")
def table1() -> ModuleType:
    # benchmarks/ is not a package: load the script by path (registered first, as dataclasses need)
    spec = importlib.util.spec_from_file_location("rsgd_table1", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_rows_fields_and_pairing(table1: ModuleType) -> None:
    data = fake_image_data(n_train=300, n_test=80, seed=0, n_validation=50)
    protocol = table1.Protocol(train_sizes=(100, 150), test_size=40, batch_size=25, epochs=2, runs=2, curve_every=1)
    result = table1.run_table1(data, protocol, progress=False)

    rows = result["rows"]
    assert [(r["method"], r["train_size"]) for r in rows] == [
        (label, size) for label in ("BackProp", "R-SGD", "Adam") for size in (100, 150)
    ]
    for row in rows:
        assert set(row) == {"method", "train_size", "mean_test_error", "std_test_error", "runs"}
        assert len(row["runs"]) == 2
        assert all(0.0 <= e <= 1.0 for e in row["runs"])
        assert row["mean_test_error"] == pytest.approx(sum(row["runs"]) / 2)
        assert row["std_test_error"] >= 0.0
    json.dumps(rows)  # plain JSON types

    curves = result["curves"]
    assert len(curves) == 2 * 2 * 3
    assert all([p["epoch"] for p in c["curve"]] == [0, 1, 2] for c in curves)
    # paired: within a (run, M) every method starts from the same network on the same test images
    for run in range(2):
        for size in (100, 150):
            starts = {c["curve"][0]["test_error"] for c in curves if c["run"] == run and c["train_size"] == size}
            assert len(starts) == 1


def test_same_seed_same_result(table1: ModuleType) -> None:
    data = fake_image_data(n_train=200, n_test=60, seed=1, n_validation=20)
    protocol = table1.Protocol(train_sizes=(100,), test_size=50, batch_size=25, epochs=2, runs=1)
    first = table1.run_table1(data, protocol, ["rsgd"], progress=False)
    second = table1.run_table1(data, protocol, ["rsgd"], progress=False)
    assert first["rows"] == second["rows"]


def test_unknown_method_is_an_error(table1: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        table1.run_table1(fake_image_data(n_train=64, n_test=16), table1.QUICK, ["sgd"], progress=False)
