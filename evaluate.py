"""The benchmark: learned schedulers against tuning-free peers, budget-aware schedules and a tuned
oracle, per task and budget, on held-out seeds (``--help``).

The command line is :mod:`rlopt.bench.cli` (also installed as ``rlopt-evaluate``).
"""

import sys

from rlopt.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
