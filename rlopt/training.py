"""A small trainer that advances one optimizer step at a time.

The environment drives it step by step (one env step = one :meth:`Trainer.train_step`), and the
evaluation script drives it in a loop; neither needs epochs or callbacks from it. Data order comes
from :func:`rlopt.data.iterate_batches` seeded once, so two trainers built with the same seed, model
initialisation and data see identical batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlopt.data import iterate_batches
from rlopt.models import build_model
from rlopt.optim import RSGD
from rlopt.tasks import OPTIMIZER_NAMES, OptimizerName

__all__ = [
    "OPTIMIZER_NAMES",
    "OPTIMIZER_PRESETS",
    "EvalResult",
    "OptimizerName",
    "OptimizerPreset",
    "Trainer",
    "build_seeded_model",
    "make_optimizer",
    "resolve_device",
    "seed_everything",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: mini-batch size of evaluation passes (memory and speed only, not results)
EVAL_BATCH_SIZE = 250

#: random start points (network initialisation, batch order) of agent training are seeded from
#: [0, TRAIN_SEED_RANGE) …
TRAIN_SEED_RANGE = 2**30
#: … evaluation (evaluate.py) uses HELD_OUT_SEED_BASE + i …
HELD_OUT_SEED_BASE = 2**30
#: … the benchmark's tuned oracle tunes on TUNING_SEED_BASE + i (evaluation stays below it) …
TUNING_SEED_BASE = 2**30 + 2**28
#: … and model selection during training draws from [SELECTION_SEED_BASE, 2**31): the four never meet
SELECTION_SEED_BASE = 2**30 + 2**29
SELECTION_SEED_RANGE = 2**29


def build_seeded_model(name: str, seed: int) -> nn.Module:
    """The model ``name`` initialised from ``seed`` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name)  # type: ignore[arg-type]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed ``random``, NumPy and torch (all devices); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (seeds code that uses the legacy global RNG)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when available; an explicit ``"cuda"`` or ``"mps"`` that this machine
    lacks is a one-line ``RuntimeError``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch.cuda.is_available() is False")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} requested but torch.backends.mps.is_available() is False")
    return resolved


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float


class Trainer:
    """One model, one optimizer, one seeded stream of mini-batches.

    Args:
        model: the network; moved to ``device``.
        optimizer: any ``torch.optim.Optimizer`` over ``model.parameters()``.
        images: float inputs, already on ``device`` is cheapest (else moved once here).
        labels: int64 class labels.
        batch_size: mini-batch size of :meth:`train_step`.
        seed: seeds the batch order only (model initialisation is the caller's).
        loss_fn: ``loss_fn(outputs, labels) -> scalar``; cross-entropy by default.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        seed: int,
        loss_fn: LossFn = nn.functional.cross_entropy,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size <= 0 or batch_size > len(images):
            raise ValueError(f"batch_size must be in [1, {len(images)}], got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.steps_done = 0
        self._batches = iterate_batches(self.images, self.labels, batch_size, seed=seed)

    def train_step(self) -> float:
        """Forward, backward and one ``optimizer.step()`` on the next batch; returns the batch loss.

        The loss is the one computed before the update (at the parameters the gradient was taken at).
        Gradients stay in ``p.grad`` afterwards, so observers can read them.
        """
        if not self.model.training:  # .train() walks every submodule: 0.1 ms a step on the CNN
            self.model.train()
        x, y = next(self._batches)
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> EvalResult:
        """Mean loss and accuracy of the current model on held-out data."""
        self.model.eval()
        total_loss = 0.0
        correct = 0
        for start in range(0, len(images), EVAL_BATCH_SIZE):
            x = images[start : start + EVAL_BATCH_SIZE].to(self.device)
            y = labels[start : start + EVAL_BATCH_SIZE].to(self.device)
            out = self.model(x)
            total_loss += float(self.loss_fn(out, y)) * len(y)
            correct += int((out.argmax(dim=1) == y).sum())
        return EvalResult(loss=total_loss / len(images), accuracy=correct / len(images))


@dataclass(frozen=True)
class OptimizerPreset:
    """Starting learning rate and the bounds a controller must keep it within, per optimizer.

    SGD and R-SGD follow Zhu et al. §4.1 (bounds [0.001, 0.5]; they start SGD at 0.1 in Fig. 2c);
    Adam's scale is about 100× smaller (their Adam baseline runs at 0.001). R-SGD starts at 0.01:
    with its default Γ(t) = 1 − 1/√t its effective step grows like lr·√t, and from 0.1 it diverges
    on the CNN (docs/benchmarks.md, *Baseline settings*). SGD with momentum 0.9 takes SGD's rates
    divided by 1 / (1 − 0.9) = 10, so that its effective step lr / (1 − μ) spans SGD's.
    """

    lr: float
    lr_bounds: tuple[float, float]


#: the heavy-ball momentum of the ``momentum`` optimizer family (the benchmark's ``momentum`` baseline's)
MOMENTUM = 0.9

OPTIMIZER_PRESETS: dict[str, OptimizerPreset] = {
    "sgd": OptimizerPreset(lr=0.1, lr_bounds=(0.001, 0.5)),
    # heavy-ball momentum 0.9: the effective step lr / (1 − 0.9) is 10 lr, so SGD's rates / 10
    "momentum": OptimizerPreset(lr=0.01, lr_bounds=(0.0001, 0.05)),
    "rsgd": OptimizerPreset(lr=0.01, lr_bounds=(0.001, 0.5)),
    "adam": OptimizerPreset(lr=0.001, lr_bounds=(1e-5, 0.05)),
}


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float | None = None, *, seed: int = 0
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``sgd``; ``momentum``: heavy-ball momentum :data:`MOMENTUM`),
    ``torch.optim.Adam`` or :class:`rlopt.optim.RSGD` by name.

    ``lr=None`` takes the preset's starting rate; ``seed`` seeds R-SGD's reinforcement draws.
    """
    if name not in OPTIMIZER_PRESETS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZER_PRESETS)}")
    lr = OPTIMIZER_PRESETS[name].lr if lr is None else lr
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return RSGD(params, lr=lr, seed=seed)
