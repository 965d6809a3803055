"""rlopt.bench statistics: the t quantile and confidence interval against hand values, paired wins and
verdicts (divergence, not reached), flatness, and the output-directory check."""

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
    mean_ci,
    paired_wins,
    summarize,
    t_quantile,
)
from rlopt.bench.methods import BaselineSettings
from rlopt.bench.stats import format_report
from rlopt.control import ObservationSpec, ema_update
from rlopt.data import ImageData
from rlopt.tasks import get_task

TASK = "inverted-mlp-relu"


def _record(method: str, seed: int, loss: float, acc: float, steps: int | None, *,
            diverged_at: int | None = None) -> RunRecord:
    return RunRecord(task=TASK, budget=100, method=method, seed=seed, sweep_lr=None, steps_to_threshold=steps,
                     final_train_loss=loss, final_train_accuracy=acc, final_smoothed_loss=loss, val_loss=loss,
                     val_accuracy=acc, test_loss=loss, test_accuracy=acc, wall_s=1.0, diverged_at=diverged_at)


def _method(name: str, kind: Any) -> Method:
    return Method(name, kind, name, lambda model, context: None)  # type: ignore[arg-type,return-value]


def _result(records: tuple[RunRecord, ...], seeds: tuple[int, ...]) -> EvaluationResult:
    return EvaluationResult(config=EvaluationConfig(tasks=(TASK,), budgets=(100,), seeds=len(seeds)),
                            methods=(_method("policy:p.rlopt", "policy"), _method("sgd", "baseline")),
                            tasks=(get_task(TASK),), budgets=(100,), seeds=seeds, records=records)


# ----------------------------------------------------------------------------------------------
# confidence intervals
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "expected"),  # two-sided 95 % critical values of Student's t, from printed tables
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (10, 2.2281), (29, 2.0452), (120, 1.9799)],
)
def test_t_quantile_matches_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_other_levels_and_bad_input() -> None:
    assert t_quantile(0.95, 5) == pytest.approx(2.0150, abs=1e-4)
    assert t_quantile(0.995, 9) == pytest.approx(3.2498, abs=1e-4)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    for q, df in ((1.0, 3), (0.975, 0), (0.3, 3)):
        with pytest.raises(ValueError):
            t_quantile(q, df)


def test_mean_ci_against_a_hand_computation() -> None:
    # 1..5: mean 3, s = √2.5, half-width t(0.975, 4)·s/√5 = 2.776445·0.707107 = 1.963243
    stat = mean_ci([1, 2, 3, 4, 5])
    assert stat["mean"] == 3 and stat["n"] == 5 and stat["std"] == pytest.approx(math.sqrt(2.5))
    assert stat["ci"] == pytest.approx(1.963243, abs=1e-6)
    assert mean_ci([0.4, None, math.nan, 0.6]) == pytest.approx({"mean": 0.5, "ci": 12.7062 * 0.1, "std": 0.1414214,
                                                                  "n": 2}, abs=1e-4)
    assert mean_ci([2.0]) == {"mean": 2.0, "ci": None, "std": 0.0, "n": 1}
    assert mean_ci([None]) == {"mean": None, "ci": None, "std": None, "n": 0}


# ----------------------------------------------------------------------------------------------
# paired wins and verdicts
# ----------------------------------------------------------------------------------------------


def test_paired_wins_count_divergence_and_not_reached_as_worse() -> None:
    p = "policy:p.rlopt"
    records = (
        _record(p, 1, 0.1, 0.9, 50), _record("sgd", 1, 0.2, 0.8, None),                  # p wins all four
        _record(p, 2, 0.05, 0.95, None, diverged_at=80), _record("sgd", 2, 0.2, 0.8, 90),  # p diverged: loses
        _record(p, 3, 0.2, 0.8, None), _record("sgd", 3, 0.2, 0.8, None),                # ties: no win
        _record(p, 4, 2.3, 0.1, None, diverged_at=3), _record("sgd", 4, 2.3, 0.1, None, diverged_at=5),  # tie
    )
    result = _result(records, (1, 2, 3, 4))
    assert paired_wins(result, TASK, 100, p, "sgd") == {"final_train_loss": 1, "test_accuracy": 1, "test_loss": 1,
                                                        "steps_to_threshold": 1, "seeds": 4}
    assert paired_wins(result, TASK, 100, "sgd", p) == {"final_train_loss": 1, "test_accuracy": 1, "test_loss": 1,
                                                        "steps_to_threshold": 1, "seeds": 4}
    summary = summarize(result)
    group = next(g for g in summary["groups"] if g["method"] == p)
    assert group["reached"] == 1 and group["steps_to_threshold"]["mean"] == 50 and group["diverged"] == 2
    assert group["final_train_loss"]["n"] == 4  # diverged runs carry finite penalty numbers and count
    (verdict,) = summary["verdicts"]
    assert verdict["line"] == ("learned vs sgd: 1/4 seeds lower train loss, 1/4 higher test accuracy, "
                               "1/4 lower test loss")
    report = format_report(result, summary)
    assert "learned vs sgd: 1/4 seeds lower train loss" in report and "## inverted-mlp-relu, 100 steps" in report


def test_line_search_brackets_and_bisects_to_tolerance() -> None:
    settings = FlatnessSettings(epsilon=0.05, rel_tolerance=1e-3)
    radius = line_search_radius(lambda r: r**2 <= 0.05, settings)  # |ΔÎ| = r²: r* = √0.05
    assert math.sqrt(0.05) * (1 - 1e-3) <= radius <= math.sqrt(0.05)
    assert line_search_radius(lambda r: abs(r - 3.0) > 0 and r <= 37.0, settings) == pytest.approx(37, rel=1e-3)
    assert line_search_radius(lambda r: True, settings) == settings.max_radius


def test_flatness_is_measured_at_every_budget(tiny_data: ImageData) -> None:
    config = EvaluationConfig(tasks=(TASK,), baselines=("sgd", "adam"), seeds=1, budgets=(10, 20), train_size=128,
                              validation_size=32, flatness=True,
                              flatness_settings=FlatnessSettings(directions=2, subset_size=100))
    result = evaluate(config, data=tiny_data, progress=False)
    assert len(result.records) == 4
    for record in result.records:
        assert record.flatness_radius is not None and record.flatness_radius > 0
        assert record.flatness_radius_std is not None


def test_loss_ema() -> None:
    first = ema_update(None, 1.0, 0.9)
    assert first == 1.0 and ema_update(first, 0.0, 0.9) == pytest.approx(0.9)


def test_defaults_come_from_their_one_home() -> None:
    from rlopt.tasks import TaskSize

    config = EvaluationConfig()
    assert (config.train_size, config.validation_size) == (TaskSize.train_size, TaskSize.validation_size)
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
    config = EvaluationConfig(tasks=(TASK,), baselines=("sgd",), seeds=1, budgets=(10_000_000,), train_size=128,
                              validation_size=32)
    with pytest.raises(OutputDirError):  # 10^7 steps would not finish: the check comes first
        evaluate(config, tmp_path / "file", data=tiny_data, progress=False)
