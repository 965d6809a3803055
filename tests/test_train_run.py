"""Run-directory safety of agent training (issue 15 §4–§8, §11): lock, honest resume, checkpoint
fallback and integrity, appended logs, one-line set-up errors.

Runs train in this process (one environment, no worker processes) on a tiny on-disk IDX dataset.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import fake_image_data, save_idx_dataset
from stable_baselines3.common.logger import CSVOutputFormat

from agents.callbacks import AppendingCSVOutputFormat, ControlLoggingCallback
from agents.cli import main, parse_config
from agents.config import DQNSettings, TrainConfig
from agents.rundir import RunDirectoryError, RunLock
from agents.train import train
from rlopt.scheduler import load_policy

ROOT = Path(__file__).resolve().parents[1]
EPISODE = 20
PROG = "train_agent.py"


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_idx_dataset(
        fake_image_data(n_train=360, n_test=60, seed=0, n_validation=60), tmp_path_factory.mktemp("idx")
    )


def tiny_config(idx_dir: Path, out: Path, episodes: int = 2) -> TrainConfig:
    return TrainConfig(
        episodes=episodes, episode_steps=EPISODE, n_envs=1, data_dir=str(idx_dir), train_size=256,
        validation_size=40, out=str(out), checkpoint_every=15, eval_every=25, eval_episodes=1, log_every=5,
        dqn=DQNSettings(learning_starts=10, buffer_size=200, batch_size=16),
    )


def tiny_args(idx_dir: Path, out: Path) -> list[str]:
    """The command line of :func:`tiny_config`."""
    return [
        "--episodes", "2", "--episode-steps", str(EPISODE), "--n-envs", "1", "--data-dir", str(idx_dir),
        "--train-size", "256", "--validation-size", "40", "--out", str(out), "--checkpoint-every", "15",
        "--eval-every", "25", "--eval-episodes", "1", "--log-every", "5",
        "--dqn.learning-starts", "10", "--dqn.buffer-size", "200", "--dqn.batch-size", "16",
    ]


@pytest.fixture(scope="module")
def finished_run(idx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-episode run (40 steps; checkpoints at 15, 30 and 40); tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train(tiny_config(idx_dir, out), progress=False)
    assert result.num_timesteps == 2 * EPISODE
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{PROG}: error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------------
# §4: one run per directory
# --------------------------------------------------------------------------------------------------


def test_second_run_on_a_locked_directory_fails_at_once_naming_the_holder(
    idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from agents.rundir import RunLock
            with RunLock(Path({str(out)!r})):
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(tiny_args(idx_dir, out), prog=PROG) == 2
        line = one_line_error(capsys.readouterr().err)
        assert f"in use by another training run (pid {holder.pid} on " in line
        assert not (out / "config.json").exists() and not (out / "checkpoints").exists()
    finally:
        holder.communicate("", timeout=30)
    # the kernel released the holder's lock when it ended: the directory is usable again
    with RunLock(out):
        pass


def test_two_lock_attempts_in_one_process_conflict(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunDirectoryError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire()  # released on exit


# --------------------------------------------------------------------------------------------------
# §5: honest resume
# --------------------------------------------------------------------------------------------------


def test_resume_restores_the_flags_it_is_not_given(idx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    saved = tiny_config(idx_dir, out, episodes=7)
    saved.save(out / "config.json")
    resumed = parse_config(["--out", str(out), "--resume"])
    assert resumed == TrainConfig(**{**saved.to_dict(), "resume": True, "dqn": saved.dqn, "rewards": saved.rewards})
    assert (resumed.episodes, resumed.eval_every, resumed.dqn.batch_size) == (7, 25, 16)
    assert parse_config(["--out", str(out), "--resume", "--episodes", "9"]).episodes == 9


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            ["--dqn.learning-rate", "0.5", "--dqn.gamma", "0.5"],
            "--dqn.learning-rate 0.001 → 0.5, --dqn.gamma 0.99 → 0.5",
        ),
        (["--seed", "3"], "--seed 0 → 3"),
        (["--n-envs", "2"], "--n-envs 1 → 2"),
        (["--optimizer", "adam"], "--optimizer 'sgd' → 'adam'"),
        (["--rewards.score-floor", "None"], "--rewards.score-floor -50.0 → None"),
        (["--decision-interval", "2"], "--decision-interval 1 → 2"),
        (["--clamp-bounds"], "--clamp-bounds False → True"),
    ],
)
def test_resume_refuses_settings_that_cannot_change(
    run_copy: Path, flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (run_copy / "config.json").read_text()
    assert main(["--out", str(run_copy), "--resume", "--episodes", "3", *flags], prog=PROG) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--resume cannot change" in line and named in line
    assert (run_copy / "config.json").read_text() == before
    assert not (run_copy / "checkpoints" / f"dqn_{3 * EPISODE}_steps.zip").exists()


def test_interrupt_hint_continues_the_run_exactly(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = ControlLoggingCallback._on_step

    def interrupted(self: ControlLoggingCallback) -> bool:
        if self.num_timesteps >= 2 * EPISODE + 5:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(ControlLoggingCallback, "_on_step", interrupted)
        assert main(["--out", str(run_copy), "--resume", "--episodes", "4", "--eval-every", "30"], prog=PROG) == 130
    err = capsys.readouterr().err
    hint = err.split("Continue with: ")[1].strip()
    assert hint == f"python {PROG} --out {shlex.quote(str(run_copy))} --resume"
    assert (run_copy / "checkpoints" / f"dqn_{2 * EPISODE + 5}_steps.zip").is_file()

    assert main(shlex.split(hint)[2:], prog=PROG) == 0
    out = capsys.readouterr().out
    assert f"trained {4 * EPISODE} environment steps" in out  # --episodes 4 was kept, not reset to 100
    config = json.loads((run_copy / "config.json").read_text())
    assert (config["episodes"], config["eval_every"]) == (4, 30)
    metadata = load_policy(run_copy / "policy_last.rlopt").metadata
    assert metadata["train_config"]["episodes"] == 4
    assert json.loads(json.dumps(metadata["train_config"]["dqn"])) == config["dqn"]
    assert metadata["resumed_from"] == 2 * EPISODE + 5


# --------------------------------------------------------------------------------------------------
# §6, §7: corrupt, leftover and untrusted checkpoint files
# --------------------------------------------------------------------------------------------------


def test_corrupt_latest_checkpoint_falls_back_to_an_intact_one(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = run_copy / "checkpoints"
    latest = checkpoints / f"dqn_{2 * EPISODE}_steps.zip"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    leftover = checkpoints / "tmp_dqn_55_steps.zip"
    leftover.write_bytes(b"half a file")

    assert main(["--out", str(run_copy), "--resume", "--episodes", "3"], prog=PROG) == 0
    captured = capsys.readouterr()
    assert f"trained {3 * EPISODE} environment steps" in captured.out
    assert f"skipping the checkpoint at {2 * EPISODE} steps" in captured.err
    assert "resuming" in captured.err and "from dqn_30_steps.zip (30 steps)" in captured.err
    assert f"removed {leftover}" in captured.err and not leftover.exists()
    assert (checkpoints / f"rejected_dqn_{2 * EPISODE}_steps.zip").is_file()


def test_a_replay_buffer_that_does_not_match_the_manifest_is_never_unpickled(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    buffer = run_copy / "checkpoints" / f"dqn_replay_buffer_{2 * EPISODE}_steps.pkl"
    buffer.write_bytes(pickle.dumps(Payload()))

    assert main(["--out", str(run_copy), "--resume", "--episodes", "3"], prog=PROG) == 0
    err = capsys.readouterr().err
    assert not marker.exists()
    assert f"{buffer.name}: its sha256 differs" in err and "from dqn_30_steps.zip" in err


def test_unrecorded_checkpoints_are_refused(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / "checkpoints" / "manifest.json").unlink()
    assert main(["--out", str(run_copy), "--resume", "--episodes", "3"], prog=PROG) == 2
    err = capsys.readouterr().err
    assert "not recorded in the checkpoint manifest" in err
    last = one_line_error(err.splitlines()[-1])
    assert last.endswith(f"no intact checkpoint left in {run_copy / 'checkpoints'}")


# --------------------------------------------------------------------------------------------------
# §8: logged history survives a resume
# --------------------------------------------------------------------------------------------------


def test_resume_appends_to_progress_csv(run_copy: Path) -> None:
    csv_path = run_copy / "tb" / "progress.csv"
    before = csv_path.read_text().splitlines()
    assert len(before) > 2
    assert main(["--out", str(run_copy), "--resume", "--episodes", "3"], prog=PROG) == 0
    after = csv_path.read_text().splitlines()
    assert len(after) > len(before)
    header = after[0].split(",")
    assert header[: len(before[0].split(","))] == before[0].split(",")
    for old, new in zip(before[1:], after[1 : len(before)], strict=True):
        assert new.startswith(old)  # the same row, padded if columns were added


def test_appending_csv_writer_keeps_rows_and_adds_columns(tmp_path: Path) -> None:
    path = tmp_path / "progress.csv"
    first = CSVOutputFormat(str(path))
    first.write({"a": 1}, {})
    first.close()
    path.write_text(path.read_text() + "2")  # a row cut short by a kill
    second = AppendingCSVOutputFormat(path)
    second.write({"a": 3, "b": 4}, {})
    second.write({"config": "text only for TensorBoard"}, {"config": ("csv",)})  # writes no empty row
    second.close()
    assert path.read_text().splitlines() == ["a,b", "1,", "2,", "3,4"]


# --------------------------------------------------------------------------------------------------
# §11: set-up errors are one line, exit 2, and leave no directory behind
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--device", "mps"], "--device mps"),
        (["--device", "warp-drive"], "--device warp-drive"),
        (["--train-size", "10"], "--train-size 10 is smaller than one batch (--batch-size 32)"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--train-size", "100000"], "train_size 100000 exceeds the 300 training images"),
        (["--validation-size", "100000"], "validation_size 100000 exceeds"),
        (["--resume"], "--resume: no checkpoint"),
    ],
)
def test_setup_errors_are_one_line_and_create_nothing(
    idx_dir: Path, tmp_path: Path, flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if flags == ["--device", "mps"] and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    out = tmp_path / "new" / "run"
    assert main([*tiny_args(idx_dir, out), *flags], prog=PROG) == 2
    assert expected in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_pointing_at_a_file_is_a_one_line_error(
    idx_dir: Path, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    out = a_file if where == "file" else a_file / "run"
    assert main(tiny_args(idx_dir, out), prog=PROG) == 2
    assert "is a file, not a directory" in one_line_error(capsys.readouterr().err)
    assert a_file.read_text() == "not a directory"


def _episode_starts(out: Path) -> list[tuple[float, float]]:
    """(model seed, starting lr) of every finished training episode, from tb/progress.csv."""
    import csv

    with open(out / "tb" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["charts/model_seed"]), float(r["charts/start_lr"])) for r in rows if r.get("charts/model_seed")]


def test_a_resumed_run_continues_the_task_seed_and_rate_stream(idx_dir: Path, tmp_path: Path) -> None:
    """Random start points and starting rates: the episodes after a resume are new draws, not a replay
    of the run's first episodes, and the same resume draws the same ones."""
    cfg = tiny_config(idx_dir, tmp_path / "a", episodes=2)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "start": "random", "random_lr_init": True, "eval_every": 0})
    train(cfg, progress=False)
    copy = tmp_path / "b"
    shutil.copytree(tmp_path / "a", copy)
    first = _episode_starts(tmp_path / "a")
    assert len(first) == 2 and len(set(first)) == 2
    for out in (tmp_path / "a", copy):
        resumed = TrainConfig.from_dict({**cfg.to_dict(), "out": str(out), "resume": True, "episodes": 4})
        train(resumed, progress=False)
    after_a, after_b = _episode_starts(tmp_path / "a")[2:], _episode_starts(copy)[2:]
    assert len(after_a) == 2 and after_a == after_b  # deterministic
    assert not set(after_a) & set(first)  # fresh draws: no episode of the first part is replayed
