"""What an evaluation runs: :class:`EvaluationConfig`, the named grids, the lr sweep, and their parsers.

A *grid* (:data:`GRIDS`) names the tasks, budgets, seeds and baselines an evaluation runs by default;
``--tasks``, ``--budgets``, ``--seeds`` and ``--baselines`` each replace that part of it.

================  =====================================================================================
grid              what it runs
================  =====================================================================================
``default``       the README's main job: ``mnist-cnn`` at 250 and 1000 steps, 3 seeds, against sgd, adam
                  and oracle-sgd (picked so that training + evaluation fit in 10 minutes on 2 cores)
``full``          the default task and every ``held-out`` task at 250, 1000 and 2000 steps, 10 seeds,
                  against every baseline (about 10 h on 2 cores, projected in docs/ray.md)
================  =====================================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import tyro

from rlopt.bench.flatness import FlatnessSettings
from rlopt.bench.methods import (
    BASELINE_NAMES,
    BASELINE_SUMMARIES,
    POLICY_PREFIX,
    BaselineName,
    BaselineSettings,
    SweepFamily,
    parse_baseline_names,
)
from rlopt.control import ObservationSpec
from rlopt.rewards import RewardConfig
from rlopt.scheduler import SafetyConfig
from rlopt.tasks import DEFAULT_TASK, TASK_SPLITS, Task, TaskSize, get_task, tasks_in
from rlopt.training import HELD_OUT_SEED_BASE, TUNING_SEED_BASE

__all__ = [
    "BACKENDS",
    "DEVICES",
    "GRIDS",
    "GRID_NAMES",
    "MAX_EVALUATION_SEEDS",
    "Backend",
    "Device",
    "EvaluationConfig",
    "Grid",
    "GridName",
    "SweepSettings",
    "budgets_argument",
    "held_out_seeds",
    "parse_budgets",
    "parse_task_names",
    "tasks_argument",
]

#: where runs train: ``auto`` takes CUDA when available
Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[Device, ...] = get_args(Device)

#: where training passes run: ``process``, this machine's processes; ``ray``, Ray tasks (rlopt.bench.ray_backend)
Backend = Literal["process", "ray"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

#: evaluation seeds HELD_OUT_SEED_BASE + i stay below the tuning seeds of the oracle
MAX_EVALUATION_SEEDS = TUNING_SEED_BASE - HELD_OUT_SEED_BASE

#: the command-line word for "the grid's value" of --tasks, --budgets, --seeds and --baselines
FROM_GRID = "grid"


def held_out_seeds(n: int) -> list[int]:
    """The ``n`` evaluation seeds, outside the ranges agent training and oracle tuning draw from."""
    if not 1 <= n <= MAX_EVALUATION_SEEDS:
        raise ValueError(f"seeds must be between 1 and {MAX_EVALUATION_SEEDS}, got {n}")
    return [HELD_OUT_SEED_BASE + i for i in range(n)]


def _words(values: Sequence[str]) -> list[str]:
    return [word.strip() for value in values for word in value.replace(",", " ").split() if word.strip()]


def parse_task_names(values: Sequence[str]) -> tuple[str, ...]:
    """Task names from command-line words (comma- or space-separated); a split name (``train``,
    ``held-out``) stands for its tasks. Unknown names raise ``ValueError``; repeats are dropped."""
    names: list[str] = []
    for word in _words(values):
        expanded = [t.name for t in tasks_in(word)] if word in TASK_SPLITS else [get_task(word).name]
        names.extend(n for n in expanded if n not in names)
    if not names:
        raise ValueError("no task given")
    return tuple(names)


def parse_budgets(values: Sequence[str]) -> tuple[int, ...]:
    """Budgets (optimizer steps) from command-line words, ascending and without repeats."""
    budgets: set[int] = set()
    for word in _words(values):
        try:
            budget = int(word)
        except ValueError:
            raise ValueError(f"a budget is a whole number of optimizer steps, got {word!r}") from None
        if budget < 1:
            raise ValueError(f"a budget must be >= 1 step, got {budget}")
        budgets.add(budget)
    if not budgets:
        raise ValueError("no budget given")
    return tuple(sorted(budgets))


def _list_argument(parse: Callable[[Sequence[str]], tuple[Any, ...]], metavar: str, *,
                   optional: bool) -> tyro.constructors.PrimitiveConstructorSpec[Any]:
    """A tuple flag that takes comma- or space-separated words; with ``optional``, ``grid`` (the
    default, shown as such in --help) stands for None: the grid's value."""
    def from_words(words: list[str]) -> tuple[Any, ...] | None:
        return None if optional and words == [FROM_GRID] else parse(words)

    return tyro.constructors.PrimitiveConstructorSpec(
        nargs="*",
        metavar=metavar,
        instance_from_str=from_words,
        is_instance=lambda value: (optional and value is None) or isinstance(value, tuple),
        str_from_instance=lambda value: [FROM_GRID] if value is None else [",".join(map(str, value)) or "none"],
    )


def _parse_seed_count(words: list[str]) -> int | None:
    if words == [FROM_GRID]:
        return None
    try:
        return int(words[0])
    except ValueError:
        raise ValueError(f"seeds is a whole number, got {words[0]!r}") from None


def tasks_argument(*, optional: bool = False) -> tyro.constructors.PrimitiveConstructorSpec[Any]:
    """``--tasks NAME[,NAME…]``: task names or split names."""
    return _list_argument(parse_task_names, "NAME[,NAME…]", optional=optional)


def budgets_argument(*, optional: bool = False) -> tyro.constructors.PrimitiveConstructorSpec[Any]:
    """``--budgets N[,N…]``: optimizer steps."""
    return _list_argument(parse_budgets, "N[,N…]", optional=optional)


_SEEDS_ARGUMENT = tyro.constructors.PrimitiveConstructorSpec(
    nargs=1,
    metavar="N",
    instance_from_str=_parse_seed_count,
    is_instance=lambda value: value is None or isinstance(value, int),
    str_from_instance=lambda value: [FROM_GRID] if value is None else [str(value)],
)
_BASELINES_ARGUMENT = _list_argument(parse_baseline_names, "NAME[,NAME…]", optional=True)


@dataclass(frozen=True)
class Grid:
    """The tasks, budgets, seeds and baselines an evaluation runs unless told otherwise."""

    tasks: tuple[str, ...]
    budgets: tuple[int, ...]
    seeds: int
    baselines: tuple[BaselineName, ...]


#: the named grids (``--grid``)
GridName = Literal["default", "full"]
GRID_NAMES: tuple[GridName, ...] = get_args(GridName)
GRIDS: dict[GridName, Grid] = {
    "default": Grid(
        tasks=(DEFAULT_TASK,),
        budgets=(250, 1000),
        seeds=3,
        # only the constant rate a user would otherwise keep, so that README's main job (training + this
        # grid) fits in 10 minutes on 2 cores; the peers and the tuned oracle are in --grid full
        baselines=("sgd",),
    ),
    "full": Grid(
        tasks=(DEFAULT_TASK, *(t.name for t in tasks_in("held-out"))),
        budgets=(250, 1000, 2000),
        seeds=10,
        baselines=BASELINE_NAMES,
    ),
}


@dataclass(frozen=True)
class SweepSettings:
    """The starting rates of ``--lr-sweep`` (issue 11 §4), by optimizer family.

    Learned schedulers start at their family's rates too (bounds widened to contain the start);
    prodigy (its lr multiplies its own estimate) and the oracles (their rate is the tuned choice) are not swept.
    """

    sgd_rates: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 0.5)
    """starting rates of sgd, nesterov-adaptive, rsgd, rsgd-exp, plateau, cosine, linear, sf-sgd and SGD policies."""
    momentum_rates: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.05)
    """starting rates of momentum and momentum policies: sgd_rates × (1 − 0.9), the same effective steps."""
    adam_rates: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    """starting rates of the Adam methods (adam, sf-adamw, Adam policies)."""

    def __post_init__(self) -> None:
        for name in ("sgd_rates", "momentum_rates", "adam_rates"):
            rates = getattr(self, name)
            if not rates or not all(0 < r < float("inf") for r in rates):
                raise ValueError(f"{name} must be positive finite rates, got {rates}")

    def rates(self, family: SweepFamily) -> tuple[float, ...]:
        return {"sgd": self.sgd_rates, "momentum": self.momentum_rates, "adam": self.adam_rates}[family]


@dataclass(frozen=True)
class EvaluationConfig:
    """What the benchmark compares, on which tasks, for which budgets; recorded in results.json.

    Every method trains a fresh model on every task, at every budget, from every held-out seed
    (which agent training and oracle tuning never draw). Within a seed every method starts from the
    same initial weights and sees the same batches in the same order (a paired comparison).
    """

    policies: Annotated[
        tuple[str, ...], tyro.conf.arg(name="policy", metavar="PATH"), tyro.conf.UseAppendAction
    ] = ()
    """an exported learned scheduler (.rlopt), run on the optimizer and lr its file declares; repeat for several."""
    grid: GridName = "default"
    """default: mnist-cnn, budgets 250/1000, 3 seeds, sgd; full: + the held-out tasks, budget 2000, 10 seeds, all
    peers."""
    tasks: Annotated[tuple[str, ...] | None, tasks_argument(optional=True)] = None
    """task names (the registry's, or composed: dataset-model[-bN][-optimizer]) or split names (train,
    held-out), comma-separated; grid: the grid's."""
    budgets: Annotated[tuple[int, ...] | None, budgets_argument(optional=True)] = None
    """run lengths in optimizer steps, comma-separated; grid: the grid's."""
    seeds: Annotated[int | None, _SEEDS_ARGUMENT] = None
    """held-out seeds (start point and batch order) per run: HELD_OUT_SEED_BASE + 0 … seeds − 1; grid: the grid's."""
    baselines: Annotated[
        tuple[BaselineName, ...] | None,
        _BASELINES_ARGUMENT,
        tyro.conf.arg(help="baselines, comma- or space-separated, from "
                      f"{', '.join(BASELINE_NAMES)}; none for none; grid: the grid's."),
    ] = None
    """the baselines to run (names of rlopt.bench.methods.BASELINE_NAMES); None: the grid's."""
    lr_sweep: bool = False
    """also run every method that has a starting rate from each --sweep rate of its family; report the spread."""
    sweep: SweepSettings = field(default_factory=SweepSettings)
    """the lr sweep's starting rates."""
    oracle: Annotated[str, tyro.conf.arg(metavar="PATH")] = "benchmarks/results/oracle.json"
    """the tuned oracle's choices (benchmarks/oracle.py writes them), read by oracle-sgd and oracle-adam."""
    data_dir: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """an IDX dataset directory (train-images-idx3-ubyte[.gz] …), the base of every task's variant; None: MNIST."""
    train_size: int = TaskSize.train_size
    """training images (the training environment's subset)."""
    validation_size: int = TaskSize.validation_size
    """held-out validation images scored at each budget."""
    train_loss_size: int = 2000
    """training images (the subset's first) the final training loss is measured on."""
    data_seed: int = 0
    """which images the subsets draw (0: the training environment's)."""
    threshold_loss: float = RewardConfig.threshold_loss
    """smoothed training loss that counts as trained (Zhu et al.: 0.02)."""
    smoothing: float = ObservationSpec.loss_smoothing
    """EMA constant β of the smoothed training loss."""
    device: Device = "cpu"
    """where runs train; auto: CUDA when available."""
    threads: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """torch CPU threads per worker; None: torch's choice (one per worker when workers > 1)."""
    workers: int = 1
    """processes that train runs in parallel; results do not depend on it. With --backend ray and no cluster:
    the local Ray's CPUs (1: all of this machine's cores)."""
    backend: Backend = "process"
    """process: --workers processes on this machine; ray: one Ray task per training pass, on a local Ray or the
    cluster at --address (needs the extra: pip install 'rlopt[ray]'); results do not depend on it."""
    address: Annotated[str | None, tyro.conf.arg(metavar="ADDR")] = None
    """with --backend ray: the Ray cluster to join (HOST:PORT as `ray start --head` prints it, or auto); None:
    $RAY_ADDRESS if set, else a local Ray."""
    max_retries: int = 3
    """with --backend ray: times a training pass is run again when its worker process or node dies."""
    flatness: bool = False
    """measure the flatness radius (Zhang et al. Eq. (11)) of each final solution."""
    flatness_settings: FlatnessSettings = field(default_factory=FlatnessSettings)
    """the flatness line search."""
    baseline_settings: BaselineSettings = field(default_factory=BaselineSettings)
    """learning rates, momentum, warm-up, patience … of the baselines."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    """the learned schedulers' safety net (rlopt.SafetyConfig); --safety.no-relapse-cap etc. measure a rule."""
    score_test: Annotated[bool, tyro.conf.Suppress] = True
    """measure test loss and accuracy (the oracle's tuning runs do not: it never sees the test split)."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {self.grid!r}")
        if self.tasks is not None:
            parse_task_names(self.tasks)  # raises the one message for unknown names
        if self.budgets is not None and (not self.budgets or min(self.budgets) < 1):
            raise ValueError(f"budgets must be >= 1 step, got {self.budgets}")
        if self.baselines is not None:
            parse_baseline_names(self.baselines)
        if self.seeds is not None:
            held_out_seeds(self.seeds)
        for name in ("train_size", "train_loss_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_size < 0:
            raise ValueError(f"validation_size must be >= 0, got {self.validation_size}")
        batch = max(t.batch_size for t in self.task_list)
        if self.train_size < batch:
            raise ValueError(f"train_size {self.train_size} is smaller than one batch of {batch} (of the tasks)")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.address is not None and self.backend != "ray":
            raise ValueError(f"--address {self.address} joins a Ray cluster: it needs --backend ray")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")

    @property
    def task_list(self) -> tuple[Task, ...]:
        """The tasks: ``tasks`` if given, else the grid's."""
        return tuple(get_task(n) for n in parse_task_names(self.tasks or GRIDS[self.grid].tasks))

    @property
    def budget_list(self) -> tuple[int, ...]:
        """The budgets, ascending: ``budgets`` if given, else the grid's."""
        return tuple(sorted(set(self.budgets or GRIDS[self.grid].budgets)))

    @property
    def seed_count(self) -> int:
        return self.seeds if self.seeds is not None else GRIDS[self.grid].seeds

    @property
    def baseline_list(self) -> tuple[BaselineName, ...]:
        return self.baselines if self.baselines is not None else GRIDS[self.grid].baselines

    @property
    def method_names(self) -> tuple[str, ...]:
        """Policies first, then baselines: the order of tables and plots."""
        return (*(f"{POLICY_PREFIX}{p}" for p in self.policies), *self.baseline_list)

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus what the grid resolved to (``resolved``)."""
        return {
            **dataclasses.asdict(self),
            "resolved": {
                "tasks": [t.name for t in self.task_list],
                "budgets": list(self.budget_list),
                "seeds": self.seed_count,
                "baselines": list(self.baseline_list),
            },
        }


def baseline_help() -> str:
    """The baselines, one clause each, for ``--help``."""
    return "; ".join(f"{name}: {summary}" for name, summary in BASELINE_SUMMARIES.items())
