"""Optimizers: reinforced SGD (R-SGD) and SGD with annealed Langevin noise."""

from rlopt.optim.langevin import LangevinSGD
from rlopt.optim.rsgd import RSGD

__all__ = ["RSGD", "LangevinSGD"]
