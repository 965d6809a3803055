"""Two shipped schedulers stacked on one R-SGD: ``sgd`` sets the rate, ``rsgd`` sets Γ.

Issue 13 asks for a joint lr+Γ controller at least as good as the better single one. Before training
one, the obvious composition: :class:`rlopt.RSGD` with two :class:`rlopt.LearnedScheduler`\\ s, the
shipped lr policy ``sgd`` (trained on plain SGD) and the shipped Γ policy ``rsgd`` (trained on R-SGD at
lr 0.01), each told the budget, each stepped after every ``optimizer.step()``. The lr scheduler runs
with its default safety net.

Runs go through evaluate.py's own runner (``rlopt.bench.runner.run_one``) on held-out seeds, so each
run is paired by seed with evaluate.py's runs of the single controllers and the baselines (the same
initial weights and batches), e.g. with

    python evaluate.py --policy rlopt/policies/sgd.rlopt,rlopt/policies/rsgd.rlopt --tasks mnist-cnn \\
        --budgets 250,1000,2000 --seeds 10 --baselines rsgd --threads 1

    python benchmarks/stacked_schedulers.py --lr 0.01 --seeds 10 --budgets 250 1000 2000 --out runs/stacked.json

Writes one JSON record per run (final train loss, test accuracy and loss, and the rate and Γ at 0, 10,
25, 50, 75 and 100 % of the budget) and prints the mean test accuracy per budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlopt import RSGD, LearnedScheduler
from rlopt.bench.cli import parse_args as parse_evaluate_args
from rlopt.bench.config import MAX_EVALUATION_SEEDS, held_out_seeds
from rlopt.bench.methods import Method, MethodRun, RunContext
from rlopt.bench.runner import prepare, run_one

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def stacked_method(lr: float) -> Method:
    def build(model: torch.nn.Module, context: RunContext) -> MethodRun:
        optimizer = RSGD(model.parameters(), lr=lr, seed=context.seed)
        rate = LearnedScheduler.pretrained("sgd", optimizer, total_steps=context.budget)
        gamma = LearnedScheduler.pretrained("rsgd", optimizer, total_steps=context.budget)

        def hook(loss: float) -> None:
            rate.step(loss)
            gamma.step(loss)

        return MethodRun(optimizer, hook=hook, scheduler=(rate, gamma))

    return Method(f"stacked@{lr:g}", "policy", f"R-SGD lr {lr:g}, rate from `sgd`, Γ from `rsgd`", build,
                  default_lr=lr, budget_aware=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.01,
                        help="R-SGD's starting rate (default 0.01, the `rsgd` policy's)")
    parser.add_argument("--task", default="mnist-cnn")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the per-run records")
    args = parser.parse_args(argv)
    if args.lr <= 0 or not 1 <= args.seeds <= MAX_EVALUATION_SEEDS or min(args.budgets) < 1:
        parser.error(f"--lr and every budget must be positive, --seeds in 1..{MAX_EVALUATION_SEEDS}")
    torch.set_num_threads(args.threads)
    # evaluate.py's configuration, for its data, its task and its scoring; the baseline is not run
    evaluation = parse_evaluate_args(["--tasks", args.task, "--seeds", str(args.seeds), "--baselines", "sgd",
                                      "--threads", str(args.threads)])
    prepared = prepare(evaluation.config)
    method, task = stacked_method(args.lr), prepared.tasks[0]
    records: list[dict[str, Any]] = []
    for seed in held_out_seeds(args.seeds):
        for budget in args.budgets:
            for run in run_one(method, task, seed, [budget], prepared):
                at = [int(q * (budget - 1)) for q in QUANTILES]
                assert run.curves is not None  # run_one always records them
                records.append({
                    "task": run.task, "budget": run.budget, "seed": run.seed, "lr": args.lr,
                    "final_train_loss": run.final_train_loss, "test_accuracy": run.test_accuracy,
                    "test_loss": run.test_loss, "diverged_at": run.diverged_at,
                    "lr_at": [float(run.curves.lr[i]) for i in at],
                    "reinforcement_at": [float(run.curves.reinforcement[i]) for i in at],
                })
                print(json.dumps(records[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"quantiles": QUANTILES, "records": records}, indent=1))
    for budget in args.budgets:
        accuracy = [r["test_accuracy"] for r in records if r["budget"] == budget]
        print(f"{method.name} {task.name} {budget} steps: test accuracy {100 * np.mean(accuracy):.2f} % "
              f"over {len(accuracy)} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
