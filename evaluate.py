"""Compare learned schedulers with Adam, SGD, momentum and R-SGD on held-out seeds.

    python evaluate.py --policy runs/default/policy.rlopt           # 1 policy + 7 baselines × 10 seeds
    python evaluate.py --seeds 2 --steps 300 --baselines sgd,adam    # a quick look
    python evaluate.py --policy a.rlopt --policy b.rlopt --flatness  # two policies, flatness radii

Prints a table (mean ± std over seeds and paired wins against each baseline) and writes
OUT/results.json, OUT/results.csv, OUT/curves.npz, OUT/loss_curves.png, OUT/traces.png and
OUT/steps_to_threshold.png. ``python evaluate.py --help`` lists every option; the engine is
:mod:`agents.evaluation`, the methods :mod:`agents.baselines`.
"""

from __future__ import annotations

import argparse
import sys

from agents.baselines import BASELINE_NAMES, baseline
from agents.evaluation import (
    EvaluationConfig,
    FlatnessSettings,
    format_table,
    prepare,
    run,
    summarize,
    write_outputs,
)
from rlopt.data import DataError
from rlopt.scheduler import PolicyFileError

DEFAULTS = EvaluationConfig()
FLATNESS = FlatnessSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description=(
            "Train a fresh model with every method (exported learned schedulers and baselines) on held-out "
            "seeds that agent training never draws, and compare them. Within a seed every method starts "
            "from the same initial weights and sees the same batches in the same order (paired "
            "comparison). Per run: the training-loss curve, steps until the smoothed training loss (EMA "
            f"β={DEFAULTS.smoothing:g}) first reaches {DEFAULTS.threshold_loss:g} ('not reached' otherwise), "
            f"the final model's loss on {DEFAULTS.train_loss_size} training images, validation and test "
            "loss/accuracy, wall time, and the learning-rate, Γ and momentum traces."
        ),
        epilog=(
            "Baselines: " + "; ".join(f"{name}: {baseline(name).description}" for name in BASELINE_NAMES)
            + ". A policy runs on the optimizer its metadata names (train_config.optimizer, default sgd). "
            "Outputs in OUT: results.json (config, one row per method and seed, summary per method with "
            "paired wins; not reached is null), results.csv (one row per method and seed; an empty "
            "steps_to_threshold cell means not reached), curves.npz (arrays [method, seed, step]: loss, "
            "smoothed_loss, lr, gamma, momentum), loss_curves.png, traces.png, steps_to_threshold.png. "
            "Exit status 2: an unusable policy file, dataset or setting."
        ),
    )
    parser.add_argument("--policy", action="append", default=[], metavar="PATH",
                        help="an exported learned scheduler (.rlopt); repeat for several")
    parser.add_argument("--baselines", action="append", default=None, metavar="NAMES",
                        help=f"comma-separated baselines, repeatable; 'none' for none "
                             f"(default: all of {','.join(BASELINE_NAMES)})")
    parser.add_argument("--seeds", type=int, default=DEFAULTS.seeds,
                        help="held-out seeds (start point and batch order) per method (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps,
                        help="training steps per run (2000 = 8 epochs of 8000 images; SGD and Adam reach "
                             "the threshold after ~1550-1700 steps on MNIST) (default: %(default)s)")
    parser.add_argument("--model", choices=("cnn", "mlp", "mlp-relu"), default=DEFAULTS.model,
                        help="cnn: Zhu et al.'s 3-layer CNN; mlp: the R-SGD paper's sigmoid 784-100-200-10 "
                             "with quadratic error; mlp-relu: ReLU hidden units, cross-entropy (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="a directory with an IDX dataset (train-images-idx3-ubyte[.gz] …) "
                             "(default: MNIST)")
    parser.add_argument("--train-size", type=int, default=DEFAULTS.train_size,
                        help="training images (the training environment's subset) (default: %(default)s)")
    parser.add_argument("--validation-size", type=int, default=DEFAULTS.validation_size,
                        help="held-out validation images scored at the end of each run (default: %(default)s)")
    parser.add_argument("--device", default=DEFAULTS.device, help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes training runs in parallel, one thread each unless --threads "
                        "(results do not depend on it; default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--flatness", action="store_true",
                        help=f"measure the flatness radius (Zhang et al. Eq. (11)) of each final solution: "
                             f"the distance along a random unit direction until the training loss on "
                             f"{FLATNESS.subset_size} training images changes by {FLATNESS.epsilon:g}, "
                             f"averaged over {FLATNESS.directions} directions (bracketing ×{FLATNESS.growth:g} "
                             f"from {FLATNESS.initial_radius:g} up to {FLATNESS.max_radius:g}, then bisection "
                             f"to {FLATNESS.rel_tolerance:g} relative)")
    parser.add_argument("--out", default="runs/eval", metavar="DIR", help="output directory (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _baseline_names(values: list[str] | None) -> tuple[str, ...]:
    if values is None:
        return BASELINE_NAMES
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return tuple(name for name in names if name != "none")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = EvaluationConfig(
            policies=tuple(args.policy),
            baselines=_baseline_names(args.baselines),
            seeds=args.seeds,
            steps=args.steps,
            model=args.model,
            data_dir=args.data_dir,
            train_size=args.train_size,
            validation_size=args.validation_size,
            device=args.device,
            threads=args.threads,
            workers=args.workers,
            flatness=args.flatness,
        )
        prepared = prepare(config)
    except (PolicyFileError, DataError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())
        print(f"evaluate.py: {message}", file=sys.stderr)
        return 2
    try:
        result = run(prepared, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    summary = summarize(result)
    paths = write_outputs(result, args.out, summary)
    print(format_table(result, summary))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
