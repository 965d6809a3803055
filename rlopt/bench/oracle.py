"""The tuned oracle: the hand-tuning a learned scheduler claims to save, done once and stored.

For each task and budget, and for SGD and for Adam, every configuration of a grid — each schedule
(constant rate; cosine and linear decay to 0 with the warm-up of the ``cosine``/``linear`` baselines)
at each rate of a 5-point log grid — trains on *tuning seeds* TUNING_SEED_BASE + i
(:data:`rlopt.training.TUNING_SEED_BASE`), a range that neither agent training nor evaluation
draws from. The selection metric is the **final validation loss** (the mean over the tuning seeds of
the loss on the task's validation images at the budget); the test split is never scored. A
configuration that diverged on any tuning seed is chosen only where every configuration did. The
choice per schedule and the best over schedules are stored with the whole grid's losses, the command
that computed them and its compute (``benchmarks/oracle.py`` writes ``benchmarks/results/oracle.json``).

The evaluation's ``oracle-sgd`` and ``oracle-adam`` (:mod:`rlopt.bench.methods`) run the stored best
choice for the run's task and budget; a task or budget without an entry is an error before any
training (:meth:`OracleTable.check`), never a silently missing column.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import tyro

from rlopt.bench.config import GRIDS, Device, EvaluationConfig, budgets_argument, tasks_argument
from rlopt.bench.methods import (
    SCHEDULE_NAMES,
    TUNE_PREFIX,
    BaselineSettings,
    Family,
    ScheduleName,
    tuning_method_name,
)
from rlopt.tasks import TaskSize
from rlopt.training import TUNING_SEED_BASE

if TYPE_CHECKING:
    from rlopt.bench.runner import RunRecord
    from rlopt.data import ImageData

__all__ = [
    "ORACLE_FORMAT",
    "ORACLE_VERSION",
    "SELECTION_METRIC",
    "OracleChoice",
    "OracleConfig",
    "OracleGrid",
    "OracleTable",
    "check_mergeable",
    "compute_oracle",
    "load_oracle",
    "merge_oracle",
    "oracle_header",
    "select_oracle",
    "tuning_seeds",
    "write_oracle",
]

ORACLE_FORMAT = "rlopt-oracle"
ORACLE_VERSION = 1
#: how the oracle chooses, in words (stored in the file)
SELECTION_METRIC = (
    "lowest mean final validation loss over the tuning seeds; a configuration that diverged on a tuning "
    "seed only where every configuration did"
)
#: the data settings an oracle was tuned on; an evaluation must use the same
DATA_KEYS = ("data_dir", "train_size", "validation_size", "data_seed")


def tuning_seeds(n: int) -> list[int]:
    """The ``n`` tuning seeds TUNING_SEED_BASE + i: disjoint from evaluation seeds and agent training."""
    if n < 1:
        raise ValueError(f"tuning_seeds must be >= 1, got {n}")
    return [TUNING_SEED_BASE + i for i in range(n)]


@dataclass(frozen=True)
class OracleGrid:
    """The oracle's search space: 5-point log grids (factor √10) centred on each optimizer's default rate."""

    sgd_rates: tuple[float, ...] = (0.01, 0.0316, 0.1, 0.316, 1.0)
    """SGD's rates (constant rate, or peak of a warm-up schedule)."""
    adam_rates: tuple[float, ...] = (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2)
    """Adam's rates."""
    schedules: tuple[ScheduleName, ...] = SCHEDULE_NAMES
    """constant, cosine, linear (the shapes of the cosine and linear baselines)."""

    def __post_init__(self) -> None:
        for name in ("sgd_rates", "adam_rates"):
            rates = getattr(self, name)
            if not rates or not all(0 < r < math.inf for r in rates) or len(set(rates)) != len(rates):
                raise ValueError(f"{name} must be distinct positive finite rates, got {rates}")
        if not self.schedules or any(s not in SCHEDULE_NAMES for s in self.schedules):
            raise ValueError(f"schedules must be some of {', '.join(SCHEDULE_NAMES)}, got {self.schedules}")

    def rates(self, optimizer: Family) -> tuple[float, ...]:
        return self.sgd_rates if optimizer == "sgd" else self.adam_rates


@dataclass(frozen=True)
class OracleConfig:
    """What benchmarks/oracle.py tunes, on which data, with how much compute; stored in oracle.json."""

    tasks: Annotated[tuple[str, ...], tasks_argument()] = GRIDS["full"].tasks
    """task names or split names (train, held-out), comma-separated; the default is the full grid's tasks."""
    budgets: Annotated[tuple[int, ...], budgets_argument()] = GRIDS["full"].budgets
    """budgets in optimizer steps, comma-separated."""
    tuning_seeds: int = 2
    """tuning seeds per configuration: TUNING_SEED_BASE + 0 … tuning_seeds − 1 (never evaluation seeds)."""
    optimizers: tuple[Family, ...] = get_args(Family)
    """the optimizers to tune (oracle-sgd, oracle-adam)."""
    grid: OracleGrid = field(default_factory=OracleGrid)
    """the rates and schedules tried."""
    warmup_fraction: float = BaselineSettings.warmup_fraction
    """share of the budget the cosine and linear schedules warm up over (as the cosine/linear baselines)."""
    data_dir: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """an IDX dataset directory, the base of every task's variant; None: MNIST."""
    train_size: int = TaskSize.train_size
    """training images (as the evaluation)."""
    validation_size: int = TaskSize.validation_size
    """validation images the selection metric is measured on."""
    data_seed: int = 0
    """which images the subsets draw (as the evaluation)."""
    device: Device = "cpu"
    """where runs train."""
    threads: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """torch CPU threads per worker; None: one per worker when workers > 1."""
    workers: int = 1
    """processes that train runs in parallel; results do not depend on it."""

    def __post_init__(self) -> None:
        tuning_seeds(self.tuning_seeds)
        if not self.optimizers or any(o not in get_args(Family) for o in self.optimizers):
            raise ValueError(f"optimizers must be some of sgd, adam, got {self.optimizers}")
        if self.validation_size < 1:
            raise ValueError(f"validation_size must be >= 1: the oracle selects on validation loss, got "
                             f"{self.validation_size}")
        BaselineSettings(warmup_fraction=self.warmup_fraction)  # checks it

    def evaluation_config(self) -> EvaluationConfig:
        """The runner's settings for the tuning runs (no test scoring)."""
        return EvaluationConfig(
            tasks=self.tasks, budgets=self.budgets, baselines=(), data_dir=self.data_dir, train_size=self.train_size,
            validation_size=self.validation_size, data_seed=self.data_seed, device=self.device,
            threads=self.threads, workers=self.workers,
            baseline_settings=BaselineSettings(warmup_fraction=self.warmup_fraction), score_test=False,
        )

    def method_names(self) -> list[str]:
        """``tune:OPTIMIZER:SCHEDULE:LR`` for every configuration of the grid."""
        return [tuning_method_name(o, s, lr) for o in self.optimizers for s in self.grid.schedules
                for lr in self.grid.rates(o)]

    def data_settings(self) -> dict[str, Any]:
        return _data_settings(self.data_dir, self.train_size, self.validation_size, self.data_seed)


def _data_settings(data_dir: str | None, train_size: int, validation_size: int, data_seed: int) -> dict[str, Any]:
    return {"data_dir": None if data_dir is None else os.path.abspath(data_dir), "train_size": train_size,
            "validation_size": validation_size, "data_seed": data_seed}


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


def _parse_tuning_name(name: str) -> tuple[Family, ScheduleName, float]:
    if not name.startswith(TUNE_PREFIX):
        raise ValueError(f"{name!r} is not a configuration of the oracle's grid (tune:…)")
    optimizer, schedule, lr = name[len(TUNE_PREFIX):].split(":")
    return optimizer, schedule, float(lr)  # type: ignore[return-value]


def select_oracle(records: Sequence[RunRecord], seeds: Sequence[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """The oracle's choices from tuning records: ``entries[task][str(budget)][optimizer]``.

    Each entry holds the best configuration (``schedule``, ``lr``, ``val_loss``: the mean over the
    seeds, ``diverged``: runs that diverged), the best rate per schedule (``schedules``) and every
    configuration's numbers (``grid``). Raises ``ValueError`` if a seed is outside the tuning range,
    a record's seed is not one of ``seeds`` (the selection sees tuning runs only), a configuration
    lacks a seed, or a validation loss is missing.
    """
    seed_set = set(seeds)
    outside = sorted(s for s in seed_set if s < TUNING_SEED_BASE)
    if outside:
        raise ValueError(f"tuning seeds must be >= TUNING_SEED_BASE ({TUNING_SEED_BASE}); got {outside[:3]}")
    groups: dict[tuple[str, int, Family, ScheduleName, float], list[RunRecord]] = defaultdict(list)
    for record in records:
        if record.seed not in seed_set:
            raise ValueError(f"a run on seed {record.seed} is not a tuning run: the oracle selects on tuning "
                             "seeds only")
        if record.sweep_lr is not None:
            raise ValueError("the oracle selects from its own grid, not from lr-sweep runs")
        optimizer, schedule, lr = _parse_tuning_name(record.method)
        groups[(record.task, record.budget, optimizer, schedule, lr)].append(record)
    cells: dict[tuple[str, int, Family], dict[ScheduleName, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list))
    for (task, budget, optimizer, schedule, lr), runs in groups.items():
        if sorted(r.seed for r in runs) != sorted(seed_set):
            raise ValueError(f"{task} at {budget} steps, {optimizer} {schedule} lr {lr:g}: runs on seeds "
                             f"{sorted(r.seed for r in runs)}, expected every tuning seed")
        losses = [r.val_loss for r in runs]
        if not all(math.isfinite(v) for v in losses):
            raise ValueError(f"{task} at {budget} steps: no finite validation loss to select on")
        cells[(task, budget, optimizer)][schedule].append({
            "lr": lr, "val_loss": sum(losses) / len(losses), "diverged": sum(r.diverged for r in runs)})

    def rank(config: dict[str, Any]) -> tuple[bool, float]:
        return config["diverged"] > 0, config["val_loss"]

    entries: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (task, budget, optimizer), by_schedule in cells.items():
        grid = {s: sorted(configs, key=lambda c: c["lr"]) for s, configs in by_schedule.items()}
        per_schedule = {s: min(configs, key=rank) for s, configs in grid.items()}
        best_schedule = min(per_schedule, key=lambda s: rank(per_schedule[s]))
        entries[task].setdefault(str(budget), {})[optimizer] = {
            "schedule": best_schedule, **per_schedule[best_schedule], "schedules": per_schedule, "grid": grid}
    return dict(entries)


# --------------------------------------------------------------------------------------------------
# The stored table
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleChoice:
    """The tuned configuration for one task, budget and optimizer."""

    schedule: ScheduleName
    lr: float
    val_loss: float


@dataclass(frozen=True, eq=False)
class OracleTable:
    """A loaded oracle file (:func:`load_oracle`)."""

    payload: dict[str, Any]
    source: str

    @property
    def entries(self) -> dict[str, dict[str, dict[str, Any]]]:
        entries: dict[str, dict[str, dict[str, Any]]] = self.payload["entries"]
        return entries

    @property
    def tuning_seeds(self) -> list[int]:
        return list(self.payload["tuning_seeds"])

    @property
    def warmup_fraction(self) -> float:
        return float(self.payload["warmup_fraction"])

    def has(self, task: str, budget: int, optimizer: str) -> bool:
        return optimizer in self.entries.get(task, {}).get(str(budget), {})

    def choice(self, task: str, budget: int, optimizer: Family) -> OracleChoice:
        """The best configuration for ``task`` at ``budget`` steps; ``ValueError`` if the file has none."""
        if not self.has(task, budget, optimizer):
            raise ValueError(f"the tuned oracle {self.source} has no {optimizer} entry for {task} at {budget} steps")
        entry = self.entries[task][str(budget)][optimizer]
        return OracleChoice(entry["schedule"], float(entry["lr"]), float(entry["val_loss"]))

    def check(self, config: EvaluationConfig, optimizers: Sequence[str]) -> None:
        """Raise ``ValueError`` (one line) unless the file covers every task × budget of ``config`` for
        ``optimizers`` and was tuned on the same data settings."""
        mine = self.payload.get("data", {})
        theirs = _data_settings(config.data_dir, config.train_size, config.validation_size, config.data_seed)
        differ = [f"{k} {mine.get(k)!r} (evaluation: {theirs[k]!r})" for k in DATA_KEYS if mine.get(k) != theirs[k]]
        if differ:
            raise ValueError(f"the tuned oracle {self.source} was tuned on other data: {'; '.join(differ)}; "
                             "recompute it with benchmarks/oracle.py on these settings or leave the oracles out")
        missing = [f"{t.name}@{b}({o})" for t in config.task_list for b in config.budget_list for o in optimizers
                   if not self.has(t.name, b, o)]
        if missing:
            tasks = sorted({m.split("@")[0] for m in missing})
            budgets = sorted({int(m.split("@")[1].split("(")[0]) for m in missing})
            raise ValueError(
                f"the tuned oracle {self.source} has no entry for {', '.join(missing[:6])}"
                f"{' …' if len(missing) > 6 else ''}: compute it with python benchmarks/oracle.py --tasks "
                f"{','.join(tasks)} --budgets {','.join(map(str, budgets))}, or leave "
                f"{'/'.join('oracle-' + o for o in optimizers)} out of --baselines"
            )


def load_oracle(path: str | os.PathLike[str]) -> OracleTable:
    """Read an oracle file; a missing or malformed one is a one-line ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"no tuned oracle at {path} (oracle-sgd/oracle-adam need one): compute it with python "
            "benchmarks/oracle.py, pass --oracle PATH, or leave the oracles out of --baselines"
        )
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != ORACLE_FORMAT or payload.get("version") != ORACLE_VERSION:
            raise ValueError(f"not an {ORACLE_FORMAT} file of version {ORACLE_VERSION}")
        seeds = [int(s) for s in payload["tuning_seeds"]]
        float(payload["warmup_fraction"])
        for task in payload["entries"].values():
            for budget in task.values():
                for entry in budget.values():
                    if entry["schedule"] not in SCHEDULE_NAMES or not float(entry["lr"]) > 0:
                        raise ValueError(f"bad entry {entry.get('schedule')!r} lr {entry.get('lr')!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a usable oracle file ({exc.__class__.__name__}: {exc})") from None
    if any(s < TUNING_SEED_BASE for s in seeds):
        raise ValueError(f"{path}: tuned on seeds below TUNING_SEED_BASE, which evaluation may draw")
    return OracleTable(payload, str(path))


# --------------------------------------------------------------------------------------------------
# Computing and writing
# --------------------------------------------------------------------------------------------------


def oracle_header(config: OracleConfig) -> dict[str, Any]:
    """What an oracle file records about how it was tuned (two files merge only where this agrees)."""
    return {
        "format": ORACLE_FORMAT,
        "version": ORACLE_VERSION,
        "selection": SELECTION_METRIC,
        "tuning_seeds": tuning_seeds(config.tuning_seeds),
        "warmup_fraction": config.warmup_fraction,
        "grid": {"sgd": list(config.grid.sgd_rates), "adam": list(config.grid.adam_rates),
                 "schedules": list(config.grid.schedules)},
        "data": config.data_settings(),
    }


def compute_oracle(
    config: OracleConfig, *, data: ImageData | None = None, progress: bool = True, command: str = ""
) -> dict[str, Any]:
    """Train every configuration of ``config``'s grid on the tuning seeds and select; returns the
    oracle file's content (``data`` replaces loading the base dataset, for tests)."""
    from rlopt.bench.runner import prepare, run  # the runner reads oracle files: import it here, not above

    header = oracle_header(config)
    seeds = header["tuning_seeds"]
    prepared = prepare(config.evaluation_config(), data=data, method_names=config.method_names())
    result = run(prepared, progress=progress, data=data, seeds=seeds)
    return {
        **header,
        "config": asdict(config),
        "compute": [{"command": command, "tasks": [t.name for t in prepared.tasks],
                     "budgets": list(result.budgets), "runs": len(result.records), "passes": result.passes,
                     "cpu_s": round(result.cpu_s, 1), "wall_s": round(result.wall_s, 1), "workers": config.workers}],
        "entries": select_oracle(result.records, seeds),
    }


#: the header keys two oracle files must share to be merged
_COMPATIBLE_KEYS = ("format", "version", "tuning_seeds", "warmup_fraction", "grid", "data")


def check_mergeable(old: dict[str, Any], header: dict[str, Any]) -> None:
    """``ValueError`` (one line) unless an existing oracle file was tuned as ``header`` says."""
    differ = [k for k in _COMPATIBLE_KEYS if old.get(k) != header.get(k)]
    if differ:
        raise ValueError(f"the existing oracle file was tuned with other {', '.join(differ)}; pass --no-merge to "
                         "replace it")


def merge_oracle(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s entries added to (and replacing those of) ``old``, compute records appended; ``ValueError``
    if the two were tuned differently (seeds, warm-up, grid, data)."""
    check_mergeable(old, new)
    entries = {task: dict(budgets) for task, budgets in old["entries"].items()}
    for task, budgets in new["entries"].items():
        entries.setdefault(task, {}).update(budgets)
    return {**new, "entries": entries, "compute": [*old.get("compute", []), *new["compute"]]}


def write_oracle(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the oracle file (atomically) with its compute totals; returns the path."""
    compute = payload["compute"]
    payload = {**payload, "total_compute": {
        "runs": sum(c["runs"] for c in compute), "passes": sum(c["passes"] for c in compute),
        "cpu_s": round(sum(c["cpu_s"] for c in compute), 1), "wall_s": round(sum(c["wall_s"] for c in compute), 1)}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
