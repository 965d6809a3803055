"""rlopt: optimizer hyperparameters that a network learns to control."""

__version__ = "0.1.0"
