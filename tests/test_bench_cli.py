"""evaluate.py / rlopt.bench.cli on a tiny IDX dataset: outputs, paired seeds, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fake_image_data, save_idx_dataset

import rlopt.bench.cli as cli
from rlopt.bench import (
    BASELINE_NAMES,
    CSV_COLUMNS,
    TRACE_NAMES,
    EvaluationConfig,
    RunRecord,
    evaluate,
    held_out_seeds,
    policy_method,
)
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.models import MODEL_NAMES
from rlopt.scheduler import PolicyFileError, build_q_network, save_policy
from rlopt.training import HELD_OUT_SEED_BASE, OPTIMIZER_PRESETS

REPO = Path(__file__).resolve().parents[1]
SEEDS = 2
STEPS = 30
#: 600 training images load with a validation tail of 100 (1/6); the test split has 200
SIZES = ["--train-size", "400", "--validation-size", "100"]
ROW_FIELDS = {"method", "seed", "steps_to_threshold", "final_train_loss", "test_accuracy", "wall_s"}
#: modules neither evaluate.py nor rlopt.bench may load
FORBIDDEN = ("stable_baselines3", "gymnasium", "envs", "agents")


def losses(record: RunRecord) -> np.ndarray:
    """The per-step mini-batch losses of a run."""
    assert record.curves is not None
    return record.curves.loss


def write_policy(path: Path, mode: str, optimizer: str) -> Path:
    """A small random-weight policy declared for ``optimizer`` at its preset starting rate."""
    actions = ActionSpec(mode=mode)  # type: ignore[arg-type]
    observation = ObservationSpec()
    torch.manual_seed(0)
    network = build_q_network([observation.size, 16, actions.n_actions])
    return save_policy(path, network, observation, actions, optimizer=optimizer,
                       initial_lr=OPTIMIZER_PRESETS[optimizer].lr)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of the last call, checked to be exactly one line without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


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
        assert TRACE_NAMES == ("loss", "smoothed_loss", "lr", "reinforcement", "momentum")
        for key in TRACE_NAMES:
            assert curves[key].shape == (len(methods), SEEDS, STEPS)
        assert "gamma" not in curves
    for png in ("loss_curves.png", "traces.png", "steps_to_threshold.png"):
        assert (cli_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (cli_run / png).stat().st_size > 5000


def test_traces_record_reinforcement_lr_and_momentum(cli_run: Path) -> None:
    with np.load(cli_run / "curves.npz") as curves:
        index = {name: i for i, name in enumerate(curves["methods"])}
        reinforcement, lr, momentum = curves["reinforcement"], curves["lr"], curves["momentum"]
        # R-SGD's Γ(t) = 1 − 1/√t: 0 at the first step, then rising towards 1
        rsgd = reinforcement[index["rsgd"], 0]
        np.testing.assert_allclose(rsgd, 1 - 1 / np.sqrt(np.arange(1, STEPS + 1)), atol=1e-6)
        assert not reinforcement[index["sgd"]].any() and not reinforcement[index["adam"]].any()
        np.testing.assert_array_equal(lr[index["sgd"]], 0.1)
        np.testing.assert_array_equal(momentum[index["momentum"]], 0.9)
        assert lr[index["cosine"], 0, -1] < lr[index["cosine"], 0, 0]


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


def test_paired_seeds_identical_across_invocations_and_methods(cli_run: Path, data_dir: Path) -> None:
    torch.set_num_threads(1)
    # the second invocation spreads the runs over two processes: results must not depend on it
    config = EvaluationConfig(baselines=BASELINE_NAMES, seeds=SEEDS, steps=STEPS, data_dir=str(data_dir),
                              train_size=400, validation_size=100, threads=1, workers=2)
    again = evaluate(config, progress=False)
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
        ("lr+rsgd", "sgd", "'lr+rsgd' policy cannot drive SGD"),
        ("rsgd", "adam", "'rsgd' policy cannot drive Adam"),
    ],
)
def test_policy_for_another_action_mode_is_refused(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], mode: str, optimizer: str, expected: str
) -> None:
    path = write_policy(tmp_path / "p.rlopt", mode, optimizer)
    with pytest.raises(PolicyFileError, match=re.escape(expected)):
        policy_method(path)
    code = cli.main(["--policy", str(path), "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    err = one_line_error(capsys)
    assert code == 2 and expected in err
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
    assert cli.main(["--policy", str(path), "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert str(path) in err
    assert not (tmp_path / "o").exists()


def test_unknown_baseline_and_oversized_subset_are_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["--baselines", "sgd,lion", "--data-dir", str(data_dir)]) == 2
    assert "unknown baseline 'lion'" in one_line_error(capsys)
    assert cli.main(["--baselines", "sgd", "--data-dir", str(data_dir), "--train-size", "8000"]) == 2
    assert "--train-size 8000" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------
# issue 15 §11/§12: one-line errors, exit 2, checked before any run, nothing half-made
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_preparation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command line gets as far as loading data or building methods."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare() ran although the command line was unusable")

    monkeypatch.setattr(cli, "prepare", forbidden)


@pytest.mark.usefixtures("no_preparation")
def test_out_pointing_at_a_file_is_refused_before_anything_runs(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    base = ["--baselines", "sgd", "--seeds", "1", "--steps", "5", "--data-dir", str(data_dir), *SIZES]
    assert cli.main([*base, "--out", str(target)]) == 2
    assert str(target) in one_line_error(capsys) and target.read_text() == "keep me"
    assert cli.main([*base, "--out", str(target / "below")]) == 2
    assert "not a directory" in one_line_error(capsys)
    assert target.read_text() == "keep me"


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_unavailable_mps_is_a_one_line_error(tmp_path: Path, data_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = cli.main(["--device", "mps", "--baselines", "sgd", "--data-dir", str(data_dir), *SIZES, "--out", str(out)])
    assert code == 2 and "mps" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_a_one_line_error(tmp_path: Path, data_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = cli.main(["--device", "cuda", "--baselines", "sgd", "--data-dir", str(data_dir), *SIZES,
                     "--out", str(out)])
    assert code == 2 and "cuda" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--train-size", "10"], "--train-size 10 is smaller than one batch of 32"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--seeds", "0"], "seeds must be >= 1"),
        (["--model", "resnet"], "invalid choice 'resnet'"),
        (["--steps", "many"], "--steps"),
        (["--device", "tpu"], "invalid choice 'tpu'"),
    ],
)
@pytest.mark.usefixtures("no_preparation")
def test_invalid_settings_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    out = tmp_path / "o"
    assert cli.main([*flags, "--out", str(out)]) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()


def test_train_size_beyond_the_data_is_a_one_line_error(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code = cli.main(["--baselines", "sgd", "--data-dir", str(data_dir), "--train-size", "100000", "--out", str(out)])
    assert code == 2
    assert "--train-size 100000 exceeds the 500 training images" in one_line_error(capsys)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# the command line itself
# ----------------------------------------------------------------------------------------------


def test_flags_parse_into_the_config() -> None:
    args = cli.parse_args(["--policy", "a.rlopt", "--policy", "b.rlopt", "--baselines", "sgd,adam", "rsgd",
                           "--model", "mlp", "--no-progress", "--flatness", "--out", "x",
                           "--flatness-settings.directions", "3", "--baseline-settings.sgd-lr", "0.05"])
    config = args.config
    assert config.policies == ("a.rlopt", "b.rlopt") and config.baselines == ("sgd", "adam", "rsgd")
    assert config.model == "mlp" and config.flatness and not args.progress and args.out == Path("x")
    assert config.flatness_settings.directions == 3 and config.baseline_settings.sgd_lr == 0.05
    assert cli.parse_args(["--policy", "p.rlopt", "--baselines", "none"]).config.baselines == ()
    assert cli.parse_args([]).config == EvaluationConfig()


def test_help_shows_each_default_once_and_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    flat = " ".join(text.split())
    assert "(default: None) (default" not in flat
    choices = ("{" + ",".join(MODEL_NAMES) + "}", "{auto,cpu,cuda,mps}", ", ".join(BASELINE_NAMES))
    for shown in (*choices, "--no-flatness", "--no-progress", "--policy PATH", "(default: 2000)"):
        assert shown in flat, shown


def test_running_evaluate_py_loads_no_rl_package(tmp_path: Path, data_dir: Path, policy_file: Path) -> None:
    argv = ["evaluate.py", "--policy", str(policy_file), "--baselines", "sgd", "--seeds", "1", "--steps", "3",
            "--data-dir", str(data_dir), *SIZES, "--threads", "1", "--no-progress", "--out", str(tmp_path / "o")]
    script = (
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n"
        f"    runpy.run_path({str(REPO / 'evaluate.py')!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o" / "results.json").is_file()


def test_import_boundaries() -> None:
    script = (
        "import sys\n"
        "import rlopt\n"
        "assert not [m for m in sys.modules if m.startswith('rlopt.bench')], 'import rlopt loaded rlopt.bench'\n"
        "import rlopt.bench\n"
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {(*FORBIDDEN, 'matplotlib')!r}]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
