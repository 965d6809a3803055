"""The methods the benchmark compares: baselines (the peers a user would pick instead) and learned schedulers.

A :class:`Method` is a name and a ``build(model, context) -> MethodRun`` factory. The benchmark builds
a fresh optimizer for every run; :class:`MethodRun` carries it, the hook called after each
``optimizer.step()`` with that step's mini-batch loss (where a scheduler steps), and the method's
protocol around evaluation (Schedule-Free's ``optimizer.train()`` / ``optimizer.eval()``).

=====================  ============================================================================
name                   method (numbers from :class:`BaselineSettings`)
=====================  ============================================================================
``sgd``                ``torch.optim.SGD``, constant lr 0.1 (Zhu et al. start SGD at 0.1)
``adam``               ``torch.optim.Adam``, constant lr 1e-3 (Zhu et al.'s Adam baseline)
``momentum``           SGD with momentum 0.9, lr 0.01: the effective step lr/(1 − μ) = 0.1 of ``sgd``
``nesterov-adaptive``  SGD ``nesterov=True`` with ρ_t = Γ(t) = 1 − 1/√t (R-SGD paper Eq. (7)), lr 0.01
``rsgd``               :class:`rlopt.optim.RSGD` with its paper schedules: Γ(t) = 1 − 1/√t and the
                       per-epoch decay :class:`rlopt.schedules.PaperLRDecay`; lr 0.01
``rsgd-exp``           the same R-SGD with the paper's exponential schedule Γ(t) = 1 − γ^t, γ = γ0·e^{−λ·t_ep},
                       (γ0, λ) = (0.9995, 1e-4) (§III, §V A)
``plateau``            SGD 0.1 + ``ReduceLROnPlateau`` stepped every step with the smoothed loss
``cosine``             SGD, peak 0.1: linear warm-up over 5 % of the budget, then cosine to 0 at the budget
``linear``             SGD, peak 0.1: linear warm-up over 5 % of the budget, then linear decay to 0 at it
``sf-sgd``             ``schedulefree.SGDScheduleFree`` at its defaults (lr 1.0, momentum 0.9, no warm-up)
``sf-adamw``           ``schedulefree.AdamWScheduleFree`` at its defaults (lr 0.0025, no warm-up)
``prodigy``            ``prodigyopt.Prodigy`` at its default and recommended lr 1.0
``oracle-sgd``         SGD, the best of constant / cosine / linear with the best rate of a 5-point log grid,
                       tuned per task and budget on tuning seeds (:mod:`rlopt.bench.oracle`)
``oracle-adam``        the same for Adam
``policy:PATH``        a ``.rlopt`` learned scheduler (:class:`rlopt.LearnedScheduler`) on the optimizer
                       and starting rate the policy file declares, told the budget (``total_steps``)
=====================  ============================================================================

Budget-aware methods (``cosine``, ``linear``, the oracles, learned schedulers) are told the budget
through :attr:`RunContext.budget`; the others never read it, so one run of the longest budget gives
every shorter budget on the way (:attr:`Method.budget_aware`).

The warm-up of ``cosine`` and ``linear`` is the shape of ``transformers``'
``get_cosine_schedule_with_warmup`` / ``get_linear_schedule_with_warmup`` (linear from lr/W to the
peak over W steps); 5 % of the run is about the share Goyal et al. (2017) warm up for. Schedule-Free
and Prodigy run at the values their constructors default to; Schedule-Free follows its README's
protocol: ``optimizer.train()`` before training steps, ``optimizer.eval()`` before anything evaluates
the model. ``schedulefree`` and ``prodigyopt`` are imported only when those methods are built.

Why lr 0.01 for the momentum methods and R-SGD on the CNN: see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from rlopt.control import ObservationSpec, ema_update
from rlopt.optim import RSGD
from rlopt.scheduler import DEFAULT_SAFETY, LearnedScheduler, PolicyFileError, SafetyConfig, load_policy
from rlopt.schedules import ExpReinforcement, PaperLRDecay, PowerReinforcement, make_momentum_sgd
from rlopt.training import MOMENTUM, OPTIMIZER_PRESETS, make_optimizer

if TYPE_CHECKING:
    from rlopt.bench.oracle import OracleTable

__all__ = [
    "BASELINE_NAMES",
    "BASELINE_SUMMARIES",
    "ORACLE_NAMES",
    "POLICY_PREFIX",
    "SCHEDULE_NAMES",
    "TUNE_PREFIX",
    "BaselineName",
    "BaselineSettings",
    "Family",
    "Hook",
    "Method",
    "MethodRun",
    "RunContext",
    "ScheduleName",
    "SweepFamily",
    "baseline",
    "effective_lr",
    "parse_baseline_names",
    "policy_method",
    "resolve_method",
    "schedule_factor",
    "tuning_method",
    "tuning_method_name",
    "warmup_steps",
]

#: called after every ``optimizer.step()`` with that step's mini-batch loss (its return is ignored)
Hook = Callable[[float], object]

#: the baselines (peers), in table order
BaselineName = Literal[
    "sgd", "adam", "momentum", "nesterov-adaptive", "rsgd", "rsgd-exp", "plateau", "cosine", "linear",
    "sf-sgd", "sf-adamw", "prodigy", "oracle-sgd", "oracle-adam",
]
#: every baseline
BASELINE_NAMES: tuple[BaselineName, ...] = get_args(BaselineName)
#: the baselines that read the tuned oracle's choices
ORACLE_NAMES: tuple[BaselineName, ...] = ("oracle-sgd", "oracle-adam")

#: one line per baseline for ``--help`` (no package is imported to write them)
BASELINE_SUMMARIES: dict[BaselineName, str] = {
    "sgd": "SGD, constant lr",
    "adam": "Adam, constant lr",
    "momentum": "SGD with momentum 0.9",
    "nesterov-adaptive": "Nesterov SGD with ρ_t = 1 − 1/√t",
    "rsgd": "R-SGD with its paper schedules",
    "rsgd-exp": "R-SGD with the paper's exponential Γ(t) = 1 − γ^t",
    "plateau": "SGD with ReduceLROnPlateau",
    "cosine": "SGD, warm-up then cosine to 0 at the budget",
    "linear": "SGD, warm-up then linear decay to 0 at the budget",
    "sf-sgd": "Schedule-Free SGD at its defaults",
    "sf-adamw": "Schedule-Free AdamW at its defaults",
    "prodigy": "Prodigy at its default lr 1.0",
    "oracle-sgd": "SGD tuned per task and budget (constant/cosine/linear × 5 rates) on tuning seeds",
    "oracle-adam": "Adam tuned the same way",
}
assert tuple(BASELINE_SUMMARIES) == BASELINE_NAMES

#: ``policy:PATH`` names a learned scheduler
POLICY_PREFIX = "policy:"
#: ``tune:OPTIMIZER:SCHEDULE:LR`` names one configuration of the tuned oracle's grid
TUNE_PREFIX = "tune:"
#: the word that selects no baseline in :func:`parse_baseline_names`
NO_BASELINES = "none"

#: the optimizer families the tuned oracle tunes
Family = Literal["sgd", "adam"]
#: the families whose starting rates the lr sweep varies: ``momentum`` (SGD with momentum μ) starts at
#: SGD's rates × (1 − μ), the same effective steps lr / (1 − μ)
SweepFamily = Literal["sgd", "momentum", "adam"]
#: the rate schedules of ``cosine``, ``linear`` and the tuned oracle
ScheduleName = Literal["constant", "cosine", "linear"]
SCHEDULE_NAMES: tuple[ScheduleName, ...] = get_args(ScheduleName)


@dataclass(frozen=True)
class BaselineSettings:
    """Every number of the baseline methods (docs/benchmarks.md: why these values)."""

    adam_lr: float = OPTIMIZER_PRESETS["adam"].lr
    """Adam's step size (Zhu et al.'s Adam baseline; torch's default)."""
    sgd_lr: float = OPTIMIZER_PRESETS["sgd"].lr
    """rate of sgd and plateau (their starting rate), and the peak of cosine and linear."""
    momentum: float = MOMENTUM
    """heavy-ball momentum μ of momentum (the ``momentum`` optimizer family's)."""
    momentum_lr: float = OPTIMIZER_PRESETS["momentum"].lr
    """lr of momentum: lr/(1 − μ) = 0.1 matches sgd's effective step."""
    nesterov_lr: float = 0.01
    """lr of nesterov-adaptive (ρ_t = Γ(t) → 1, so the effective step keeps growing)."""
    rsgd_lr: float = OPTIMIZER_PRESETS["rsgd"].lr
    """R-SGD's η0 on the CNN; the paper's 0.8 is for its sigmoid MLP with quadratic error."""
    rsgd_decay_beta: float = 0.999
    """β of the paper's per-epoch decay η_n = η_{n-1}·β^n (Algorithm 1)."""
    rsgd_min_lr: float = 2.5e-4
    """floor of that decay: the paper's η_min/η0 = 0.02/0.8 times rsgd_lr."""
    rsgd_exp_gamma0: float = 0.9995
    """γ0 of rsgd-exp's Γ(t) = 1 − γ^t, γ = γ0·e^{−λ·t_ep} (the paper's §V A value)."""
    rsgd_exp_lambda: float = 1e-4
    """λ of rsgd-exp's schedule (the paper's §V A value)."""
    warmup_fraction: float = 0.05
    """share of the budget over which cosine, linear (and the oracle's schedules) warm up linearly."""
    plateau_factor: float = 0.5
    """ReduceLROnPlateau: the lr is multiplied by this on a plateau."""
    plateau_patience: int = 100
    """ReduceLROnPlateau: steps (not epochs: it is stepped every step) without improvement."""
    plateau_threshold: float = 0.01
    """ReduceLROnPlateau: an improvement is a smoothed loss below (1 − this) × the best so far."""
    plateau_min_lr: float = 1e-3
    """ReduceLROnPlateau: lowest rate (the lower lr bound of Zhu et al. §4.1)."""
    plateau_smoothing: float = ObservationSpec.loss_smoothing
    """EMA constant β of the loss ReduceLROnPlateau watches (the controller's loss smoothing)."""
    sf_sgd_lr: float = 1.0
    """SGDScheduleFree's default lr (its README: 10-50× a classical SGD rate)."""
    sf_adamw_lr: float = 0.0025
    """AdamWScheduleFree's default lr."""
    sf_warmup_steps: int = 0
    """Schedule-Free's warmup_steps (the constructors' default)."""
    prodigy_lr: float = 1.0
    """Prodigy's lr, a multiplier of its own estimate d (default; its README: keep 1.0)."""

    def __post_init__(self) -> None:
        rates = ("adam_lr", "sgd_lr", "momentum_lr", "nesterov_lr", "rsgd_lr", "sf_sgd_lr", "sf_adamw_lr",
                 "prodigy_lr")
        for name in rates:
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive finite rate, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.rsgd_decay_beta <= 1 or self.rsgd_min_lr < 0:
            raise ValueError("rsgd_decay_beta must be in (0, 1] and rsgd_min_lr >= 0")
        if not 0 < self.rsgd_exp_gamma0 <= 1 or not self.rsgd_exp_lambda >= 0:
            raise ValueError("rsgd_exp_gamma0 must be in (0, 1] and rsgd_exp_lambda >= 0")
        if not 0 <= self.warmup_fraction < 1 or self.sf_warmup_steps < 0:
            raise ValueError("warmup_fraction must be in [0, 1) and sf_warmup_steps >= 0")
        if not 0 < self.plateau_factor < 1 or self.plateau_patience < 0 or self.plateau_threshold < 0:
            raise ValueError("plateau_factor must be in (0, 1), plateau_patience and plateau_threshold >= 0")
        if self.plateau_min_lr < 0 or not 0 <= self.plateau_smoothing < 1:
            raise ValueError("plateau_min_lr must be >= 0 and plateau_smoothing in [0, 1)")


@dataclass(frozen=True)
class RunContext:
    """What a method may know about the run it is built for."""

    budget: int
    """the run's length in optimizer steps; only budget-aware methods read it."""
    steps_per_epoch: int
    """mini-batches per pass over the training images (``PaperLRDecay`` steps once per epoch)."""
    seed: int
    """the run's seed; seeds R-SGD's Bernoulli draws (the same for every method of a seed)."""
    task: str = ""
    """the task's name (the tuned oracle's choice depends on it)."""
    lr: float | None = None
    """the starting (or peak) rate of an lr-sweep run; ``None``: the method's own."""


def _nothing() -> None:
    """A protocol step that most methods do not need."""


def _no_hook(loss: float) -> None:
    """Methods without a scheduler."""


@dataclass(frozen=True, eq=False)
class MethodRun:
    """One run's optimizer, per-step hook and evaluation protocol."""

    optimizer: torch.optim.Optimizer
    hook: Hook = _no_hook
    """called after each ``optimizer.step()`` with the step's mini-batch loss."""
    before_training: Callable[[], object] = _nothing
    """called before the first training step and after every evaluation (Schedule-Free: ``train()``)."""
    before_evaluation: Callable[[], object] = _nothing
    """called before anything evaluates the model (Schedule-Free: ``eval()``, which moves to the average)."""
    scheduler: Any = None
    """the scheduler object, if any (for inspection)."""


@dataclass(frozen=True)
class Method:
    """A named way to train: ``build(model, context)`` returns a fresh :class:`MethodRun`."""

    name: str
    """how tables, plots and files name it (``sgd``, ``policy:runs/x/policy.rlopt``)."""
    kind: Literal["baseline", "policy"]
    """learned schedulers (``policy``) get one verdict line against every baseline."""
    description: str
    """one line for results.json and the report."""
    build: Callable[[nn.Module, RunContext], MethodRun] = field(repr=False)
    """the factory, called once per run with a freshly initialised model."""
    family: SweepFamily | None = None
    """whose rates the lr sweep starts it at; ``None``: it has no starting rate to sweep."""
    default_lr: float | None = None
    """the rate it starts at (peak for warm-up schedules) outside the sweep."""
    budget_aware: bool = False
    """reads :attr:`RunContext.budget`; a budget-unaware method's run of B steps is the first B
    steps of any longer run of it."""


def effective_lr(optimizer: torch.optim.Optimizer) -> float:
    """The step size the next step of the first param group uses: ``lr``, times Prodigy's estimate ``d``."""
    group = optimizer.param_groups[0]
    return float(group["lr"]) * float(group.get("d", 1.0))


def warmup_steps(budget: int, fraction: float) -> int:
    """Warm-up steps of a warm-up schedule over ``budget`` steps: ``round(fraction · budget)``, < budget."""
    return min(round(fraction * budget), budget - 1) if budget > 1 else 0


def schedule_factor(schedule: ScheduleName, step: int, budget: int, warmup: int) -> float:
    """The multiple of the peak rate used by training step ``step + 1`` (``step`` scheduler steps done).

    ``constant``: 1. ``cosine`` and ``linear``: (step + 1)/warmup during the ``warmup`` steps, then
    ½(1 + cos(π·p)) or 1 − p with p = (step − warmup)/(budget − warmup): the peak at the end of the
    warm-up and exactly 0 after ``budget`` steps (cosine annealing with ``T_max`` = budget − warmup).
    """
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(budget - warmup, 1), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _build_scheduled(
    model: nn.Module, context: RunContext, optimizer_name: Family, schedule: ScheduleName, lr: float,
    warmup_fraction: float,
) -> MethodRun:
    """SGD or Adam at ``lr`` (the peak), with ``schedule`` over ``context.budget``."""
    lr = context.lr if context.lr is not None else lr
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=lr) if optimizer_name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    if schedule == "constant":
        return MethodRun(optimizer)
    budget, warmup = context.budget, warmup_steps(context.budget, warmup_fraction)
    scheduler = LambdaLR(optimizer, lambda t: schedule_factor(schedule, t, budget, warmup))
    return MethodRun(optimizer, hook=lambda loss: scheduler.step(), scheduler=scheduler)


def _schedule_words(schedule: ScheduleName, warmup_fraction: float) -> str:
    if schedule == "constant":
        return "constant"
    shape = "cosine to 0" if schedule == "cosine" else "linear decay to 0"
    return f"{warmup_fraction:.0%} warm-up, {shape} at the budget"


def tuning_method_name(optimizer: Family, schedule: ScheduleName, lr: float) -> str:
    """``tune:sgd:cosine:0.1``: one configuration of the tuned oracle's grid."""
    return f"{TUNE_PREFIX}{optimizer}:{schedule}:{lr!r}"


def tuning_method(name: str, settings: BaselineSettings) -> Method:
    """The grid configuration ``tune:OPTIMIZER:SCHEDULE:LR`` (:func:`tuning_method_name`)."""
    parts = name[len(TUNE_PREFIX):].split(":")
    try:
        if len(parts) != 3 or parts[0] not in get_args(Family) or parts[1] not in SCHEDULE_NAMES:
            raise ValueError
        optimizer, schedule, lr = cast(Family, parts[0]), cast(ScheduleName, parts[1]), float(parts[2])
        if not 0 < lr < math.inf:
            raise ValueError
    except ValueError:
        raise ValueError(f"{name!r} is not tune:sgd|adam:constant|cosine|linear:RATE") from None

    def build(model: nn.Module, context: RunContext) -> MethodRun:
        return _build_scheduled(model, context, optimizer, schedule, lr, settings.warmup_fraction)

    description = f"{optimizer} lr {lr:g}, {_schedule_words(schedule, settings.warmup_fraction)}"
    return Method(name, "baseline", description, build, budget_aware=schedule != "constant")


def _import(module: str, method: str) -> ModuleType:
    """A peer's package, imported when its method is built; a missing one is a one-line error."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"the baseline {method} needs the package {module} (pip install {module})") from None


def _adam(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> MethodRun:
        return MethodRun(torch.optim.Adam(model.parameters(), lr=context.lr or settings.adam_lr))

    return Method("adam", "baseline", f"Adam, constant lr {settings.adam_lr:g}", build, "adam", settings.adam_lr)


def _sgd(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> MethodRun:
        return MethodRun(torch.optim.SGD(model.parameters(), lr=context.lr or settings.sgd_lr))

    return Method("sgd", "baseline", f"SGD, constant lr {settings.sgd_lr:g}", build, "sgd", settings.sgd_lr)


def _momentum(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> MethodRun:
        lr = context.lr or settings.momentum_lr
        return MethodRun(torch.optim.SGD(model.parameters(), lr=lr, momentum=settings.momentum))

    description = f"SGD lr {settings.momentum_lr:g}, momentum {settings.momentum:g}"
    return Method("momentum", "baseline", description, build, "momentum", settings.momentum_lr)


def _nesterov_adaptive(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> MethodRun:
        optimizer, schedule = make_momentum_sgd(
            model.parameters(), context.lr or settings.nesterov_lr, PowerReinforcement(), nesterov=True
        )
        return MethodRun(optimizer, hook=lambda loss: schedule.step(), scheduler=schedule)

    description = f"Nesterov SGD lr {settings.nesterov_lr:g}, ρ_t = Γ(t) = 1 − 1/√t"
    return Method("nesterov-adaptive", "baseline", description, build, "sgd", settings.nesterov_lr)


def _rsgd_with(name: str, exponential: bool) -> Callable[[BaselineSettings], Method]:
    """R-SGD with the paper's per-epoch lr decay and Γ(t) = 1 − 1/√t, or its exponential Γ(t) = 1 − γ^t."""

    def make(settings: BaselineSettings) -> Method:
        def build(model: nn.Module, context: RunContext) -> MethodRun:
            reinforcement: Callable[[int], float] = (
                ExpReinforcement(settings.rsgd_exp_gamma0, settings.rsgd_exp_lambda, context.steps_per_epoch)
                if exponential else PowerReinforcement()
            )
            optimizer = RSGD(model.parameters(), lr=context.lr or settings.rsgd_lr, reinforcement=reinforcement,
                             seed=context.seed)
            decay = PaperLRDecay(optimizer, beta=settings.rsgd_decay_beta, min_lr=settings.rsgd_min_lr)
            steps_done = 0

            def hook(loss: float) -> None:
                nonlocal steps_done
                steps_done += 1
                if steps_done % context.steps_per_epoch == 0:
                    decay.step()

            return MethodRun(optimizer, hook=hook, scheduler=decay)

        schedule = (
            f"Γ(t) = 1 − γ^t, γ = {settings.rsgd_exp_gamma0:g}·exp(−{settings.rsgd_exp_lambda:g}·t_ep)"
            if exponential else "Γ(t) = 1 − 1/√t"
        )
        description = f"R-SGD lr {settings.rsgd_lr:g}, {schedule}, per-epoch decay β={settings.rsgd_decay_beta:g}"
        return Method(name, "baseline", description, build, "sgd", settings.rsgd_lr)

    return make


def _plateau(settings: BaselineSettings) -> Method:
    def build(model: nn.Module, context: RunContext) -> MethodRun:
        optimizer = torch.optim.SGD(model.parameters(), lr=context.lr or settings.sgd_lr)
        schedule = ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=settings.plateau_factor,
            patience=settings.plateau_patience,
            threshold=settings.plateau_threshold,
            threshold_mode="rel",
            min_lr=settings.plateau_min_lr,
        )
        smoothed: float | None = None

        def hook(loss: float) -> None:
            nonlocal smoothed
            if math.isfinite(loss):
                smoothed = ema_update(smoothed, loss, settings.plateau_smoothing)
                schedule.step(smoothed)

        return MethodRun(optimizer, hook=hook, scheduler=schedule)

    description = (
        f"SGD lr {settings.sgd_lr:g}, ReduceLROnPlateau ×{settings.plateau_factor:g} after "
        f"{settings.plateau_patience} steps without improvement of the smoothed loss"
    )
    return Method("plateau", "baseline", description, build, "sgd", settings.sgd_lr)


def _warmup_schedule(schedule: ScheduleName) -> Callable[[BaselineSettings], Method]:
    def make(settings: BaselineSettings) -> Method:
        def build(model: nn.Module, context: RunContext) -> MethodRun:
            return _build_scheduled(model, context, "sgd", schedule, settings.sgd_lr, settings.warmup_fraction)

        description = f"SGD peak lr {settings.sgd_lr:g}, {_schedule_words(schedule, settings.warmup_fraction)}"
        return Method(schedule, "baseline", description, build, "sgd", settings.sgd_lr, budget_aware=True)

    return make


def _schedule_free(name: Literal["sf-sgd", "sf-adamw"]) -> Callable[[BaselineSettings], Method]:
    def make(settings: BaselineSettings) -> Method:
        schedulefree = _import("schedulefree", name)
        cls = schedulefree.SGDScheduleFree if name == "sf-sgd" else schedulefree.AdamWScheduleFree
        default = settings.sf_sgd_lr if name == "sf-sgd" else settings.sf_adamw_lr

        def build(model: nn.Module, context: RunContext) -> MethodRun:
            optimizer = cls(model.parameters(), lr=context.lr or default, warmup_steps=settings.sf_warmup_steps)
            return MethodRun(optimizer, before_training=optimizer.train, before_evaluation=optimizer.eval)

        description = (
            f"{cls.__name__} lr {default:g}, warmup_steps {settings.sf_warmup_steps} (its defaults); "
            "optimizer.train()/eval() around evaluation"
        )
        return Method(name, "baseline", description, build, "sgd" if name == "sf-sgd" else "adam", default)

    return make


def _prodigy(settings: BaselineSettings) -> Method:
    prodigyopt = _import("prodigyopt", "prodigy")

    def build(model: nn.Module, context: RunContext) -> MethodRun:
        return MethodRun(prodigyopt.Prodigy(model.parameters(), lr=settings.prodigy_lr))

    return Method("prodigy", "baseline", f"Prodigy lr {settings.prodigy_lr:g} (its default); traced rate d·lr", build)


def _oracle(optimizer_name: Family) -> Callable[[BaselineSettings, OracleTable | None], Method]:
    def make(settings: BaselineSettings, table: OracleTable | None) -> Method:
        name = f"oracle-{optimizer_name}"
        if table is None:
            raise ValueError(f"{name} needs the tuned oracle's choices (an oracle file)")

        def build(model: nn.Module, context: RunContext) -> MethodRun:
            choice = table.choice(context.task, context.budget, optimizer_name)
            return _build_scheduled(model, context, optimizer_name, choice.schedule, choice.lr, table.warmup_fraction)

        description = (
            f"{'SGD' if optimizer_name == 'sgd' else 'Adam'}, best of constant/cosine/linear × the rate grid per "
            f"task and budget, tuned on {len(table.tuning_seeds)} tuning seeds ({table.source})"
        )
        return Method(name, "baseline", description, build, budget_aware=True)

    return make


_BASELINES: dict[str, Callable[[BaselineSettings], Method]] = {
    "sgd": _sgd,
    "adam": _adam,
    "momentum": _momentum,
    "nesterov-adaptive": _nesterov_adaptive,
    "rsgd": _rsgd_with("rsgd", exponential=False),
    "rsgd-exp": _rsgd_with("rsgd-exp", exponential=True),
    "plateau": _plateau,
    "cosine": _warmup_schedule("cosine"),
    "linear": _warmup_schedule("linear"),
    "sf-sgd": _schedule_free("sf-sgd"),
    "sf-adamw": _schedule_free("sf-adamw"),
    "prodigy": _prodigy,
}
_ORACLES = {"oracle-sgd": _oracle("sgd"), "oracle-adam": _oracle("adam")}
assert (*_BASELINES, *_ORACLES) == BASELINE_NAMES


def _unknown_baseline(name: str) -> ValueError:
    return ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")


def parse_baseline_names(values: Sequence[str]) -> tuple[BaselineName, ...]:
    """Baseline names from command-line words: each word may list several, comma-separated;
    ``none`` (alone) selects no baseline. Unknown names raise ``ValueError``; repeats are dropped."""
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    chosen: list[BaselineName] = []
    for name in names:
        if name == NO_BASELINES:
            continue
        if name not in BASELINE_NAMES:
            raise _unknown_baseline(name)
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def baseline(name: str, settings: BaselineSettings | None = None, oracle: OracleTable | None = None) -> Method:
    """The baseline called ``name`` (one of :data:`BASELINE_NAMES`); the oracles need ``oracle``."""
    settings = settings or BaselineSettings()
    if name in _ORACLES:
        return _ORACLES[name](settings, oracle)
    if name not in _BASELINES:
        raise _unknown_baseline(name)
    return _BASELINES[name](settings)


def policy_method(path: str | os.PathLike[str], safety: SafetyConfig | None = DEFAULT_SAFETY) -> Method:
    """A learned scheduler read from ``path``, on the optimizer and starting rate its file declares,
    with the safety net ``safety`` (``None``: the policy alone).

    The file is read and checked here, once: a corrupt file, or a policy whose actions its declared
    optimizer cannot take (an ``rsgd`` policy declared for ``sgd``), fails before any training with
    :class:`rlopt.scheduler.PolicyFileError`. Each run gets its own :class:`rlopt.LearnedScheduler`
    told the run's budget (``total_steps``); an lr-sweep start outside the policy's lr bounds widens
    the bounds to include it (the scheduler refuses a start outside them).
    """
    name = f"{POLICY_PREFIX}{os.fspath(path)}"  # the path as the user wrote it
    path = Path(path)
    policy = load_policy(path)
    probe = make_optimizer(policy.optimizer, [torch.zeros(1, requires_grad=True)], policy.initial_lr)
    try:
        LearnedScheduler(probe, policy)
    except ValueError as exc:
        message = " ".join(str(exc).split())
        raise PolicyFileError(
            f"{path}: a {policy.actions.mode!r} policy cannot drive {type(probe).__name__} (the optimizer "
            f"the file declares, {policy.optimizer!r}, at lr {policy.initial_lr:g}): {message}"
        ) from exc

    def build(model: nn.Module, context: RunContext) -> MethodRun:
        lr = context.lr or policy.initial_lr
        optimizer = make_optimizer(policy.optimizer, model.parameters(), lr, seed=context.seed)
        low, high = policy.actions.lr_bounds
        bounds = None if low <= lr <= high else (min(low, lr), max(high, lr))
        scheduler = LearnedScheduler(optimizer, policy, total_steps=context.budget, lr_bounds=bounds, safety=safety)
        return MethodRun(optimizer, hook=scheduler.step, scheduler=scheduler)

    description = (
        f"learned scheduler ({policy.actions.mode} mode) on {policy.optimizer} lr {policy.initial_lr:g} from {path}, "
        "told the budget"
    )
    families: dict[str, SweepFamily] = {"adam": "adam", "momentum": "momentum"}
    family = families.get(policy.optimizer, "sgd")
    return Method(name, "policy", description, build, family, policy.initial_lr, budget_aware=True)


def resolve_method(
    name: str,
    settings: BaselineSettings | None = None,
    oracle: OracleTable | None = None,
    safety: SafetyConfig | None = DEFAULT_SAFETY,
) -> Method:
    """A baseline by name, ``policy:PATH`` (run with the safety net ``safety``) or a tuning-grid
    configuration ``tune:…``."""
    if name.startswith(POLICY_PREFIX):
        return policy_method(name[len(POLICY_PREFIX):], safety)
    if name.startswith(TUNE_PREFIX):
        return tuning_method(name, settings or BaselineSettings())
    return baseline(name, settings, oracle)
