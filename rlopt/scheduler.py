"""The exported learned scheduler: a trained Q-network that sets hyperparameters in any torch loop.

A ``.rlopt`` policy file is one ``torch.save`` dictionary that :func:`torch.load` reads with
``weights_only=True`` (tensors, numbers, strings, lists and dicts only — never arbitrary pickle):

==============  ==================================================================================
key             content
==============  ==================================================================================
format          ``"rlopt-policy"``
version         :data:`POLICY_VERSION`; files of another version are refused
observation     :class:`rlopt.control.ObservationSpec` as a dict: feature names and order, window
                lengths, horizon, clip (the normalisation: features are scale-free by construction
                and clipped to ±clip; no running statistics), observation version
actions         :class:`rlopt.control.ActionSpec` as a dict: mode, factors, bounds, starting Γ
network         ``{"sizes": [18, 64, 64, 3], "activation": "relu"}``: the Q-network's layout
weights         the Q-network's tensors, ``nn.Sequential`` names (``"0.weight"``, ...)
metadata        free-form: training configuration, rlopt version, results
==============  ==================================================================================

Nothing here imports gymnasium or stable-baselines3.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlopt.control import OBSERVATION_VERSION, ActionSpec, Controller, ObservationSpec, fused_kernels

POLICY_FORMAT = "rlopt-policy"
POLICY_VERSION = 1
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class PolicyFileError(ValueError):
    """A policy file that cannot be used; the message names the file and the reason."""


def build_q_network(sizes: list[int], activation: str = "relu") -> nn.Sequential:
    """``Linear → act → … → Linear``, the layout of stable-baselines3's DQN ``q_net``."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def save_policy(
    path: str | os.PathLike[str],
    q_network: nn.Sequential,
    observation: ObservationSpec,
    actions: ActionSpec,
    *,
    activation: str = "relu",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a ``.rlopt`` policy file (atomically: a crash never leaves a half-written file)."""
    linears = [m for m in q_network if isinstance(m, nn.Linear)]
    sizes = [linears[0].in_features, *(m.out_features for m in linears)]
    if sizes[0] != observation.size or sizes[-1] != actions.n_actions:
        raise ValueError(
            f"network maps {sizes[0]} → {sizes[-1]} but the specs need {observation.size} → {actions.n_actions}"
        )
    payload = {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        "observation": observation.to_dict(),
        "actions": actions.to_dict(),
        "network": {"sizes": sizes, "activation": activation},
        "weights": {k: v.detach().cpu().clone() for k, v in q_network.state_dict().items()},
        "metadata": metadata or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_policy(
    path: str | os.PathLike[str],
) -> tuple[nn.Sequential, ObservationSpec, ActionSpec, dict[str, Any]]:
    """Read and validate a policy file: ``(q_network, observation spec, action spec, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(f"{path}: no such policy file (train_agent.py writes DIR/policy.rlopt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise PolicyFileError(f"{path}: not a readable rlopt policy file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"{path}: not an rlopt policy file (no format tag {POLICY_FORMAT!r})")
    if payload.get("version") != POLICY_VERSION:
        raise PolicyFileError(
            f"{path}: policy file version {payload.get('version')!r}, this rlopt reads version "
            f"{POLICY_VERSION}; re-export it with this rlopt's train_agent.py"
        )
    try:
        observation = ObservationSpec.from_dict(payload["observation"])
        actions = ActionSpec.from_dict(payload["actions"])
        network = payload["network"]
        q_network = build_q_network(list(network["sizes"]), network["activation"])
        q_network.load_state_dict(payload["weights"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyFileError(f"{path}: malformed policy file ({exc})") from exc
    current = ObservationSpec()
    if observation.version != OBSERVATION_VERSION or observation.features != current.features:
        raise PolicyFileError(
            f"{path}: the policy observes features {list(observation.features)} (observation version "
            f"{observation.version}) but this rlopt computes {list(current.features)} (version "
            f"{OBSERVATION_VERSION}); retrain or use the rlopt version it was trained with"
        )
    if q_network[0].in_features != observation.size or q_network[-1].out_features != actions.n_actions:
        raise PolicyFileError(f"{path}: network shape does not match its observation/action specs")
    q_network.eval()
    return q_network, observation, actions, dict(payload.get("metadata", {}))


# addmm and relu in one call: the same kernels F.relu(F.linear(x, w, b)) runs, so identical values
_addmm_relu: Callable[..., torch.Tensor] | None = getattr(torch, "_addmm_activation", None)


def _layer_calls(q_network: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The network's layers as functions of a ``(1, n)`` input, each ``Linear → ReLU`` pair fused.

    ``F.linear`` on a 2-D input with a bias is ``torch.addmm(bias, x, weight.t())``, so calling
    ``addmm`` directly computes bit-identical Q-values; fusing the ReLU saves a call per hidden
    layer (each torch call costs 15-20 µs right after a training step).
    """
    modules = [m for m in q_network.modules() if not list(m.children())]
    calls: list[Callable[[torch.Tensor], torch.Tensor]] = []
    i = 0
    while i < len(modules):
        module = modules[i]
        fuse = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU) and _addmm_relu is not None
        if isinstance(module, nn.Linear) and module.bias is not None:
            kernel: Callable[..., torch.Tensor] = _addmm_relu if fuse and _addmm_relu else torch.addmm
            calls.append(functools.partial(_linear, kernel, module.bias.detach(), module.weight.detach().t()))
            i += 2 if fuse else 1
            continue
        if isinstance(module, nn.ReLU):
            calls.append(F.relu)
        elif isinstance(module, nn.Tanh):
            calls.append(torch.tanh)
        else:
            calls.append(module)  # anything else keeps its own forward
        i += 1
    return calls


class _FusedGreedy:
    """The greedy action computed by :func:`rlopt._fused.greedy_action` (float64 with an error bound).

    It answers only when float32 evaluation provably ranks the same action first; on a near tie it
    returns ``None`` and the caller runs the torch layers. Applies to ``Linear → act → … → Linear``
    stacks with float32 weights and biases and one activation, ReLU or Tanh.
    """

    def __init__(self, q_network: nn.Module) -> None:
        modules = [m for m in q_network.modules() if not list(m.children())]
        linears = [m for m in modules[::2] if isinstance(m, nn.Linear)]
        activations = {type(m) for m in modules[1::2]}
        if not (
            len(modules) % 2 == 1
            and len(linears) == len(modules[::2])
            and all(m.bias is not None and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
                    for m in linears)
            and activations <= {nn.ReLU, nn.Tanh} and len(activations) <= 1
        ):
            raise ValueError("the fused Q-network path needs float32 CPU Linear layers with biases, "
                             "separated by one kind of activation (ReLU or Tanh)")
        self.weights = tuple(m.weight.detach().numpy() for m in linears)  # shares the module's memory
        self.biases = tuple(m.bias.detach().numpy() for m in linears if m.bias is not None)
        self.tanh = activations == {nn.Tanh}
        width = max(max(w.shape) for w in self.weights)
        self.values, self.errors = np.zeros((2, width)), np.zeros((2, width))
        self._kernel = fused_kernels().greedy_action

    def __call__(self, observation: np.ndarray) -> int | None:
        # the bound assumes IEEE float32 matmuls: not when torch may use reduced-precision kernels
        if torch.get_float32_matmul_precision() != "highest":
            return None
        action = self._kernel(self.weights, self.biases, self.tanh, observation, self.values, self.errors)
        return None if action < 0 else action


def _linear(kernel: Callable[..., torch.Tensor], bias: torch.Tensor, weight_t: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    return kernel(bias, x, weight_t)


class LearnedScheduler:
    """Set an optimizer's hyperparameters every step with a learned DQN policy (greedy actions).

    Modelled on ``torch.optim.lr_scheduler.ReduceLROnPlateau``: call ``step(loss)`` after
    ``optimizer.step()``. It observes the step just taken (loss, and the gradients and parameters of
    the optimizer, through :class:`rlopt.control.Controller`, the same code the training environment
    runs), takes the action with the highest Q-value and writes the new learning rate and/or R-SGD
    reinforcement probability into ``optimizer.param_groups``. Values are clamped to the policy's bounds.

    A policy that controls R-SGD's Γ owns it from construction on: Γ is set to the value the policy was
    trained from (``actions.reinforce_init``), overriding the optimizer's schedule.

    With numba installed (``pip install rlopt[fast]``) and CPU float32/float64 parameters, the
    statistics and the Q-network run as compiled kernels (:mod:`rlopt._fused`); otherwise as torch
    calls, on any device. The features agree up to float rounding and the actions are the network's
    argmax either way. ``fused=False`` forces torch, ``fused=True`` requires the kernels.

    Memory: one flat buffer the size of all parameters (θ of the previous step), three with the
    torch path; on the parameters' device. Time on Zhu et al.'s CNN, one CPU thread
    (``benchmarks/scheduler_overhead.py``): about 2 % of a training step with the kernels, about
    5 % with torch calls only.

    Example:
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = LearnedScheduler.load("runs/default/policy.rlopt", opt)
        >>> for x, y in batches:
        ...     opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
        ...     sched.step(loss.item())
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        q_network: nn.Module,
        observation: ObservationSpec,
        actions: ActionSpec,
        *,
        metadata: dict[str, Any] | None = None,
        fused: bool | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.q_network = q_network.eval()
        self._layers = _layer_calls(q_network)
        self.controller = Controller(optimizer, observation, actions, fused=fused)
        self._fused_greedy: _FusedGreedy | None = None
        if fused is not False and fused_kernels() is not None:
            try:
                self._fused_greedy = _FusedGreedy(q_network)
            except ValueError:
                if fused:
                    raise
        self.metadata = metadata or {}
        self.last_action: int | None = None
        self._last_lr = [float(g["lr"]) for g in optimizer.param_groups]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        optimizer: torch.optim.Optimizer,
        *,
        lr_bounds: tuple[float, float] | None = None,
        fused: bool | None = None,
    ) -> LearnedScheduler:
        """Load a ``.rlopt`` file for ``optimizer``; ``lr_bounds`` overrides the trained bounds
        (e.g. for Adam, whose useful rates lie below SGD's); ``fused`` as in the class."""
        q_network, observation, actions, metadata = load_policy(path)
        if lr_bounds is not None:
            actions = ActionSpec.from_dict({**actions.to_dict(), "lr_bounds": tuple(lr_bounds)})
        try:
            return cls(optimizer, q_network, observation, actions, metadata=metadata, fused=fused)
        except ValueError as exc:
            raise PolicyFileError(f"{path}: policy mode {actions.mode!r} cannot drive this optimizer: {exc}") from exc

    @property
    def observation(self) -> ObservationSpec:
        return self.controller.observation

    @property
    def actions(self) -> ActionSpec:
        return self.controller.actions

    def decide(self, observation: torch.Tensor | np.ndarray) -> int:
        """Greedy action for one observation (what ``DQN.predict(obs, deterministic=True)`` returns).

        The fused path answers only when float32 evaluation provably ranks the same action first;
        otherwise the torch layers run, whose Q-values are bit-identical to the module's (see
        :func:`_layer_calls`); ties go to the lowest action, as with ``torch.argmax``.
        """
        if isinstance(observation, torch.Tensor):
            observation = observation.detach().cpu().numpy()
        return self._greedy(np.ascontiguousarray(observation, dtype=np.float32).reshape(-1))

    def _greedy(self, observation: np.ndarray) -> int:
        # observation: float32, 1-D, contiguous (what Controller.observe returns)
        action = self._fused_greedy(observation) if self._fused_greedy is not None else None
        return self._decide_torch(torch.from_numpy(observation)) if action is None else action

    @torch.inference_mode()
    def _decide_torch(self, observation: torch.Tensor) -> int:
        x = observation.reshape(1, -1)
        for layer in self._layers:
            x = layer(x)
        q_values: list[float] = x.tolist()[0]  # one host transfer; argmax in Python
        if any(q != q for q in q_values):  # NaN: leave the choice to torch (NaN is its maximum)
            return int(x.argmax(dim=1).item())
        return max(range(len(q_values)), key=q_values.__getitem__)

    def step(self, loss: float | torch.Tensor) -> int:
        """Observe the step just taken, act, and return the action."""
        action = self._greedy(self.controller.observe(float(loss)))
        self.controller.act(action)
        self.last_action = action
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        return action

    def get_last_lr(self) -> list[float]:
        """Learning rate of each param group after the latest ``step``."""
        return list(self._last_lr)

    def get_last_reinforcement(self) -> list[float]:
        """R-SGD Γ of each param group (0 for optimizers without one)."""
        return [float(g.get("reinforce_prob", 0.0)) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The observation history and last action; not the optimizer and not the network weights."""
        return {
            "controller": self.controller.state_dict(),
            "last_action": self.last_action,
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.controller.load_state_dict(state_dict["controller"])
        self.last_action = state_dict["last_action"]
        self._last_lr = list(state_dict["last_lr"])
