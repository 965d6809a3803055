"""rlopt: optimizer hyperparameters that a network learns to control.

>>> from rlopt import RSGD, LearnedScheduler
>>> opt = RSGD(model.parameters(), lr=0.8)              # Γ(t) = 1 - 1/sqrt(t) by default
>>> sched = LearnedScheduler(opt, "policy.rlopt")   # no gymnasium / stable-baselines3 needed
"""

from rlopt.optim import RSGD, LangevinSGD
from rlopt.scheduler import LearnedScheduler, Policy, PolicyFileError, SafetyConfig, pretrained_names

__version__ = "0.1.0"

__all__ = [
    "RSGD",
    "LangevinSGD",
    "LearnedScheduler",
    "Policy",
    "PolicyFileError",
    "SafetyConfig",
    "__version__",
    "pretrained_names",
]
