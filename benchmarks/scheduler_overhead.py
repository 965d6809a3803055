"""What a LearnedScheduler costs per step in a plain torch loop (target: ≤ 3 % of a CNN training step).

Times blocks of a bare training step (Zhu et al.'s CNN, batch 32, SGD) alternately with blocks of the
same step followed by ``sched.step(loss)``, and reports medians with a 95 % confidence interval of the
median ratio, for the two loops users run:

- ``trainer``: :class:`rlopt.training.Trainer`'s loop, ``zero_grad(set_to_none=False)`` before the
  forward pass, so gradient storage never moves;
- ``readme``: the README's loop, ``loss.backward(); opt.step(); opt.zero_grad()`` with the default
  ``set_to_none=True``, which frees the gradients and reallocates them every step.

A control run times a second, identical bare loop the same way: what the method reads when there is
no overhead at all (the VM's noise floor). The policy is ``--policy PATH`` or, by default, an untrained
Q-network of the default layout (the cost does not depend on the weights).

    python benchmarks/scheduler_overhead.py [--policy runs/default/policy.rlopt] [--threads 1] [--blocks 60]

About three minutes with 60 blocks; more blocks narrow the intervals.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import paired_medians  # benchmarks/ is on sys.path when a script here runs

from rlopt import LearnedScheduler
from rlopt.control import ActionSpec, ObservationSpec
from rlopt.data import iterate_batches, load_mnist
from rlopt.scheduler import build_q_network, save_policy
from rlopt.tasks import TaskSize
from rlopt.training import Trainer, build_seeded_model

RESULTS = Path(__file__).resolve().parent / "results" / "scheduler_overhead.json"
BLOCK, BLOCKS, WARMUP = 40, 60, 30
TRAIN_IMAGES, BATCH = TaskSize.train_size, TaskSize.batch_size


def untrained_policy(path: Path) -> Path:
    obs, actions = ObservationSpec(), ActionSpec()
    torch.manual_seed(0)
    return save_policy(path, build_q_network([obs.size, 64, 64, actions.n_actions]), obs, actions,
                       optimizer="sgd", initial_lr=0.1)


def _scheduled_step(trainer: Trainer, sched: LearnedScheduler) -> None:
    sched.step(trainer.train_step())


class ReadmeLoop:
    """The README's loop: ``loss.backward(); opt.step(); opt.zero_grad()`` (gradients freed each step)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, policy: Path | None) -> None:
        self.model = build_seeded_model("cnn", 0)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.batches = iterate_batches(x, y, BATCH, seed=0)
        self.sched = LearnedScheduler(self.opt, policy) if policy is not None else None

    def __call__(self) -> None:
        x, y = next(self.batches)
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        if self.sched is not None:
            self.sched.step(loss.item())
        else:
            loss.item()  # the bare loop reads the loss too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None, help="policy file (default: an untrained one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--blocks", type=int, default=BLOCKS, help=f"timed blocks per side (default {BLOCKS})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    split = load_mnist(progress=False).training.subset(TRAIN_IMAGES, seed=0)
    x, y = split.float_images(), split.labels
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or untrained_policy(Path(tmp) / "untrained.rlopt")
        runs: dict[str, Callable[[], object]] = {}
        for name in ("trainer bare", "trainer control", "trainer scheduled"):
            model = build_seeded_model("cnn", 0)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            trainer = Trainer(model, opt, x, y, batch_size=BATCH, seed=0)
            if name == "trainer scheduled":
                runs[name] = functools.partial(_scheduled_step, trainer, LearnedScheduler(opt, policy))
            else:
                runs[name] = trainer.train_step
        runs["readme bare"], runs["readme scheduled"] = ReadmeLoop(x, y, None), ReadmeLoop(x, y, policy)
        timing = functools.partial(paired_medians, block=BLOCK, blocks=args.blocks, warmup=WARMUP)
        results = {
            "trainer": timing(runs["trainer bare"], runs["trainer scheduled"]),
            "readme": timing(runs["readme bare"], runs["readme scheduled"]),
            "control": timing(runs["trainer bare"], runs["trainer control"]),
        }
    result: dict[str, object] = {}
    for name, label in (("trainer", "Trainer loop (grads kept)"), ("readme", "README loop (zero_grad() frees)"),
                        ("control", "control (bare vs bare)")):
        r = results[name]
        if name != "control":
            print(f"{label:32s}: step {r.base_s * 1e3:6.3f} ms, with scheduler {r.other_s * 1e3:6.3f} ms")
        target = "target <= 3 %; " if name != "control" else ""
        print(f"{'  overhead' if name != 'control' else label:32s}: {100 * (r.ratio - 1):6.2f} %   ({target}95 % CI "
              f"{100 * (r.ratio_low - 1):.2f} to {100 * (r.ratio_high - 1):.2f} %)")
        result[name] = {"bare_step_s": r.base_s, "scheduled_step_s": r.other_s, "overhead": r.ratio - 1,
                        "overhead_ci95": [r.ratio_low - 1, r.ratio_high - 1]}
    result.update({"blocks": args.blocks, "block_steps": BLOCK, "threads": args.threads,
                   "policy": str(args.policy or "untrained default layout"), "torch": torch.__version__})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
