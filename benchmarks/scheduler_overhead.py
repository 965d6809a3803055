"""What a LearnedScheduler costs per step in a plain torch loop (target: ≤ 3 % of a CNN training step).

Times blocks of a bare training step (Zhu et al.'s CNN, batch 32, SGD) alternately with blocks of the
same step followed by ``sched.step(loss)``, and reports medians with a 95 % confidence interval of the
median ratio. It does so for the scheduler as installed (numba kernels where ``rlopt[fast]`` is
installed) and with ``fused=False`` (torch calls only). A control run times a second, identical bare
loop the same way: what the method reads when there is no overhead at all (the VM's noise floor).
The policy is ``--policy PATH`` or, by default, an untrained Q-network of the default layout (the
cost does not depend on the weights).

    python benchmarks/scheduler_overhead.py [--policy runs/default/policy.rlopt] [--threads 1] [--blocks 60]

About two minutes with 60 blocks; more blocks narrow the intervals (the VM's block-to-block noise
is about ±2 %).
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
from rlopt.control import ActionSpec, ObservationSpec, fused_kernels
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
    parser.add_argument("--blocks", type=int, default=BLOCKS, help=f"timed blocks per side (default {BLOCKS})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    split = load_mnist(progress=False).training.subset(TRAIN_IMAGES, seed=0)
    x, y = split.float_images(), split.labels
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or untrained_policy(Path(tmp) / "untrained.rlopt")
        runs: dict[str, Callable[[], object]] = {}
        for name in ("bare", "control", "scheduled", "torch only"):
            model = build_seeded_model("cnn", 0)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            trainer = Trainer(model, opt, x, y, batch_size=BATCH, seed=0)
            if name in ("scheduled", "torch only"):
                sched = LearnedScheduler.load(policy, opt, fused=False if name == "torch only" else None)
                runs[name] = functools.partial(_scheduled_step, trainer, sched)
            else:
                runs[name] = trainer.train_step
        timing = functools.partial(paired_medians, block=BLOCK, blocks=args.blocks, warmup=WARMUP)
        results = {name: timing(runs["bare"], runs[name]) for name in ("scheduled", "torch only", "control")}
    kernels = fused_kernels()
    path = f"numba {kernels.numba.__version__} kernels" if kernels is not None else "torch (numba not installed)"
    scheduled = results["scheduled"]
    print(f"training step           : {scheduled.base_s * 1e3:7.3f} ms")
    print(f"training step + sched   : {scheduled.other_s * 1e3:7.3f} ms   ({path})")
    for name, label in (("scheduled", f"overhead, {path.split(' (')[0]}"), ("torch only", "overhead, fused=False"),
                        ("control", "control (bare vs bare)")):
        r = results[name]
        target = "target <= 3 %; " if name == "scheduled" else ""
        print(f"{label:31s}: {100 * (r.ratio - 1):6.2f} %   ({target}95 % CI "
              f"{100 * (r.ratio_low - 1):.2f} to {100 * (r.ratio_high - 1):.2f} %)")
    result = {"bare_step_s": scheduled.base_s, "scheduled_step_s": scheduled.other_s, "path": path,
              "overhead": scheduled.ratio - 1,
              "overhead_ci95": [scheduled.ratio_low - 1, scheduled.ratio_high - 1],
              "torch_only_overhead": results["torch only"].ratio - 1,
              "torch_only_ci95": [results["torch only"].ratio_low - 1, results["torch only"].ratio_high - 1],
              "control_overhead": results["control"].ratio - 1,
              "control_ci95": [results["control"].ratio_low - 1, results["control"].ratio_high - 1],
              "blocks": args.blocks, "block_steps": BLOCK,
              "threads": args.threads, "policy": str(args.policy or "untrained default layout"),
              "torch": torch.__version__}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
