"""Train a DQN agent that controls an optimizer while a CNN learns MNIST (``rlopt-train`` when installed).

    python train_agent.py --help                   # every setting, with its default
    python train_agent.py --out runs/x --resume    # continue an interrupted run
"""

import sys

from agents.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="train_agent.py"))
