"""The shipped schedulers in plain torch loops, on models and losses that no agent trained on.

Every policy in ``rlopt/policies`` was trained on convolutional or feed-forward classifiers of MNIST
images with cross-entropy (or R-SGD's quadratic error). This script asks whether ``sgd`` and ``adam``
are still no worse than the constant rate a user would start from when the model, the loss and the
training loop are all new to them:

- ``gru-rows``: a GRU (hidden 64) reading an MNIST digit row by row (28 steps of 28 pixels), the
  gradient norm clipped at 1 every step (as recurrent models are trained);
- ``logreg``: multinomial logistic regression on the 784 pixels (a convex loss), weight decay 5e-4;
- ``autoencoder``: a 784-128-32-128-784 ReLU autoencoder with sigmoid outputs and the mean squared
  reconstruction error (a loss a hundred times smaller than cross-entropy's), gradients accumulated
  over 2 mini-batches of 16 per optimizer step;
- ``teacher``: regression of a random two-layer tanh teacher (20 Gaussian inputs, standardised
  targets) by a 20-64-64-1 ReLU student with the mean squared error.

Methods: SGD at 0.1 and Adam at 1e-3 with constant rates, and the same optimizers from the same rates
driven by ``LearnedScheduler.pretrained("sgd" | "adam", optimizer, total_steps=budget)``, stepped after
every ``optimizer.step()`` with that step's loss. Within a task and seed every method starts from the
same weights and sees the same batches. Seeds are evaluate.py's held-out ones; none of these tasks
is in the task suite, so no agent, oracle or tuning run has seen them.

    python benchmarks/unseen_models.py --seeds 5 --budgets 1000 --out benchmarks/results/unseen_models.json

Prints, per task and budget, each method's mean final training loss and test metric (accuracy % for the
classifiers, mean squared error for the autoencoder and the teacher), then each learned scheduler
against its constant rate: seeds with a lower final training loss, seeds with a better test metric, and
the worst seed's test-metric difference. About 10 minutes for 5 seeds at 1,000 steps on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlopt import LearnedScheduler
from rlopt.bench.config import MAX_EVALUATION_SEEDS, held_out_seeds
from rlopt.data import iterate_batches, load_mnist

TRAIN_IMAGES, TEST_IMAGES, TRAIN_LOSS_IMAGES = 8000, 2000, 2000
METHODS = ("sgd", "learned-sgd", "adam", "learned-adam")


class RowGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(28, 64, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.gru(x.reshape(-1, 28, 28))
        return self.head(hidden[-1])


def autoencoder() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                         nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())


@dataclass(frozen=True)
class Task:
    name: str
    model: Callable[[], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classifier: bool
    batch_size: int = 32
    accumulate: int = 1
    clip_norm: float | None = None
    weight_decay: float = 0.0
    reconstructs: bool = False

    def target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the loss compares the output with: the input itself for an autoencoder, else the labels."""
        return x if self.reconstructs else y


def _reconstruction(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, x.flatten(1))


TASKS = {
    "gru-rows": Task("gru-rows", RowGRU, F.cross_entropy, True, clip_norm=1.0),
    "logreg": Task("logreg", lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), F.cross_entropy, True,
                   weight_decay=5e-4),
    "autoencoder": Task("autoencoder", autoencoder, _reconstruction, False, batch_size=16, accumulate=2,
                        reconstructs=True),
    "teacher": Task("teacher", lambda: nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                                     nn.Linear(64, 1)),
                    lambda output, y: F.mse_loss(output.squeeze(1), y), False),
}


def mnist_data() -> dict[str, torch.Tensor]:
    data = load_mnist(progress=False)
    train = data.training.subset(TRAIN_IMAGES + TRAIN_LOSS_IMAGES, seed=0)
    test = data.test.subset(TEST_IMAGES, seed=0)
    x, y = train.float_images(), train.labels.long()
    return {"x": x[:TRAIN_IMAGES], "y": y[:TRAIN_IMAGES], "loss_x": x[:TRAIN_LOSS_IMAGES],
            "loss_y": y[:TRAIN_LOSS_IMAGES], "test_x": test.float_images(), "test_y": test.labels.long()}


def teacher_data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(20, 32, generator=generator) / math.sqrt(20), torch.randn(32, generator=generator)
    x = torch.randn(TRAIN_IMAGES + TEST_IMAGES, 20, generator=generator)
    y = torch.tanh(x @ w1) @ w2
    y = (y - y.mean()) / y.std()
    return {"x": x[:TRAIN_IMAGES], "y": y[:TRAIN_IMAGES], "loss_x": x[:TRAIN_LOSS_IMAGES],
            "loss_y": y[:TRAIN_LOSS_IMAGES], "test_x": x[TRAIN_IMAGES:], "test_y": y[TRAIN_IMAGES:]}


@torch.no_grad()
def _scores(model: nn.Module, task: Task, data: dict[str, torch.Tensor]) -> tuple[float, float]:
    model.eval()
    loss = float(task.loss(model(data["loss_x"]), task.target(data["loss_x"], data["loss_y"])))
    output = model(data["test_x"])
    if task.classifier:
        metric = float((output.argmax(1) == data["test_y"]).float().mean()) * 100
    else:
        metric = float(task.loss(output, task.target(data["test_x"], data["test_y"])))
    model.train()
    return loss, metric


def train(task: Task, method: str, seed: int, budget: int, data: dict[str, torch.Tensor]) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = task.model()
    family = method.removeprefix("learned-")
    lr = 0.1 if family == "sgd" else 1e-3
    optimizer_cls = torch.optim.SGD if family == "sgd" else torch.optim.Adam
    optimizer = optimizer_cls(model.parameters(), lr=lr, weight_decay=task.weight_decay)
    scheduler = (LearnedScheduler.pretrained(family, optimizer, total_steps=budget)
                 if method.startswith("learned-") else None)
    batches = iterate_batches(data["x"], data["y"], task.batch_size, seed=seed)
    start, diverged, lrs = time.perf_counter(), False, []
    for _ in range(budget):
        step_loss = 0.0
        for _ in range(task.accumulate):
            x, y = next(batches)
            loss = task.loss(model(x), task.target(x, y)) / task.accumulate
            loss.backward()
            step_loss += loss.item()
        if task.clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), task.clip_norm)
        optimizer.step()
        optimizer.zero_grad()
        lrs.append(optimizer.param_groups[0]["lr"])
        if not math.isfinite(step_loss):
            diverged = True
            break
        if scheduler is not None:
            scheduler.step(step_loss)
    train_loss, metric = _scores(model, task, data)
    if diverged or not (math.isfinite(train_loss) and math.isfinite(metric)):
        train_loss, metric, diverged = math.inf, (0.0 if task.classifier else math.inf), True
    at = [int(q * (len(lrs) - 1)) for q in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)]
    return {"task": task.name, "method": method, "seed": seed, "budget": budget, "train_loss": train_loss,
            "test_metric": metric, "diverged": diverged, "wall_s": time.perf_counter() - start,
            "lr_at": [lrs[i] for i in at], "backoffs": 0 if scheduler is None else scheduler.backoffs}


def report(records: list[dict[str, Any]], tasks: list[str], budgets: list[int]) -> None:
    for name in tasks:
        higher_is_better = TASKS[name].classifier
        metric = "test accuracy %" if higher_is_better else "test MSE"
        for budget in budgets:
            rows = {m: {r["seed"]: r for r in records if (r["task"], r["method"], r["budget"]) == (name, m, budget)}
                    for m in METHODS}
            cells = ", ".join(f"{m} {np.mean([r['train_loss'] for r in rows[m].values()]):.4f} / "
                              f"{np.mean([r['test_metric'] for r in rows[m].values()]):.4g}" for m in METHODS)
            print(f"{name} {budget} steps (train loss / {metric}): {cells}")
            for family in ("sgd", "adam"):
                learned, constant = rows[f"learned-{family}"], rows[family]
                seeds = sorted(learned)
                loss_wins = sum(learned[s]["train_loss"] < constant[s]["train_loss"] for s in seeds)
                sign = 1 if higher_is_better else -1
                diffs = [sign * (learned[s]["test_metric"] - constant[s]["test_metric"]) for s in seeds]
                metric_wins = sum(d > 0 for d in diffs)
                worst = min(diffs) * sign
                backoffs = sum(learned[s]["backoffs"] for s in seeds)
                print(f"  learned-{family} vs {family}: {loss_wins}/{len(seeds)} lower train loss, {metric_wins}/"
                      f"{len(seeds)} better test metric, worst seed {worst:+.4g}, back-offs {backoffs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "unseen_models.json")
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= MAX_EVALUATION_SEEDS or min(args.budgets) < 1:
        parser.error(f"--seeds must lie in 1..{MAX_EVALUATION_SEEDS} and every budget be positive")
    torch.set_num_threads(args.threads)
    mnist = mnist_data() if set(args.tasks) - {"teacher"} else None
    records = []
    for name in args.tasks:
        data = teacher_data() if name == "teacher" else mnist
        assert data is not None
        for budget in args.budgets:
            for seed in held_out_seeds(args.seeds):
                for method in METHODS:
                    records.append(train(TASKS[name], method, seed, budget, data))
                    print(json.dumps(records[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": vars(args) | {"out": str(args.out)}, "records": records}, indent=1))
    report(records, args.tasks, args.budgets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
