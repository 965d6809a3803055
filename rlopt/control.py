"""The controller core: what a hyperparameter controller observes and how its actions actuate.

Both the Gymnasium environment (:mod:`envs`) and the exported :class:`rlopt.LearnedScheduler` drive
an optimizer through :class:`Controller`, so a policy sees at deployment exactly the features it was
trained on and its actions mean the same thing. Nothing here imports gymnasium.

Observation (Zhu, Hayashi & Ohsawa §4.2), one float32 row per feature, all scale-free:
``L_0`` is the first loss the controller saw, ``G_0`` the first mean absolute gradient, ``W`` the
last ``loss_window`` losses (fewer at the start), ``N`` the number of controlled scalars.

=====================  ========================================================================
feature                definition
=====================  ========================================================================
step                   min(t / horizon, 1): beyond the training horizon a policy acts as at its end
loss                   ln(L_t / L_0)
loss_prev              ln(L_{t-1} / L_0)
loss_max               ln(max W / L_0)
loss_min               ln(min W / L_0)
loss_delta             ln(L_t / W_first): change of the loss across the window
loss_fluctuation       (max W − min W) / mean W — the quantity reward tier 2 judges
loss_decrease_run      consecutive decreases of the loss ending at t, / loss_window, capped at 1
loss_smoothed          ln(S_t / L_0), S the exponential moving average of the loss (what rewards judge)
params_increased       fraction of parameters that grew in the last update
params_decreased       fraction of parameters that shrank in the last update
param_change_ratio     log10(mean|Δθ| / mean|θ|)
grad                   ln(mean|g_t| / G_0)
grad_prev              ln(mean|g_{t-1}| / G_0)
grad_prev2             ln(mean|g_{t-2}| / G_0)
grad_pos_sum           ln(Σ max(g, 0) / (N·G_0))
grad_neg_sum           ln(Σ max(−g, 0) / (N·G_0))
log_lr                 log10(lr) of the first param group
log_one_minus_reinf    log10(1 − Γ): R-SGD reinforcement probability (0 when the optimizer has none)
=====================  ========================================================================

Every feature is passed through ``nan_to_num`` and clipped to ``[-clip, clip]``, so observations are
finite even when training diverges.

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

ControlMode = Literal["lr", "rsgd", "lr+rsgd"]
CONTROL_MODES: tuple[ControlMode, ...] = ("lr", "rsgd", "lr+rsgd")

#: bump when a feature's definition or order changes: exported policies record it
OBSERVATION_VERSION = 1

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
    "log_one_minus_reinf",
)

# Smallest positive values used inside logarithms; they only matter for exact zeros.
_TINY = 1e-12
_MIN_ONE_MINUS_REINFORCE = 1e-6


@dataclass(frozen=True)
class ObservationSpec:
    """How observations are computed; saved inside exported policies and checked on load.

    Attributes:
        loss_window: number of recent losses the window features (and reward tiers 2-3) look at;
            Zhu et al. use the latest 20.
        grad_history: gradient magnitudes kept (current and previous); the paper's "previous 3".
        horizon: steps that normalise the ``step`` feature — the training episode length.
        clip: every feature is clipped to ``[-clip, clip]``.
        loss_smoothing: β of the loss's moving average S_t = β·S_{t−1} + (1−β)·L_t (S_1 = L_1);
            0.9 averages about ten mini-batches.
        version: :data:`OBSERVATION_VERSION` when the spec was made.
        features: feature names in order.
    """

    loss_window: int = 20
    grad_history: int = 3
    horizon: int = 250
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
        if self.horizon < 1 or self.clip <= 0:
            raise ValueError(f"horizon must be >= 1 and clip > 0, got {self.horizon}, {self.clip}")

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
        reinforce_factors: multipliers of ``1 − Γ`` (R-SGD's reinforcement probability Γ).
        lr_bounds: allowed learning rates; leaving them is reward tier 1 (§4.1: [0.001, 0.5]).
        reinforce_bounds: allowed Γ.
        reinforce_init: Γ the controller starts from when it controls Γ.
    """

    mode: ControlMode = "lr"
    lr_factors: tuple[float, ...] = (0.9, 1.0, 1 / 0.9)
    reinforce_factors: tuple[float, ...] = (0.9, 1.0, 1 / 0.9)
    lr_bounds: tuple[float, float] = (0.001, 0.5)
    reinforce_bounds: tuple[float, float] = (0.0, 0.999)
    reinforce_init: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in CONTROL_MODES:
            raise ValueError(f"mode must be one of {CONTROL_MODES}, got {self.mode!r}")
        lo, hi = self.lr_bounds
        if not 0 < lo < hi:
            raise ValueError(f"lr_bounds must satisfy 0 < low < high, got {self.lr_bounds}")
        lo, hi = self.reinforce_bounds
        if not 0 <= lo < hi < 1:
            raise ValueError(f"reinforce_bounds must satisfy 0 <= low < high < 1, got {self.reinforce_bounds}")
        if not lo <= self.reinforce_init <= hi:
            raise ValueError(f"reinforce_init {self.reinforce_init} is outside {self.reinforce_bounds}")

    @property
    def controls_lr(self) -> bool:
        return self.mode in ("lr", "lr+rsgd")

    @property
    def controls_reinforcement(self) -> bool:
        return self.mode in ("rsgd", "lr+rsgd")

    @property
    def n_actions(self) -> int:
        if self.mode == "lr+rsgd":
            return len(self.lr_factors) * len(self.reinforce_factors)
        return len(self.lr_factors) if self.mode == "lr" else len(self.reinforce_factors)

    def decode(self, action: int) -> tuple[float, float]:
        """``(lr factor, 1−Γ factor)`` of a discrete action."""
        action = int(action)
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action {action} is outside Discrete({self.n_actions}) of mode {self.mode!r}")
        if self.mode == "lr":
            return self.lr_factors[action], 1.0
        if self.mode == "rsgd":
            return 1.0, self.reinforce_factors[action]
        i, j = divmod(action, len(self.reinforce_factors))
        return self.lr_factors[i], self.reinforce_factors[j]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpec:
        fields = dict(data)
        for key in ("lr_factors", "reinforce_factors", "lr_bounds", "reinforce_bounds"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


def ema_update(previous: float | None, value: float, beta: float) -> float:
    """One step of the moving average S_t = β·S_{t−1} + (1−β)·x_t, started at S_1 = x_1 (no bias).

    The environment's rewards and ``evaluate.py``'s steps-to-threshold both judge a loss smoothed this way.
    """
    return value if previous is None else beta * previous + (1.0 - beta) * value


def reinforcement_of(group: dict[str, Any]) -> float:
    """Current R-SGD reinforcement probability Γ of a param group; 0 for optimizers without one."""
    return float(group.get("reinforce_prob", 0.0))


def check_optimizer_supports(optimizer: torch.optim.Optimizer, mode: ControlMode) -> None:
    """Raise ``ValueError`` if ``optimizer`` cannot take the actions of ``mode``."""
    for group in optimizer.param_groups:
        if mode in ("lr", "lr+rsgd") and "lr" not in group:
            raise ValueError(f"{type(optimizer).__name__} has no 'lr' in its param groups: cannot control it")
        if mode in ("rsgd", "lr+rsgd") and "reinforcement" not in group:
            raise ValueError(
                f"control mode {mode!r} sets R-SGD's reinforcement probability, which "
                f"{type(optimizer).__name__} does not have; use rlopt.RSGD or an 'lr' policy"
            )


def _memory_order(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-D view in memory order; ``reshape(-1)`` would copy channels-last conv weights.

    The statistics are sums, indifferent to element order; the one order-sensitive quantity, a
    parameter's change between two steps, compares a tensor with itself in the same layout.
    """
    if tensor.is_contiguous():
        return tensor.view(-1)
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor.as_strided((tensor.numel(),), (1,), tensor.storage_offset())
    return tensor.reshape(-1)


@functools.cache
def fused_kernels() -> Any:
    """:mod:`rlopt._fused` (compiled numba kernels), or ``None`` where numba is missing or disabled."""
    try:
        import numba
    except ImportError:
        return None
    if getattr(numba.config, "DISABLE_JIT", False):  # the kernels would run as Python loops, far slower than torch
        return None
    from rlopt import _fused

    return _fused


def require_fused_kernels() -> Any:
    """:func:`fused_kernels`, or an ``ImportError`` that says how to get them (for ``fused=True``)."""
    kernels = fused_kernels()
    if kernels is None:
        raise ImportError("fused=True needs numba (pip install rlopt[fast]) and NUMBA_DISABLE_JIT unset")
    return kernels


def _use_fused(fused: bool | None, tensors: list[torch.Tensor]) -> bool:
    """Whether to run the numba kernels on ``tensors``: ``fused`` None means where they apply."""
    if fused is False:
        return False
    applies = all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)
    applies &= len({t.dtype for t in tensors}) == 1
    if fused:
        require_fused_kernels()
    if fused and not applies:
        raise ValueError("fused=True needs CPU parameters of one dtype, float32 or float64")
    return applies and fused_kernels() is not None


class _FlatViews:
    """1-D memory-order views of a list of tensors, rebuilt only when one of them moves.

    Building the views costs about 2 µs a tensor, as much as the arithmetic on them, so they are
    kept while every tensor's storage stays where it was (optimizers update parameters in place;
    gradients stay put under ``zero_grad(set_to_none=False)``). A kept view holds its storage, so
    no new tensor can take that address while the view is in use. A tensor that can only be
    flattened by a copy is never kept.
    """

    def __init__(self) -> None:
        self._key: list[int] | None = None
        self._views: list[torch.Tensor] = []
        self._addresses: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._addresses_of: list[torch.Tensor] | None = None

    def __call__(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        key = [t.data_ptr() for t in tensors]
        if key != self._key:
            self._views = [_memory_order(t.detach()) for t in tensors]
            shares = all(v.data_ptr() == k for v, k in zip(self._views, key, strict=True))
            self._key = key if shares else None
        return self._views

    def addresses(self, tensors: list[torch.Tensor], dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
        """Start addresses and element counts of the views (int64), for the fused kernel.

        The views, and so the memory the addresses point to, live until the next rebuild. Raises
        ``TypeError`` if a tensor is not of ``dtype`` (checked only when the views are rebuilt).
        """
        views = self(tensors)
        if views is not self._addresses_of:
            if any(v.dtype != dtype or v.device.type != "cpu" for v in views):
                raise TypeError(f"the fused kernel reads CPU {dtype} tensors only")
            self._addresses, self._addresses_of = _addresses_and_sizes(views), views
        return self._addresses


def _addresses_and_sizes(tensors: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Start addresses and element counts (int64 arrays) of dense tensors: the fused kernel's input."""
    return (np.array([t.data_ptr() for t in tensors], dtype=np.int64),
            np.array([t.numel() for t in tensors], dtype=np.int64))


class _ParameterStatistics:
    """Σ|g|, Σg, Σsign(Δθ), #changed, Σ|Δθ|, Σ|θ| of all parameters.

    Two implementations compute the same sums (in different orders, so equal up to rounding):

    - fused (CPU float32/float64 parameters, numba installed): one compiled pass over gradients and
      parameters (:func:`rlopt._fused.parameter_statistics`) that also writes θ_t over θ_{t−1} in
      ``previous``; 1 float of memory per parameter.
    - torch (any device): ``previous`` holds θ_{t−1}; the step's parameters are written into
      ``work`` and the two swap roles afterwards, so θ_t becomes the previous parameters without a
      copy; ``delta`` holds Δθ; 3 floats per parameter. Every sum goes into one small tensor that
      crosses to the host once.

    Taken right after a training step, the torch version's fifteen calls cost far more than their
    arithmetic, since the step leaves the caches cold: about 0.18 ms on the 7 ms CNN step, against
    0.05 ms for the fused pass (``benchmarks/scheduler_overhead.py`` times both).

    Args:
        params: the tensors (all on one device).
        fused: ``None`` uses the fused pass where it applies; ``False`` always torch; ``True``
            requires the fused pass.
    """

    def __init__(self, params: list[torch.Tensor], fused: bool | None = None) -> None:
        self.params = params
        n = sum(p.numel() for p in params)
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in params))
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(f"the optimizer's parameters live on several devices ({devices}); "
                             "a controller needs them on one")
        device = devices.pop()
        self.fused = _use_fused(fused, params)
        self.previous = torch.zeros(n, dtype=dtype, device=device)
        if self.fused:
            self._previous_array = self.previous.numpy()
            self._sums_array = np.zeros(6)
        else:
            self.work, self.delta = torch.zeros_like(self.previous), torch.zeros_like(self.previous)
            self.sums = self.work.new_zeros(6)
        self._param_views, self._grad_views = _FlatViews(), _FlatViews()
        self.has_previous = False

    @property
    def previous_params(self) -> torch.Tensor | None:
        """θ of the latest step (the reference of the next Δθ); ``None`` before the first."""
        return self.previous if self.has_previous else None

    def set_previous_params(self, flat: torch.Tensor | None) -> None:
        self.has_previous = flat is not None
        if flat is not None:
            self.previous.copy_(flat)

    def compute(self) -> tuple[float, float, float, float, float, float]:
        """``(Σ|g|, Σg, Σsign Δθ, Σ|sign Δθ|, Σ|Δθ|, Σ|θ_t|)``; θ_t becomes the previous parameters."""
        return self._compute_fused() if self.fused else self._compute_torch()

    def _compute_fused(self) -> tuple[float, float, float, float, float, float]:
        dtype = self.previous.dtype
        grads = [p.grad for p in self.params]
        keep: list[torch.Tensor] = []  # converted gradients must outlive the kernel call
        try:
            grad_addresses, grad_sizes = self._grad_views.addresses(grads, dtype)  # type: ignore[arg-type]
        except (AttributeError, TypeError):  # a parameter without gradient (it adds nothing), another dtype
            keep = [_memory_order(g.detach()).to("cpu", dtype) for g in grads if g is not None]
            grad_addresses, grad_sizes = _addresses_and_sizes(keep)
        param_addresses, param_sizes = self._param_views.addresses(self.params, dtype)
        sums = self._sums_array
        fused_kernels().parameter_statistics(grad_addresses, grad_sizes, param_addresses, param_sizes,
                                             self._previous_array, self.has_previous, sums)
        self.has_previous = True
        grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs = sums.tolist()
        return grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs

    @torch.inference_mode()  # lighter than no_grad: no version counters or view tracking (~8 %)
    def _compute_torch(self) -> tuple[float, float, float, float, float, float]:
        work, delta, sums = self.work, self.delta, self.sums
        grads = [p.grad for p in self.params if p.grad is not None]
        if len(grads) == len(self.params):
            torch.cat(self._grad_views(grads), out=work)
        else:  # parameters without gradients contribute zeros
            work.zero_()
            if grads:
                work[: sum(g.numel() for g in grads)] = torch.cat([g.reshape(-1) for g in grads])
        torch.sum(work, 0, out=sums[1])
        torch.sum(work.abs_(), 0, out=sums[0])
        torch.cat(self._param_views(self.params), out=work)
        if self.has_previous:
            torch.sub(work, self.previous, out=delta)
        else:
            delta.zero_()
        # θ_t (in work) becomes the previous parameters; the old buffer is scratch from here on
        scratch, self.previous, self.work = self.previous, work, self.previous
        self.has_previous = True
        torch.sum(torch.abs(work, out=scratch), 0, out=sums[5])
        torch.sum(torch.sign(delta, out=scratch), 0, out=sums[2])
        torch.sum(scratch.abs_(), 0, out=sums[3])
        torch.sum(delta.abs_(), 0, out=sums[4])
        grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs = sums.tolist()
        return grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs


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


class Controller:
    """Observes an optimizer's training step and actuates its hyperparameters.

    Call :meth:`observe` after each ``optimizer.step()`` (gradients are still in ``p.grad``) with that
    step's loss; call :meth:`act` with a discrete action before the next step.

    Args:
        optimizer: the optimizer whose param groups are read and written.
        observation: feature definition (:class:`ObservationSpec`).
        actions: action definition (:class:`ActionSpec`); checked against the optimizer.
        fused: compute the parameter statistics with the numba kernel (``rlopt[fast]``): ``None``
            where it applies (CPU float32/float64 parameters, numba installed), ``False`` never,
            ``True`` always (an error where it cannot). Both give the same features up to rounding.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        observation: ObservationSpec | None = None,
        actions: ActionSpec | None = None,
        *,
        fused: bool | None = None,
    ) -> None:
        if fused:
            require_fused_kernels()  # fail at construction, not at the first observation
        self.optimizer = optimizer
        self.fused = fused
        self.observation = observation or ObservationSpec()
        self.actions = actions or ActionSpec()
        check_optimizer_supports(optimizer, self.actions.mode)
        self._params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not self._params:
            raise ValueError("the optimizer has no parameters that require gradients")
        self._n = sum(p.numel() for p in self._params)
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new training run)."""
        self.steps = 0
        self.params_finite = True
        self._history = _History(
            losses=deque(maxlen=self.observation.loss_window),
            smoothed=deque(maxlen=self.observation.loss_window),
            grads=deque(maxlen=self.observation.grad_history),
        )
        self._statistics: _ParameterStatistics | None = None  # allocated at the first observation
        if self.actions.controls_reinforcement:
            self._set_reinforcement(self.actions.reinforce_init)

    def state_dict(self) -> dict[str, Any]:
        """The history the features depend on (weights-only friendly: tensors, lists, numbers)."""
        hist = self._history
        prev = None if self._statistics is None else self._statistics.previous_params
        return {
            "steps": self.steps,
            "losses": list(hist.losses),
            "smoothed": list(hist.smoothed),
            "grads": list(hist.grads),
            "decrease_run": hist.decrease_run,
            "reference_loss": hist.reference.loss,
            "reference_grad": hist.reference.grad,
            "prev_params": None if prev is None else prev.clone(),
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
        prev = state["prev_params"]
        if prev is not None and prev.numel() != self._n:
            raise ValueError(f"state is for {prev.numel()} parameters, this optimizer has {self._n}")
        self._statistics_buffers().set_previous_params(prev)  # copied into the controller's buffer, never aliased

    @property
    def losses(self) -> Sequence[float]:
        """The latest ``loss_window`` mini-batch losses, oldest first."""
        return self._history.losses

    @property
    def smoothed_losses(self) -> Sequence[float]:
        """The latest ``loss_window`` values of the loss's moving average, oldest first."""
        return self._history.smoothed

    def hyperparameters(self) -> tuple[float, float]:
        """``(lr, Γ)`` of the first param group."""
        group = self.optimizer.param_groups[0]
        return float(group.get("lr", 0.0)), reinforcement_of(group)

    def _statistics_buffers(self) -> _ParameterStatistics:
        # allocated on first use, on the device the parameters have by then
        if self._statistics is None:
            self._statistics = _ParameterStatistics(self._params, self.fused)
        return self._statistics

    def observe(self, loss: float) -> np.ndarray:
        """Record the loss of the step just taken and return the observation (float32)."""
        spec = self.observation
        hist = self._history
        grad_abs, grad_sum, sign_sum, sign_abs, delta_abs, param_abs = self._statistics_buffers().compute()
        n = self._n
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
        lr, reinforce = self.hyperparameters()
        pos_sum = 0.5 * (grad_abs + grad_sum)
        neg_sum = 0.5 * (grad_abs - grad_sum)

        def log_ratio(value: float, ref: float) -> float:
            return math.log(max(value, _TINY) / ref) if math.isfinite(value) else spec.clip

        features = [
            min(self.steps / spec.horizon, 1.0),
            log_ratio(loss, ref_loss),
            log_ratio(prev_loss, ref_loss),
            log_ratio(w_max, ref_loss),
            log_ratio(w_min, ref_loss),
            log_ratio(loss, max(window[0], _TINY)),
            (w_max - w_min) / max(abs(w_mean), _TINY),
            min(hist.decrease_run / spec.loss_window, 1.0),
            log_ratio(smoothed, ref_loss),
            0.5 * (sign_abs + sign_sum) / n,
            0.5 * (sign_abs - sign_sum) / n,
            math.log10(max(delta_abs, _TINY) / max(param_abs, _TINY)),
            log_ratio(grads[-1], ref_grad),
            log_ratio(grads[-2], ref_grad),
            log_ratio(grads[-3], ref_grad),
            log_ratio(pos_sum / n, ref_grad),
            log_ratio(neg_sum / n, ref_grad),
            math.log10(max(lr, _TINY)),
            math.log10(max(1.0 - reinforce, _MIN_ONE_MINUS_REINFORCE)),
        ]
        # clipped here rather than with numpy ufuncs: each numpy call costs more than the arithmetic
        clip = spec.clip
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
        lr_factor, reinforce_factor = self.actions.decode(action)
        in_bounds = True
        if self.actions.controls_lr and lr_factor != 1.0:
            lo, hi = self.actions.lr_bounds
            for group in self.optimizer.param_groups:
                new_lr = group["lr"] * lr_factor
                in_bounds &= lo <= new_lr <= hi
                group["lr"] = min(max(new_lr, lo), hi)
        if self.actions.controls_reinforcement and reinforce_factor != 1.0:
            lo, hi = self.actions.reinforce_bounds
            new = 1.0 - (1.0 - reinforcement_of(self.optimizer.param_groups[0])) * reinforce_factor
            in_bounds &= lo <= new <= hi
            self._set_reinforcement(min(max(new, lo), hi))
        return in_bounds

    def _set_reinforcement(self, value: float) -> None:
        # RSGD re-reads group["reinforcement"] every step; a float there is a constant Γ that
        # overrides the schedule it was built with (see rlopt.optim.RSGD).
        for group in self.optimizer.param_groups:
            group["reinforcement"] = value
            group["reinforce_prob"] = value
