"""The controller core: what a hyperparameter controller observes and how its actions actuate.

Both the Gymnasium environment (:mod:`envs`) and the exported :class:`rlopt.LearnedScheduler` drive
an optimizer through :class:`Controller`, so a policy sees at deployment exactly the features it was
trained on and its actions mean the same thing. Nothing here imports gymnasium.

Observation (Zhu, Hayashi & Ohsawa §4.2), one float32 row per feature, all scale-free:
``L_0`` is the first loss the controller saw, ``G_0`` the first mean absolute gradient, ``W`` the
last ``loss_window`` losses (fewer at the start), ``N`` the number of controlled scalars.

===========================  ==================================================================
feature                      definition
===========================  ==================================================================
step                         min(t / horizon, 1): horizon is the run's budget when the controller
                             knows it, else the training episode length
loss                         ln(L_t / L_0)
loss_prev                    ln(L_{t-1} / L_0)
loss_max                     ln(max W / L_0)
loss_min                     ln(min W / L_0)
loss_delta                   ln(L_t / W_first): change of the loss across the window
loss_fluctuation             (max W − min W) / mean W — the quantity reward tier 2 judges
loss_decrease_run            consecutive decreases of the loss ending at t, / loss_window, capped at 1
loss_smoothed                ln(S_t / L_0), S the exponential moving average of the loss (what rewards judge)
params_increased             fraction of parameters that grew in the last update
params_decreased             fraction of parameters that shrank in the last update
param_change_ratio           log10(mean|Δθ| / mean|θ|)
grad                         ln(mean|g_t| / G_0)
grad_prev                    ln(mean|g_{t-1}| / G_0)
grad_prev2                   ln(mean|g_{t-2}| / G_0)
grad_pos_sum                 ln(Σ max(g, 0) / (N·G_0))
grad_neg_sum                 ln(Σ max(−g, 0) / (N·G_0))
log_lr                       log10(lr) of the first param group
log_one_minus_reinforcement  log10(1 − Γ), Γ R-SGD's reinforcement probability (0 without one)
===========================  ==================================================================

Every feature is clipped to ``[-clip, clip]``, and a logarithm of a ratio that is not a positive
finite number (a loss of inf or NaN while training diverges) maps to a clip bound, so
observations are finite for any loss sequence.

Actions: ``lr`` mode is Discrete(3) multiplying the learning rate by ``(0.9, 1, 1/0.9)`` (§4.1);
``rsgd`` mode is Discrete(3) multiplying ``1 − Γ`` by the same factors (so 0 makes reinforcement
*stronger*); ``lr+rsgd`` is Discrete(9), action ``3·i + j`` applying lr factor ``i`` and
reinforcement factor ``j``.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from rlopt.optim import RSGD
from rlopt.tasks import TaskSize

ControlMode = Literal["lr", "rsgd", "lr+rsgd"]
CONTROL_MODES: tuple[ControlMode, ...] = ("lr", "rsgd", "lr+rsgd")

#: bump when a feature's definition or order changes: exported policies record it
OBSERVATION_VERSION = 2

FEATURE_NAMES: tuple[str, ...] = (
    "step",
    "loss",
    "loss_prev",
    "loss_max",
    "loss_min",
    "loss_delta",
    "loss_fluctuation",
    "loss_decrease_run",
    "loss_smoothed",
    "params_increased",
    "params_decreased",
    "param_change_ratio",
    "grad",
    "grad_prev",
    "grad_prev2",
    "grad_pos_sum",
    "grad_neg_sum",
    "log_lr",
    "log_one_minus_reinforcement",
)

# Smallest positive values used inside logarithms; they only matter for exact zeros.
_TINY = 1e-12
_MIN_ONE_MINUS_REINFORCEMENT = 1e-6
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class ObservationSpec:
    """How observations are computed; saved inside exported policies and checked on load.

    Attributes:
        loss_window: number of recent losses the window features (and reward tiers 2-3) look at;
            Zhu et al. use the latest 20.
        grad_history: gradient magnitudes kept (current and previous); the paper's "previous 3".
        horizon: steps that normalise the ``step`` feature: the training episode length, unless a
            controller is given the run's budget (``Controller(horizon=...)``).
        clip: every feature is clipped to ``[-clip, clip]``.
        loss_smoothing: β of the loss's moving average S_t = β·S_{t−1} + (1−β)·L_t (S_1 = L_1);
            0.9 averages about ten mini-batches.
        version: :data:`OBSERVATION_VERSION` when the spec was made.
        features: feature names in order.
    """

    loss_window: int = 20
    grad_history: int = 3
    horizon: int = TaskSize.episode_steps
    clip: float = 10.0
    loss_smoothing: float = 0.9
    version: int = OBSERVATION_VERSION
    features: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        if self.loss_window < 2:
            raise ValueError(f"loss_window must be >= 2, got {self.loss_window}")
        if self.grad_history != 3:
            raise ValueError("grad_history must be 3: the feature set names grad, grad_prev, grad_prev2")
        if not 0 <= self.loss_smoothing < 1:
            raise ValueError(f"loss_smoothing must be in [0, 1), got {self.loss_smoothing}")
        if self.horizon < 1 or not 0 < self.clip < math.inf:  # also refuses a NaN clip
            raise ValueError(f"horizon must be >= 1 and clip finite and > 0, got {self.horizon}, {self.clip}")

    @property
    def size(self) -> int:
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservationSpec:
        return cls(**{**data, "features": tuple(data["features"])})


@dataclass(frozen=True)
class ActionSpec:
    """What the discrete actions do and the bounds the hyperparameters must stay within.

    Attributes:
        mode: ``"lr"``, ``"rsgd"`` or ``"lr+rsgd"``.
        lr_factors: multipliers of the learning rate (Zhu et al. §4.1: 0.9, 1, 1/0.9).
        reinforcement_factors: multipliers of ``1 − Γ`` (R-SGD's reinforcement probability Γ).
        lr_bounds: allowed learning rates; leaving them is reward tier 1 (§4.1: [0.001, 0.5]).
        reinforcement_bounds: allowed Γ.
        reinforcement_init: Γ the controller starts from when it controls Γ.
        interval: optimizer steps per decision. The policy acts after the first step and then after
            every ``interval``-th (steps 1, 1 + interval, 1 + 2·interval, …); the training
            environment runs ``interval`` optimizer steps per env step and sums their rewards.
    """

    mode: ControlMode = "lr"
    lr_factors: tuple[float, ...] = (0.9, 1.0, 1 / 0.9)
    reinforcement_factors: tuple[float, ...] = (0.9, 1.0, 1 / 0.9)
    lr_bounds: tuple[float, float] = (0.001, 0.5)
    reinforcement_bounds: tuple[float, float] = (0.0, 0.999)
    reinforcement_init: float = 0.5
    interval: int = 1

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1 optimizer step per decision, got {self.interval}")
        if self.mode not in CONTROL_MODES:
            raise ValueError(f"mode must be one of {CONTROL_MODES}, got {self.mode!r}")
        lo, hi = self.lr_bounds
        if not 0 < lo < hi:
            raise ValueError(f"lr_bounds must satisfy 0 < low < high, got {self.lr_bounds}")
        lo, hi = self.reinforcement_bounds
        if not 0 <= lo < hi < 1:
            raise ValueError(f"reinforcement_bounds must satisfy 0 <= low < high < 1, got {self.reinforcement_bounds}")
        if not lo <= self.reinforcement_init <= hi:
            raise ValueError(f"reinforcement_init {self.reinforcement_init} is outside {self.reinforcement_bounds}")

    @property
    def controls_lr(self) -> bool:
        return self.mode in ("lr", "lr+rsgd")

    @property
    def controls_reinforcement(self) -> bool:
        return self.mode in ("rsgd", "lr+rsgd")

    @property
    def n_actions(self) -> int:
        if self.mode == "lr+rsgd":
            return len(self.lr_factors) * len(self.reinforcement_factors)
        return len(self.lr_factors) if self.mode == "lr" else len(self.reinforcement_factors)

    def decode(self, action: int) -> tuple[float, float]:
        """``(lr factor, 1−Γ factor)`` of a discrete action."""
        action = int(action)
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action {action} is outside Discrete({self.n_actions}) of mode {self.mode!r}")
        if self.mode == "lr":
            return self.lr_factors[action], 1.0
        if self.mode == "rsgd":
            return 1.0, self.reinforcement_factors[action]
        i, j = divmod(action, len(self.reinforcement_factors))
        return self.lr_factors[i], self.reinforcement_factors[j]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpec:
        fields = dict(data)
        for key in ("lr_factors", "reinforcement_factors", "lr_bounds", "reinforcement_bounds"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


def ema_update(previous: float | None, value: float, beta: float) -> float:
    """One step of the moving average S_t = β·S_{t−1} + (1−β)·x_t, started at S_1 = x_1 (no bias).

    The environment's rewards, the evaluation's steps-to-threshold and the ``plateau`` baseline all
    judge a loss smoothed this way, with β = :attr:`ObservationSpec.loss_smoothing` by default.
    """
    return value if previous is None else beta * previous + (1.0 - beta) * value


def reinforcement_of(optimizer: torch.optim.Optimizer, group_index: int = 0) -> float:
    """Γ, the reinforcement probability, that the next step of ``optimizer`` uses for a param group.

    :class:`rlopt.optim.RSGD` evaluates its group's ``reinforcement`` (a float or a schedule); any
    other optimizer with a float ``reinforcement`` in its groups returns it; optimizers without Γ
    return 0.
    """
    if isinstance(optimizer, RSGD):
        return optimizer.reinforcement(group_index)
    value = optimizer.param_groups[group_index].get("reinforcement", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def set_lr(group: dict[str, Any], value: float) -> None:
    """Write a param group's learning rate as torch's own schedulers do: into a tensor ``lr`` in place (a
    capturable or compiled optimizer keeps the tensor it was built with), else as a float."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(float(value))
    else:
        group["lr"] = float(value)


def check_optimizer_supports(optimizer: torch.optim.Optimizer, mode: ControlMode) -> None:
    """Raise ``ValueError`` if ``optimizer`` cannot take the actions of ``mode``."""
    for group in optimizer.param_groups:
        if mode in ("lr", "lr+rsgd") and "lr" not in group:
            raise ValueError(f"{type(optimizer).__name__} has no 'lr' in its param groups: cannot control it")
        if mode in ("rsgd", "lr+rsgd") and "reinforcement" not in group:
            raise ValueError(
                f"control mode {mode!r} sets R-SGD's reinforcement probability Γ, which "
                f"{type(optimizer).__name__} does not have; use rlopt.RSGD or an 'lr' policy"
            )


def check_within_bounds(optimizer: torch.optim.Optimizer, actions: ActionSpec) -> None:
    """Raise ``ValueError`` if a hyperparameter the actions control starts outside their bounds.

    A controller only ever multiplies the rate it finds, so a start outside the bounds would run
    there until the first change; refusing it is clearer than silently moving the user's rate.
    """
    if actions.controls_lr:
        lo, hi = actions.lr_bounds
        for i, group in enumerate(optimizer.param_groups):
            lr = float(group["lr"])
            if not lo <= lr <= hi:
                raise ValueError(
                    f"param group {i} starts at lr {lr:g}, outside the controller's bounds [{lo:g}, {hi:g}]; "
                    f"start within them or pass other lr_bounds"
                )


def _memory_order(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-D view in memory order; ``reshape(-1)`` would copy channels-last conv weights.

    The statistics are sums, indifferent to element order; the one order-sensitive quantity, a
    parameter's change across a step, compares a tensor with itself in the same layout.
    """
    if tensor.is_contiguous():
        return tensor.view(-1)
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor.as_strided((tensor.numel(),), (1,), tensor.storage_offset())
    return tensor.reshape(-1)


class _FlatViews:
    """1-D memory-order views of a list of tensors, rebuilt only when one of them moves.

    Optimizers update parameters in place, so their views are built once; gradients freed by
    ``zero_grad()`` (``set_to_none=True``) come back at new addresses and are rebuilt each step.
    A kept view holds its storage, so no new tensor can take that address while it is kept.
    """

    def __init__(self) -> None:
        self._key: list[int] | None = None
        self._views: list[torch.Tensor] = []

    def __call__(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        key = [t.data_ptr() for t in tensors]
        if key != self._key:
            self._views = [_memory_order(t.detach()) for t in tensors]
            shares = all(v.data_ptr() == k for v, k in zip(self._views, key, strict=True))
            self._key = key if shares else None
        return self._views


class _StepStatistics:
    """Gradient and update statistics of one ``optimizer.step()``, taken inside it.

    The optimizer's step hooks call :meth:`before_step` (gradients as the step sees them; θ before
    the update) and :meth:`after_step` (θ after it). The result therefore does not depend on where
    the training loop calls ``zero_grad()`` or on anything that touches the parameters between steps.
    The sums are ``(Σ|g|, Σg, Σsign Δθ, Σ|sign Δθ|, Σ|Δθ|, Σ|θ_t|)`` over every controlled parameter,
    Δθ = θ_t − θ_{t−1} the step's update; parameters without a gradient contribute zeros.

    Memory: two flat buffers the size of all parameters, plus one for Δθ, on their device. Every
    sum goes into one small tensor read back once.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(f"the optimizer's parameters live on several devices ({devices}); "
                             "a controller needs them on one")
        self.params = params
        self._n = sum(p.numel() for p in params)
        self._dtype = functools.reduce(torch.promote_types, (p.dtype for p in params))
        self._device = devices.pop()
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._param_views, self._grad_views = _FlatViews(), _FlatViews()
        self.latest: tuple[float, float, float, float, float, float] | None = None
        self.steps_taken = 0

    def _allocate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # allocated at the first step, on the device the parameters have by then
        if self._buffers is None or self._buffers[0].device != self.params[0].device:
            device = self.params[0].device
            before = torch.zeros(self._n, dtype=self._dtype, device=device)
            self._buffers = (before, torch.zeros_like(before), torch.zeros_like(before), before.new_zeros(6))
        return self._buffers

    @torch.no_grad()
    def before_step(self) -> None:
        before, work, _, sums = self._allocate()
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):
            torch.cat(self._grad_views(grads), out=work)  # type: ignore[arg-type]
        else:  # parameters without gradients contribute zeros
            work.zero_()
            offset = 0
            for p, g in zip(self.params, grads, strict=True):
                if g is not None:
                    work[offset : offset + p.numel()] = _memory_order(g.detach())
                offset += p.numel()
        torch.linalg.vector_norm(work, 1, out=sums[0])
        torch.sum(work, 0, out=sums[1])
        torch.cat(self._param_views(self.params), out=before)

    @torch.no_grad()
    def after_step(self) -> None:
        before, work, delta, sums = self._allocate()
        torch.cat(self._param_views(self.params), out=work)
        torch.sub(work, before, out=delta)
        torch.linalg.vector_norm(work, 1, out=sums[5])
        torch.linalg.vector_norm(delta, 1, out=sums[4])
        torch.linalg.vector_norm(delta, 0, out=sums[3])  # Σ|sign Δθ|: changed entries
        torch.sum(torch.sign(delta, out=work), 0, out=sums[2])
        grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs = sums.tolist()
        self.latest = grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs
        self.steps_taken += 1


@dataclass
class _Reference:
    loss: float | None = None
    grad: float | None = None


@dataclass
class _History:
    losses: deque[float]
    smoothed: deque[float]
    grads: deque[float]
    decrease_run: int = 0
    reference: _Reference = field(default_factory=_Reference)


def _log_ratio(value: float, reference: float, clip: float) -> float:
    """ln(value / reference) for positive finite numbers; the clip bounds where either is not.

    Losses and gradients can be 0, negative (a user's loss), ±inf or NaN while training diverges:
    a ratio that is not a positive finite number maps to ``+clip`` if the value is the larger
    (inf, NaN) and to ``-clip`` if it vanishes against the reference.
    """
    if not math.isfinite(value):
        return -clip if value == -math.inf else clip
    if not math.isfinite(reference):
        return clip if math.isnan(reference) else -clip
    ratio = max(value, _TINY) / max(reference, _TINY)
    return math.log(ratio) if math.isfinite(ratio) else clip


class Controller:
    """Observes an optimizer's training steps and actuates its hyperparameters.

    It registers step hooks on ``optimizer`` (``register_step_pre_hook`` / ``register_step_post_hook``)
    that take the gradient and update statistics inside every ``optimizer.step()``. Call
    :meth:`observe` with each step's loss after the step; call :meth:`act` with a discrete action
    before the next one. Where ``zero_grad()`` is called does not matter.

    Args:
        optimizer: the optimizer whose param groups are read and written.
        observation: feature definition (:class:`ObservationSpec`).
        actions: action definition (:class:`ActionSpec`); checked against the optimizer.
        horizon: steps the ``step`` feature counts to (t / horizon, capped at 1); ``None`` takes
            ``observation.horizon``. A run's budget, when known.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        observation: ObservationSpec | None = None,
        actions: ActionSpec | None = None,
        *,
        horizon: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.observation = observation or ObservationSpec()
        self.actions = actions or ActionSpec()
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon (the run's total steps) must be >= 1, got {horizon}")
        self.horizon = self.observation.horizon if horizon is None else horizon
        check_optimizer_supports(optimizer, self.actions.mode)
        self._params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not self._params:
            raise ValueError("the optimizer has no parameters that require gradients")
        self._n = sum(p.numel() for p in self._params)
        self._statistics = _StepStatistics(self._params)
        # the hooks hold the statistics object, not the controller, so a dropped controller is freed
        statistics = self._statistics
        self._hooks = (
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: statistics.before_step()),
            optimizer.register_step_post_hook(lambda opt, args, kwargs: statistics.after_step()),
        )
        self.reset()

    def remove_hooks(self) -> None:
        """Detach from the optimizer: its steps are no longer measured."""
        for handle in self._hooks:
            handle.remove()

    def __del__(self) -> None:
        hooks = getattr(self, "_hooks", ())
        for handle in hooks:
            handle.remove()

    def reset(self) -> None:
        """Forget the history (a new training run)."""
        self.steps = 0
        self.params_finite = True
        self._observed_step = self._statistics.steps_taken
        self._history = _History(
            losses=deque(maxlen=self.observation.loss_window),
            smoothed=deque(maxlen=self.observation.loss_window),
            grads=deque(maxlen=self.observation.grad_history),
        )
        if self.actions.controls_reinforcement:
            self._set_reinforcement(self.actions.reinforcement_init)

    def state_dict(self) -> dict[str, Any]:
        """The loss and gradient history the features depend on: numbers and lists only.

        No parameters: the update statistics are taken inside each ``optimizer.step()``, so a
        restored controller computes the next observation from the next step alone.
        """
        hist = self._history
        return {
            "steps": self.steps,
            "losses": list(hist.losses),
            "smoothed": list(hist.smoothed),
            "grads": list(hist.grads),
            "decrease_run": hist.decrease_run,
            "reference_loss": hist.reference.loss,
            "reference_grad": hist.reference.grad,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        spec = self.observation
        self.steps = int(state["steps"])
        self._history = _History(
            losses=deque(state["losses"], maxlen=spec.loss_window),
            smoothed=deque(state["smoothed"], maxlen=spec.loss_window),
            grads=deque(state["grads"], maxlen=spec.grad_history),
            decrease_run=int(state["decrease_run"]),
            reference=_Reference(loss=state["reference_loss"], grad=state["reference_grad"]),
        )
        self._observed_step = self._statistics.steps_taken

    @property
    def losses(self) -> Sequence[float]:
        """The latest ``loss_window`` mini-batch losses, oldest first."""
        return self._history.losses

    @property
    def smoothed_losses(self) -> Sequence[float]:
        """The latest ``loss_window`` values of the loss's moving average, oldest first."""
        return self._history.smoothed

    def hyperparameters(self) -> tuple[float, float]:
        """``(lr, Γ)`` of the first param group (Γ = 0 for optimizers without one)."""
        return float(self.optimizer.param_groups[0].get("lr", 0.0)), reinforcement_of(self.optimizer)

    @property
    def stepped(self) -> bool:
        """Whether ``optimizer.step()`` has run since the previous observation (what :meth:`observe` needs)."""
        statistics = self._statistics
        return statistics.latest is not None and statistics.steps_taken != self._observed_step

    def observe(self, loss: float) -> np.ndarray:
        """Record the loss of the step just taken and return the observation (float32).

        Raises ``RuntimeError`` if ``optimizer.step()`` has not run since the previous observation:
        the features describe a step, and without one they would be stale.
        """
        statistics = self._statistics
        latest = statistics.latest
        if latest is None or not self.stepped:
            raise RuntimeError(
                "no optimizer.step() since the last observation: call the scheduler's step(loss) once "
                "after each optimizer.step()"
            )
        self._observed_step = statistics.steps_taken
        grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs = latest
        spec = self.observation
        clip = spec.clip
        hist = self._history
        n = self._n
        loss = float(loss)
        self.params_finite = math.isfinite(param_abs)
        mean_abs_grad = grad_abs / n
        if hist.reference.loss is None:
            hist.reference.loss = max(abs(loss), _TINY) if math.isfinite(loss) else 1.0
            hist.reference.grad = max(mean_abs_grad, _TINY) if math.isfinite(mean_abs_grad) else 1.0
        ref_loss = hist.reference.loss
        ref_grad = hist.reference.grad or 1.0

        prev_loss = hist.losses[-1] if hist.losses else loss
        hist.decrease_run = hist.decrease_run + 1 if loss < prev_loss else 0
        hist.losses.append(loss)
        smoothed = ema_update(hist.smoothed[-1] if hist.smoothed else None, loss, spec.loss_smoothing)
        hist.smoothed.append(smoothed)
        hist.grads.append(mean_abs_grad)
        self.steps += 1

        window = hist.losses
        w_max, w_min = max(window), min(window)
        w_mean = sum(window) / len(window)
        grads = list(hist.grads)
        while len(grads) < spec.grad_history:
            grads.insert(0, grads[0])
        lr, reinforcement = self.hyperparameters()
        pos_sum = 0.5 * (grad_abs + grad_sum)
        neg_sum = 0.5 * (grad_abs - grad_sum)
        with np.errstate(all="ignore"):
            fluctuation = (w_max - w_min) / max(abs(w_mean), _TINY) if math.isfinite(w_mean) else clip

        features = [
            min(self.steps / self.horizon, 1.0),
            _log_ratio(loss, ref_loss, clip),
            _log_ratio(prev_loss, ref_loss, clip),
            _log_ratio(w_max, ref_loss, clip),
            _log_ratio(w_min, ref_loss, clip),
            _log_ratio(loss, window[0], clip),
            fluctuation,
            min(hist.decrease_run / spec.loss_window, 1.0),
            _log_ratio(smoothed, ref_loss, clip),
            0.5 * (sign_abs + sign_sum) / n,
            0.5 * (sign_abs - sign_sum) / n,
            _log_ratio(delta_abs, param_abs, clip * _LN10) / _LN10,
            _log_ratio(grads[-1], ref_grad, clip),
            _log_ratio(grads[-2], ref_grad, clip),
            _log_ratio(grads[-3], ref_grad, clip),
            _log_ratio(pos_sum / n, ref_grad, clip),
            _log_ratio(neg_sum / n, ref_grad, clip),
            math.log10(max(lr, _TINY)),
            math.log10(max(1.0 - reinforcement, _MIN_ONE_MINUS_REINFORCEMENT)),
        ]
        # clipped here rather than with numpy ufuncs: each numpy call costs more than the arithmetic
        return np.array(
            [clip if not v <= clip else (-clip if v < -clip else v) for v in features],  # NaN → clip
            dtype=np.float32,
        )

    def act(self, action: int) -> bool:
        """Apply a discrete action to every param group.

        Returns ``True`` if the new hyperparameters are within the bounds. Values outside are clamped
        to the bounds before they are written, so an optimizer never runs with them; the environment
        turns ``False`` into reward tier 1 and ends the episode, a deployed scheduler just keeps the
        clamped value.
        """
        lr_factor, reinforcement_factor = self.actions.decode(action)
        in_bounds = True
        if self.actions.controls_lr and lr_factor != 1.0:
            lo, hi = self.actions.lr_bounds
            for group in self.optimizer.param_groups:
                new_lr = float(group["lr"]) * lr_factor
                in_bounds &= lo <= new_lr <= hi
                set_lr(group, min(max(new_lr, lo), hi))
        if self.actions.controls_reinforcement and reinforcement_factor != 1.0:
            lo, hi = self.actions.reinforcement_bounds
            new = 1.0 - (1.0 - reinforcement_of(self.optimizer)) * reinforcement_factor
            in_bounds &= lo <= new <= hi
            self._set_reinforcement(min(max(new, lo), hi))
        return in_bounds

    def _set_reinforcement(self, value: float) -> None:
        # RSGD re-reads group["reinforcement"] every step; a float there is a constant Γ that
        # overrides the schedule it was built with (see rlopt.optim.RSGD).
        for group in self.optimizer.param_groups:
            group["reinforcement"] = value
