"""Train a DQN agent that controls an optimizer while a CNN learns MNIST; export the learned scheduler.

    python train_agent.py                          # default preset: minutes on 2 CPU cores
    python train_agent.py --preset paper           # Zhu et al. §4.4: 800 episodes, random start
    python train_agent.py --out runs/x --resume    # continue an interrupted run

Writes OUT/policy.rlopt (load it with rlopt.LearnedScheduler), OUT/checkpoints/, OUT/tb/ (TensorBoard)
and OUT/config.json. ``python train_agent.py --help`` lists every setting.
"""

from __future__ import annotations

import sys

from agents import TrainingSetupError, parse_config, train


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    try:
        result = train(cfg)
    except TrainingSetupError as exc:
        print(f"train_agent.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    chosen = (
        f"the best of the held-out evaluations (mean return {result.best_eval_return:.1f})"
        if result.selected == "best"
        else "the final agent"
    )
    print(f"trained {result.num_timesteps} environment steps; exported {chosen} to {result.policy_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
