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
import rlopt.bench.runner as runner
from rlopt.bench import (
    BASELINE_NAMES,
    CSV_COLUMNS,
    OUTPUT_FILES,
    TRACE_NAMES,
    EvaluationConfig,
    RunRecord,
    evaluate,
    held_out_seeds,
    policy_method,
)
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.scheduler import PolicyFileError, build_q_network, save_policy
from rlopt.training import HELD_OUT_SEED_BASE, OPTIMIZER_PRESETS

REPO = Path(__file__).resolve().parents[1]
SEEDS = 2
BUDGETS = (12, 24)
TASKS = ("permuted-mlp-relu", "inverted-mlp-relu")
BASELINES = ("sgd", "momentum", "rsgd", "cosine", "sf-sgd", "prodigy")
#: 600 training images load with a validation tail of 100 (1/6); the test split has 200
SIZES = ["--train-size", "400", "--validation-size", "100"]
ROW_FIELDS = {"task", "budget", "method", "seed", "steps_to_threshold", "final_train_loss", "test_accuracy", "wall_s"}
#: modules neither evaluate.py nor rlopt.bench may load
FORBIDDEN = ("stable_baselines3", "gymnasium", "envs", "agents")
#: modules ``import rlopt.bench`` must not load (they load when figures are drawn or peers are built)
LAZY = ("matplotlib", "schedulefree", "prodigyopt")


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
def cli_run(data_dir: Path, policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real command-line evaluation: 1 policy + 6 baselines × 2 tasks × 2 budgets × 2 seeds."""
    out = tmp_path_factory.mktemp("eval")
    command = [
        sys.executable, str(REPO / "evaluate.py"), "--policy", str(policy_file), "--tasks", ",".join(TASKS),
        "--budgets", ",".join(map(str, BUDGETS)), "--seeds", str(SEEDS), "--baselines", ",".join(BASELINES),
        "--data-dir", str(data_dir), *SIZES, "--threads", "1", "--no-progress", "--out", str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_cli_prints_and_writes_the_report(cli_run: tuple[Path, str]) -> None:
    out, stdout = cli_run
    report = (out / "report.md").read_text()
    assert report in stdout
    for heading in ("## Summary: test accuracy %", "## Summary: final training loss",
                    *(f"## {t}, {b} steps" for t in TASKS for b in BUDGETS), "## Compute"):
        assert heading in report, heading
    for baseline in BASELINES:  # one verdict line per task × budget × baseline
        lines = re.findall(rf"^- learned vs {re.escape(baseline)}: (\d)/2 seeds lower train loss, (\d)/2 higher "
                           r"test accuracy, (\d)/2 lower test loss$", report, flags=re.MULTILINE)
        assert len(lines) == len(TASKS) * len(BUDGETS), baseline
    n_runs = (1 + len(BASELINES)) * len(TASKS) * len(BUDGETS) * SEEDS
    assert re.search(rf"{n_runs} runs \(task × budget × method × seed\) in \d+ training passes: .* s CPU .* runs/s",
                     stdout)


def test_cli_writes_all_outputs_with_documented_fields(cli_run: tuple[Path, str], policy_file: Path) -> None:
    out, _ = cli_run
    results = json.loads((out / "results.json").read_text())
    methods = [f"policy:{policy_file}", *BASELINES]
    assert [m["name"] for m in results["methods"]] == methods
    assert [t["name"] for t in results["tasks"]] == list(TASKS) and results["budgets"] == list(BUDGETS)
    assert len(results["rows"]) == len(methods) * len(TASKS) * len(BUDGETS) * SEEDS
    for row in results["rows"]:
        assert ROW_FIELDS <= row.keys() and row["task"] in TASKS and row["budget"] in BUDGETS
        assert row["seed"] >= HELD_OUT_SEED_BASE
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["wall_s"] > 0
    assert results["seeds"] == held_out_seeds(SEEDS) and results["config"]["resolved"]["budgets"] == list(BUDGETS)
    groups = results["groups"]
    assert len(groups) == len(methods) * len(TASKS) * len(BUDGETS)
    assert {"mean", "ci", "std", "n"} <= groups[0]["final_train_loss"].keys() and groups[0]["runs"] == SEEDS
    assert len(results["verdicts"]) == len(BASELINES) * len(TASKS) * len(BUDGETS)
    assert results["compute"]["runs"] == len(results["rows"]) and results["compute"]["cpu_s"] > 0

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == CSV_COLUMNS and len(rows) == len(results["rows"])

    with np.load(out / "curves.npz") as curves:
        assert list(curves["methods"]) == methods and list(curves["tasks"]) == list(TASKS)
        for task in TASKS:
            for budget in BUDGETS:
                for key in TRACE_NAMES:
                    assert curves[f"{task}/{budget}/{key}"].shape == (len(methods), SEEDS, budget)
    for png in ("budgets.png", "lr_traces.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000
    assert set(OUTPUT_FILES.values()) <= {p.name for p in out.iterdir()}
    text = (out / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_traces_record_effective_lr_reinforcement_and_momentum(cli_run: tuple[Path, str]) -> None:
    out, _ = cli_run
    budget = BUDGETS[-1]
    with np.load(out / "curves.npz") as curves:
        index = {name: i for i, name in enumerate(curves["methods"])}
        reinforcement = curves[f"permuted-mlp-relu/{budget}/reinforcement"]
        lr, momentum = curves[f"permuted-mlp-relu/{budget}/lr"], curves[f"permuted-mlp-relu/{budget}/momentum"]
        # R-SGD's Γ(t) = 1 − 1/√t: 0 at the first step, then rising towards 1
        np.testing.assert_allclose(reinforcement[index["rsgd"], 0], 1 - 1 / np.sqrt(np.arange(1, budget + 1)),
                                   atol=1e-6)
        assert not reinforcement[index["sgd"]].any()
        np.testing.assert_array_equal(lr[index["sgd"]], 0.1)
        np.testing.assert_array_equal(momentum[index["momentum"]], 0.9)
        assert lr[index["cosine"], 0, -1] < 0.05 * lr[index["cosine"], 0].max()  # decays to ~0 over the budget
        assert lr[index["prodigy"], 0, 0] == pytest.approx(1e-6)  # d0 · lr: Prodigy's own estimate, rising
        assert lr[index["prodigy"], 0, -1] > lr[index["prodigy"], 0, 0]


def test_paired_seeds_identical_across_invocations_workers_and_methods(cli_run: tuple[Path, str],
                                                                       data_dir: Path) -> None:
    out, _ = cli_run
    # two worker processes: results must not depend on it
    config = EvaluationConfig(tasks=("inverted-mlp-relu",), budgets=BUDGETS, baselines=("sgd", "momentum", "rsgd"),
                              seeds=SEEDS, data_dir=str(data_dir), train_size=400, validation_size=100, threads=1,
                              workers=2)
    again = evaluate(config, progress=False)
    budget = BUDGETS[-1]
    with np.load(out / "curves.npz") as curves:
        first = {name: curves[f"inverted-mlp-relu/{budget}/loss"][i] for i, name in enumerate(curves["methods"])}
    for name in ("sgd", "momentum", "rsgd"):  # the same start points and batches give bit-identical curves
        np.testing.assert_array_equal(np.stack([losses(r) for r in again.runs("inverted-mlp-relu", budget, name)]),
                                      first[name])
    for seed in again.seeds:  # every method starts from the same weights on the same first batch
        assert len({losses(again.record("inverted-mlp-relu", budget, n, seed))[0] for n in ("sgd", "rsgd")}) == 1
    assert again.cpu_s > 0 and again.passes == 3 * SEEDS


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
    code = cli.main(["--policy", str(path), "--baselines", "sgd", "--data-dir", str(data_dir),
                     "--out", str(tmp_path / "o")])
    err = one_line_error(capsys)
    assert code == 2 and expected in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_corrupt_or_missing_policy_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "bad.rlopt"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["--policy", str(path), "--baselines", "sgd", "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert str(path) in err
    assert not (tmp_path / "o").exists()


def test_a_missing_oracle_is_refused_before_any_data_is_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded before the oracle was checked")

    monkeypatch.setattr(runner, "load_dataset", no_data)
    missing = tmp_path / "oracle.json"
    assert cli.main(["--baselines", "oracle-sgd", "--oracle", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert f"no tuned oracle at {missing}" in err and "benchmarks/oracle.py" in err
    assert not (tmp_path / "o").exists()


def test_unknown_names_and_oversized_subset_are_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--baselines", "sgd,lion", "--data-dir", str(data_dir)]) == 2
    assert "unknown baseline 'lion'" in one_line_error(capsys)
    assert cli.main(["--tasks", "mnist-cnn,mnist-vit", "--baselines", "sgd"]) == 2
    assert "unknown task 'mnist-vit'" in one_line_error(capsys)
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
    base = ["--baselines", "sgd", "--seeds", "1", "--budgets", "5", "--data-dir", str(data_dir), *SIZES]
    assert cli.main([*base, "--out", str(target)]) == 2
    assert str(target) in one_line_error(capsys) and target.read_text() == "keep me"
    assert cli.main([*base, "--out", str(target / "below")]) == 2
    assert "not a directory" in one_line_error(capsys)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("device", ["mps", "cuda"])
def test_an_unavailable_device_is_a_one_line_error(tmp_path: Path, data_dir: Path,
                                                   capsys: pytest.CaptureFixture[str], device: str) -> None:
    if (device == "mps" and torch.backends.mps.is_available()) or (device == "cuda" and torch.cuda.is_available()):
        pytest.skip(f"{device} is available here")
    out = tmp_path / "o"
    code = cli.main(["--device", device, "--baselines", "sgd", "--data-dir", str(data_dir), *SIZES,
                     "--out", str(out)])
    assert code == 2 and device in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--train-size", "10"], "--train-size 10 is smaller than one batch of 32"),
        (["--tasks", "mnist-cnn-b128", "--train-size", "100"], "smaller than one batch of 128"),
        (["--seeds", "0"], "seeds must be between 1 and"),
        (["--seeds", "many"], "seeds is a whole number, got 'many'"),
        (["--budgets", "250,0"], "a budget must be >= 1 step, got 0"),
        (["--budgets", "250,lots"], "a budget is a whole number of optimizer steps, got 'lots'"),
        (["--grid", "huge"], "invalid choice 'huge'"),
        (["--device", "tpu"], "invalid choice 'tpu'"),
        (["--steps", "2000"], "--steps"),
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
                           "--tasks", "mnist-cnn,held-out", "--budgets", "2000,250", "--seeds", "4", "--lr-sweep",
                           "--grid", "full", "--no-progress", "--flatness", "--out", "x",
                           "--flatness-settings.directions", "3", "--baseline-settings.sgd-lr", "0.05",
                           "--sweep.sgd-rates", "0.01", "0.1", "--oracle", "o.json",
                           "--safety.no-relapse-cap", "--safety.stall-steps", "None"])
    config = args.config
    assert config.policies == ("a.rlopt", "b.rlopt") and config.baselines == ("sgd", "adam", "rsgd")
    assert config.tasks is not None and config.tasks[0] == "mnist-cnn" and len(config.tasks) == 5
    assert config.budgets == (250, 2000) and config.seeds == 4 and config.lr_sweep and config.grid == "full"
    assert config.flatness and not args.progress and args.out == Path("x") and config.oracle == "o.json"
    assert config.flatness_settings.directions == 3 and config.baseline_settings.sgd_lr == 0.05
    assert config.sweep.sgd_rates == (0.01, 0.1)
    assert not config.safety.relapse_cap and config.safety.stall_steps is None
    assert cli.parse_args(["--policy", "p.rlopt", "--baselines", "none"]).config.baselines == ()
    assert cli.parse_args([]).config == EvaluationConfig()
    assert cli.parse_args(["--tasks", "grid", "--seeds", "grid"]).config == EvaluationConfig()


def test_help_shows_each_default_once_and_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    flat = " ".join(text.split())
    assert "(default: None) (default" not in flat
    choices = ("{auto,cpu,cuda,mps}", "{default,full}", ", ".join(BASELINE_NAMES))
    for shown in (*choices, "--no-flatness", "--no-progress", "--policy PATH", "--lr-sweep", "--tasks NAME[,NAME…]",
                  "--budgets N[,N…]", "(default: grid)", "Schedule-Free SGD", "oracle-sgd"):
        assert shown in flat, shown
    assert "--steps" not in flat and "--model" not in flat and "--batch-size" not in flat


def test_running_evaluate_py_loads_no_rl_package(tmp_path: Path, data_dir: Path, policy_file: Path) -> None:
    argv = ["evaluate.py", "--policy", str(policy_file), "--baselines", "sgd,sf-sgd,prodigy", "--seeds", "1",
            "--budgets", "3", "--tasks", "inverted-mlp-relu", "--data-dir", str(data_dir), *SIZES, "--threads", "1",
            "--no-progress", "--out", str(tmp_path / "o")]
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
        f"loaded = [m for m in sys.modules if m.split('.')[0] in {(*FORBIDDEN, *LAZY)!r}]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
