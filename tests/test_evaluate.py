"""evaluate.py and agents.evaluation on a tiny IDX dataset: outputs, paired seeds, policy checks."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import evaluate
from agents.baselines import BASELINE_NAMES, LossEMA, Method, policy_method
from agents.evaluation import (
    CSV_COLUMNS,
    EvaluationConfig,
    EvaluationResult,
    FlatnessSettings,
    RunRecord,
    held_out_seeds,
    line_search_radius,
    paired_wins,
)
from agents.evaluation import evaluate as run_evaluation
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.data import fake_image_data, save_idx_dataset
from rlopt.scheduler import PolicyFileError, build_q_network, save_policy
from rlopt.training import HELD_OUT_SEED_BASE

REPO = Path(__file__).resolve().parents[1]
SEEDS = 2
STEPS = 30
#: 600 training images load with a validation tail of 100 (1/6); the test split has 200
SIZES = ["--train-size", "400", "--validation-size", "100"]
ROW_FIELDS = {"method", "seed", "steps_to_threshold", "final_train_loss", "test_accuracy", "wall_s"}


def losses(record: RunRecord) -> np.ndarray:
    """The per-step mini-batch losses of a run."""
    assert record.curves is not None
    return record.curves.loss


def write_policy(path: Path, mode: str, optimizer: str | None) -> Path:
    """A small random-weight policy; ``optimizer`` goes into the metadata as training would write it."""
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    observation = ObservationSpec()
    torch.manual_seed(0)
    network = build_q_network([observation.size, 16, actions.n_actions])
    metadata = {} if optimizer is None else {"train_config": {"optimizer": optimizer}}
    return save_policy(path, network, observation, actions, metadata=metadata)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_idx_dataset(fake_image_data(n_train=600, n_test=200, seed=0), tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("policy") / "policy.rlopt", "lr", "sgd")


@pytest.fixture(scope="module")
def cli_run(data_dir: Path, policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real command-line evaluation: 1 policy + the 7 default baselines × 2 seeds × 30 steps."""
    out = tmp_path_factory.mktemp("eval")
    command = [
        sys.executable, str(REPO / "evaluate.py"), "--policy", str(policy_file), "--seeds", str(SEEDS),
        "--steps", str(STEPS), "--data-dir", str(data_dir), *SIZES, "--threads", "1", "--out", str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert "paired wins" in done.stdout and "not reached" in done.stdout
    return out


def test_cli_writes_all_outputs_with_documented_fields(cli_run: Path, policy_file: Path) -> None:
    results = json.loads((cli_run / "results.json").read_text())
    methods = [f"policy:{policy_file}", *BASELINE_NAMES]
    assert [m["name"] for m in results["methods"]] == methods
    assert len(results["rows"]) == len(methods) * SEEDS
    for row in results["rows"]:
        assert ROW_FIELDS <= row.keys()
        assert row["seed"] >= HELD_OUT_SEED_BASE
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["wall_s"] > 0
    assert results["config"]["steps"] == STEPS and results["seeds"] == held_out_seeds(SEEDS)
    summary = results["summary"]
    assert set(summary) == set(methods)
    policy = summary[f"policy:{policy_file}"]
    assert policy["runs"] == SEEDS and {"mean", "std", "n"} <= policy["final_train_loss"].keys()
    assert set(policy["wins"]) == set(BASELINE_NAMES)
    assert "sgd" not in summary["sgd"]["wins"]

    with (cli_run / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == CSV_COLUMNS and len(rows) == len(methods) * SEEDS

    with np.load(cli_run / "curves.npz") as curves:
        assert list(curves["methods"]) == methods
        for key in ("loss", "smoothed_loss", "lr", "gamma", "momentum"):
            assert curves[key].shape == (len(methods), SEEDS, STEPS)
    for png in ("loss_curves.png", "traces.png", "steps_to_threshold.png"):
        assert (cli_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (cli_run / png).stat().st_size > 5000


def test_not_reached_is_null_not_a_number(cli_run: Path) -> None:
    # after 30 steps an EMA with β=0.9 still holds 0.9^29 ≈ 5% of the first loss (~2.3): above 0.02
    results = json.loads((cli_run / "results.json").read_text())
    assert all(row["steps_to_threshold"] is None and row["reached"] is False for row in results["rows"])
    assert all(entry["reached"] == 0 and entry["steps_to_threshold"]["mean"] is None
               for entry in results["summary"].values())
    text = (cli_run / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    with (cli_run / "results.csv").open() as handle:
        assert all(row["steps_to_threshold"] == "" for row in csv.DictReader(handle))


def test_paired_seeds_identical_across_invocations_and_methods(cli_run: Path, data_dir: Path,
                                                               tmp_path: Path) -> None:
    torch.set_num_threads(1)
    # the second invocation spreads the runs over two processes: results must not depend on it
    config = EvaluationConfig(baselines=BASELINE_NAMES, seeds=SEEDS, steps=STEPS, data_dir=str(data_dir),
                              train_size=400, validation_size=100, threads=1, workers=2)
    again = run_evaluation(config, progress=False)
    with np.load(cli_run / "curves.npz") as curves:
        first = {name: curves["loss"][i] for i, name in enumerate(curves["methods"])}
    for name in BASELINE_NAMES:  # the same start points and batches give bit-identical curves
        np.testing.assert_array_equal(np.stack([losses(r) for r in again.of_method(name)]), first[name])

    for seed in again.seeds:
        # every method starts from the same weights on the same first batch …
        first_losses = {losses(again.record(name, seed))[0] for name in BASELINE_NAMES}
        assert len(first_losses) == 1
        # … and sees the same batches: plateau (patience 100 steps) is plain SGD for 30 steps
        np.testing.assert_array_equal(losses(again.record("plateau", seed)), losses(again.record("sgd", seed)))
    # different seeds are different start points
    assert losses(again.record("sgd", again.seeds[0]))[0] != losses(again.record("sgd", again.seeds[1]))[0]


@pytest.mark.parametrize(
    ("mode", "optimizer", "expected"),
    [
        ("rsgd", "sgd", "'rsgd' policy cannot drive SGD"),
        ("lr+rsgd", None, "'lr+rsgd' policy cannot drive SGD"),
        ("rsgd", "adam", "'rsgd' policy cannot drive Adam"),
    ],
)
def test_policy_for_another_action_mode_is_refused(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], mode: str, optimizer: str | None,
    expected: str,
) -> None:
    path = write_policy(tmp_path / "p.rlopt", mode, optimizer)
    with pytest.raises(PolicyFileError, match=re.escape(expected)):
        policy_method(path)
    code = evaluate.main(["--policy", str(path), "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert err.startswith("evaluate.py: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_rsgd_policy_is_accepted_on_rsgd(tmp_path: Path) -> None:
    method = policy_method(write_policy(tmp_path / "p.rlopt", "rsgd", "rsgd"))
    assert method.kind == "policy" and "rsgd" in method.description


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_corrupt_or_missing_policy_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "bad.rlopt"
    if content is not None:
        path.write_bytes(content)
    assert evaluate.main(["--policy", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_baseline_and_oversized_subset_are_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert evaluate.main(["--baselines", "sgd,lion", "--data-dir", str(data_dir)]) == 2
    assert "unknown baseline 'lion'" in capsys.readouterr().err
    assert evaluate.main(["--baselines", "sgd", "--data-dir", str(data_dir), "--train-size", "8000"]) == 2
    assert "--train-size 8000" in capsys.readouterr().err


def _record(method: str, seed: int, loss: float, acc: float, steps: int | None) -> RunRecord:
    return RunRecord(method=method, seed=seed, steps=100, steps_to_threshold=steps, final_train_loss=loss,
                     final_train_accuracy=acc, final_smoothed_loss=loss, val_loss=loss, val_accuracy=acc,
                     test_loss=loss, test_accuracy=acc, wall_s=1.0, diverged_at=None)


def test_paired_wins_count_not_reached_and_divergence_as_worse() -> None:
    def method(name: str, kind: Any) -> Method:
        return Method(name, kind, name, lambda model, context: (None, None))  # type: ignore[arg-type,return-value]

    records = (
        _record("p", 1, 0.1, 0.9, 50), _record("sgd", 1, 0.2, 0.8, None),      # p wins all three
        _record("p", 2, math.nan, 0.1, None), _record("sgd", 2, 0.2, 0.8, 90),  # p diverged: loses all
        _record("p", 3, 0.2, 0.8, None), _record("sgd", 3, 0.2, 0.8, None),     # ties: no win
    )
    result = EvaluationResult(config=EvaluationConfig(seeds=3), methods=(method("p", "policy"),
                              method("sgd", "baseline")), seeds=(1, 2, 3), records=records)
    assert paired_wins(result, "p", "sgd") == {"final_train_loss": 1, "test_accuracy": 1,
                                               "steps_to_threshold": 1, "seeds": 3}
    assert paired_wins(result, "sgd", "p") == {"final_train_loss": 1, "test_accuracy": 1,
                                               "steps_to_threshold": 1, "seeds": 3}


def test_line_search_brackets_and_bisects_to_tolerance() -> None:
    settings = FlatnessSettings(epsilon=0.05, rel_tolerance=1e-3)
    radius = line_search_radius(lambda r: r**2 <= 0.05, settings)  # |ΔÎ| = r²: r* = √0.05
    assert math.sqrt(0.05) * (1 - 1e-3) <= radius <= math.sqrt(0.05)
    assert line_search_radius(lambda r: abs(r - 3.0) > 0 and r <= 37.0, settings) == pytest.approx(37, rel=1e-3)
    assert line_search_radius(lambda r: True, settings) == settings.max_radius


def test_flatness_is_measured_and_paired(data_dir: Path) -> None:
    config = EvaluationConfig(baselines=("sgd", "adam"), seeds=1, steps=20, data_dir=str(data_dir),
                              train_size=400, validation_size=100, flatness=True,
                              flatness_settings=FlatnessSettings(directions=2, subset_size=100))
    result = run_evaluation(config, progress=False)
    for record in result.records:
        assert record.flatness_radius is not None and record.flatness_radius > 0
        assert record.flatness_radius_std is not None
    assert result.records[0].curves is not None


def test_loss_ema() -> None:
    ema = LossEMA(0.9)
    assert ema.update(1.0) == 1.0 and ema.update(0.0) == pytest.approx(0.9)
