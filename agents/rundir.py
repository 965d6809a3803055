"""The run directory of an agent-training run: its lock, its checkpoints and their sha256 manifest.

Layout of ``OUT``::

    .lock                      fcntl lock held by the running process (holds its pid, host, start time)
    config.json                the settings that ran (a resume restores flags it was not given from here)
    checkpoints/dqn_N_steps.zip, checkpoints/dqn_replay_buffer_N_steps.pkl
    checkpoints/manifest.json  sha256 of every checkpoint file this run wrote
    best/best_model.zip        the agent with the lowest mean final validation loss on the held-out
                               evaluation episodes (also in the manifest); best/best_eval.json its score
    eval/evaluations.npz       every evaluation: returns, lengths and final validation losses
    tb/                        TensorBoard events and progress.csv

**A run directory is trusted input only through its manifest.** Model zips and replay buffers are
SB3 pickles, and unpickling runs code, so ``--resume`` loads a file only when its sha256 matches the
one recorded in ``checkpoints/manifest.json`` when this code wrote it. Files the manifest does not
list, or whose content changed, are refused and set aside as ``rejected_*``; the manifest itself is
JSON and never unpickled. (The manifest guards against corrupted or swapped files, not against
someone who can rewrite the manifest as well: do not resume run directories from untrusted sources.)

Every file is written under a ``tmp_*`` name and renamed into place (``os.replace``), so a crash
never leaves a half-written file under a real name; leftover ``tmp_*`` files are removed at the next
start. Only one process may use a run directory at a time (:class:`RunLock`).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
TMP_PREFIX = "tmp_"
REJECTED_PREFIX = "rejected_"
CHECKPOINT_PREFIX = "dqn"
_MODEL_FILE = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")


class TrainingSetupError(RuntimeError):
    """A run that cannot start as configured (device, data, output directory); nothing was trained."""


class RunDirectoryError(TrainingSetupError):
    """The output directory does not fit the request (in use, an existing run without --resume, …)."""


def check_output_directory(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a directory, before anything is created."""
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} is a file, not a directory")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise RunDirectoryError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"--out {out}: {existing} is not writable")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)`` through a ``tmp_`` file and a rename."""
    tmp = path.with_name(TMP_PREFIX + path.name)
    tmp.write_text(text)
    os.replace(tmp, path)


def remove_leftover_tmp_files(out: Path) -> list[Path]:
    """Delete the ``tmp_*`` files an interrupted write left in ``out`` and ``out/checkpoints``."""
    removed = []
    for directory in (out, out / "checkpoints", out / "best"):
        for path in sorted(directory.glob(TMP_PREFIX + "*")) if directory.is_dir() else []:
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


class RunLock:
    """An exclusive ``fcntl.flock`` on ``OUT/.lock``; the file names the holder (pid, host, start time).

    The kernel drops the lock when its process ends, however it ends, so a killed run never leaves a
    stale lock. The file itself stays (deleting it would let two processes lock different inodes).
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path.parent} is in use by another training run ({holder}); wait for it or choose another --out"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, started {record['started']}"
    except (ValueError, KeyError, TypeError):
        return f"lock file says {text!r}" if text else "holder unknown"


class Manifest:
    """sha256 of every file this run wrote into its directory, keyed by path relative to ``OUT``.

    Stored as ``OUT/checkpoints/manifest.json`` and rewritten atomically after every change.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "checkpoints" / MANIFEST_NAME
        self.files: dict[str, str] = {}

    @classmethod
    def load(cls, out: Path) -> Manifest:
        manifest = cls(out)
        if manifest.path.is_file():
            try:
                data = json.loads(manifest.path.read_text())
                files = data["files"]
                if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                    raise ValueError("'files' is not a mapping of names to sha256 digests")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise RunDirectoryError(f"{manifest.path}: unreadable checkpoint manifest ({exc})") from exc
            manifest.files = dict(files)
        return manifest

    def _key(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def record(self, digests: dict[Path, str]) -> None:
        for path, digest in digests.items():
            self.files[self._key(path)] = digest
        self._write()

    def forget(self, *paths: Path) -> None:
        for path in paths:
            self.files.pop(self._key(path), None)
        self._write()

    def problem_with(self, path: Path) -> str | None:
        """Why ``path`` must not be loaded (``None``: it is the file this run wrote)."""
        expected = self.files.get(self._key(path))
        if expected is None:
            return "not recorded in the checkpoint manifest"
        if not path.is_file():
            return "missing"
        if sha256_of(path) != expected:
            return "its sha256 differs from the one recorded when it was written"
        return None

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps({"files": self.files}, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Checkpoint:
    """One saved state of the agent: ``dqn_N_steps.zip`` and ``dqn_replay_buffer_N_steps.pkl``."""

    steps: int
    model: Path
    replay_buffer: Path

    @classmethod
    def at(cls, directory: Path, steps: int) -> Checkpoint:
        # stable-baselines3's CheckpointCallback names: {prefix}_{type}{steps}_steps.{extension}
        return cls(
            steps=steps,
            model=directory / f"{CHECKPOINT_PREFIX}_{steps}_steps.zip",
            replay_buffer=directory / f"{CHECKPOINT_PREFIX}_replay_buffer_{steps}_steps.pkl",
        )

    @property
    def files(self) -> tuple[Path, Path]:
        return self.model, self.replay_buffer


def checkpoints_in(directory: Path) -> list[Checkpoint]:
    """Every checkpoint whose model file exists in ``directory``, newest first."""
    found = []
    for path in directory.glob(f"{CHECKPOINT_PREFIX}_*_steps.zip") if directory.is_dir() else []:
        match = _MODEL_FILE.match(path.name)
        if match is not None:
            found.append(Checkpoint.at(directory, int(match.group(1))))
    return sorted(found, key=lambda c: c.steps, reverse=True)


def reject(checkpoint: Checkpoint, manifest: Manifest) -> list[Path]:
    """Set a checkpoint that must not be loaded aside as ``rejected_*`` (kept for inspection)."""
    moved = []
    for path in checkpoint.files:
        if path.exists():
            target = path.with_name(REJECTED_PREFIX + path.name)
            os.replace(path, target)
            moved.append(target)
    manifest.forget(*checkpoint.files)
    return moved
