"""rlopt.bench statistics, flatness and smoothing on hand-made records and tiny in-memory runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from rlopt.bench import (
    EvaluationConfig,
    EvaluationResult,
    FlatnessSettings,
    Method,
    OutputDirError,
    RunRecord,
    check_output_dir,
    evaluate,
    line_search_radius,
    paired_wins,
    summarize,
)
from rlopt.bench.methods import BaselineSettings
from rlopt.control import ObservationSpec, ema_update
from rlopt.data import ImageData
from rlopt.tasks import TaskSize


def _record(method: str, seed: int, loss: float, acc: float, steps: int | None) -> RunRecord:
    return RunRecord(method=method, seed=seed, steps=100, steps_to_threshold=steps, final_train_loss=loss,
                     final_train_accuracy=acc, final_smoothed_loss=loss, val_loss=loss, val_accuracy=acc,
                     test_loss=loss, test_accuracy=acc, wall_s=1.0, diverged_at=None)


def _method(name: str, kind: Any) -> Method:
    return Method(name, kind, name, lambda model, context: (None, None))  # type: ignore[arg-type,return-value]


def test_paired_wins_count_not_reached_and_divergence_as_worse() -> None:
    records = (
        _record("p", 1, 0.1, 0.9, 50), _record("sgd", 1, 0.2, 0.8, None),      # p wins all three
        _record("p", 2, math.nan, 0.1, None), _record("sgd", 2, 0.2, 0.8, 90),  # p diverged: loses all
        _record("p", 3, 0.2, 0.8, None), _record("sgd", 3, 0.2, 0.8, None),     # ties: no win
    )
    result = EvaluationResult(config=EvaluationConfig(seeds=3), methods=(_method("p", "policy"),
                              _method("sgd", "baseline")), seeds=(1, 2, 3), records=records)
    assert paired_wins(result, "p", "sgd") == {"final_train_loss": 1, "test_accuracy": 1,
                                               "steps_to_threshold": 1, "seeds": 3}
    assert paired_wins(result, "sgd", "p") == {"final_train_loss": 1, "test_accuracy": 1,
                                               "steps_to_threshold": 1, "seeds": 3}
    summary = summarize(result)
    assert summary["p"]["reached"] == 1 and summary["p"]["steps_to_threshold"]["mean"] == 50
    assert summary["p"]["final_train_loss"]["n"] == 2  # the NaN of the diverged run is left out
    assert "p" not in summary["p"]["wins"] and set(summary["p"]["wins"]) == {"sgd"}


def test_line_search_brackets_and_bisects_to_tolerance() -> None:
    settings = FlatnessSettings(epsilon=0.05, rel_tolerance=1e-3)
    radius = line_search_radius(lambda r: r**2 <= 0.05, settings)  # |ΔÎ| = r²: r* = √0.05
    assert math.sqrt(0.05) * (1 - 1e-3) <= radius <= math.sqrt(0.05)
    assert line_search_radius(lambda r: abs(r - 3.0) > 0 and r <= 37.0, settings) == pytest.approx(37, rel=1e-3)
    assert line_search_radius(lambda r: True, settings) == settings.max_radius


def test_flatness_is_measured_and_paired(tiny_data: ImageData) -> None:
    config = EvaluationConfig(baselines=("sgd", "adam"), seeds=1, steps=20, train_size=128, validation_size=32,
                              flatness=True, flatness_settings=FlatnessSettings(directions=2, subset_size=100))
    result = evaluate(config, data=tiny_data, progress=False)
    for record in result.records:
        assert record.flatness_radius is not None and record.flatness_radius > 0
        assert record.flatness_radius_std is not None
    assert result.records[0].curves is not None


def test_loss_ema() -> None:
    first = ema_update(None, 1.0, 0.9)
    assert first == 1.0 and ema_update(first, 0.0, 0.9) == pytest.approx(0.9)


def test_defaults_come_from_their_one_home() -> None:
    config = EvaluationConfig()
    assert (config.train_size, config.validation_size, config.batch_size) == (
        TaskSize.train_size, TaskSize.validation_size, TaskSize.batch_size)
    assert config.smoothing == ObservationSpec.loss_smoothing == BaselineSettings().plateau_smoothing


def test_output_dir_check_creates_nothing(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="not a directory"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputDirError, match="not a directory"):
        check_output_dir(tmp_path / "file" / "sub")


def test_library_evaluate_checks_out_before_training(tmp_path: Path, tiny_data: ImageData) -> None:
    (tmp_path / "file").write_text("x")
    config = EvaluationConfig(baselines=("sgd",), seeds=1, steps=10_000_000, train_size=128, validation_size=32)
    with pytest.raises(OutputDirError):  # 10^7 steps would not finish: the check comes first
        evaluate(config, tmp_path / "file", data=tiny_data, progress=False)
