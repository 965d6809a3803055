"""What a LearnedScheduler costs per step in a plain torch loop (target: ≤ 3 % of a CNN training step).

Times blocks of a bare training step (Zhu et al.'s CNN, batch 32, SGD) alternately with blocks of the
same step followed by ``sched.step(loss)``, and reports medians with a 95 % confidence interval of the
median ratio. A control run times a second, identical bare loop the same way: what the method reads
when there is no overhead at all (the VM's noise floor). The policy is ``--policy PATH`` or, by
default, an untrained Q-network of the default layout (the cost does not depend on the weights).

    python benchmarks/scheduler_overhead.py [--policy runs/default/policy.rlopt] [--threads 1]
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
from rlopt.data import load_mnist
from rlopt.scheduler import build_q_network, save_policy
from rlopt.training import Trainer, build_seeded_model

RESULTS = Path(__file__).resolve().parent / "results" / "scheduler_overhead.json"
BLOCK, BLOCKS, WARMUP = 40, 60, 30
TRAIN_IMAGES, BATCH = 8000, 32


def untrained_policy(path: Path) -> Path:
    obs, actions = ObservationSpec(), ActionSpec()
    torch.manual_seed(0)
    return save_policy(path, build_q_network([obs.size, 64, 64, actions.n_actions]), obs, actions)


def _scheduled_step(trainer: Trainer, sched: LearnedScheduler) -> int:
    return sched.step(trainer.train_step())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None, help="policy file (default: an untrained one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    split = load_mnist(progress=False).training.subset(TRAIN_IMAGES, seed=0)
    x, y = split.float_images(), split.labels
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or untrained_policy(Path(tmp) / "untrained.rlopt")
        runs: dict[str, Callable[[], object]] = {}
        for name in ("bare", "control", "scheduled"):
            model = build_seeded_model("cnn", 0)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            trainer = Trainer(model, opt, x, y, batch_size=BATCH, seed=0)
            if name == "scheduled":
                sched = LearnedScheduler.load(policy, opt)
                runs[name] = functools.partial(_scheduled_step, trainer, sched)
            else:
                runs[name] = trainer.train_step
        timing = functools.partial(paired_medians, block=BLOCK, blocks=BLOCKS, warmup=WARMUP)
        scheduled = timing(runs["bare"], runs["scheduled"])
        control = timing(runs["bare"], runs["control"])
    print(f"training step           : {scheduled.base_s * 1e3:7.3f} ms")
    print(f"training step + sched   : {scheduled.other_s * 1e3:7.3f} ms")
    print(f"scheduler overhead      : {100 * (scheduled.ratio - 1):6.2f} %   (target <= 3 %; 95 % CI "
          f"{100 * (scheduled.ratio_low - 1):.2f} to {100 * (scheduled.ratio_high - 1):.2f} %)")
    print(f"control (bare vs bare)  : {100 * (control.ratio - 1):6.2f} %   (95 % CI "
          f"{100 * (control.ratio_low - 1):.2f} to {100 * (control.ratio_high - 1):.2f} %)")
    result = {"bare_step_s": scheduled.base_s, "scheduled_step_s": scheduled.other_s,
              "overhead": scheduled.ratio - 1,
              "overhead_ci95": [scheduled.ratio_low - 1, scheduled.ratio_high - 1],
              "control_overhead": control.ratio - 1,
              "control_ci95": [control.ratio_low - 1, control.ratio_high - 1],
              "blocks": BLOCKS, "block_steps": BLOCK,
              "threads": args.threads, "policy": str(args.policy or "untrained default layout"),
              "torch": torch.__version__}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
