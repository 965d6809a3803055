"""Gymnasium environments over rlopt; importing this package registers them.

>>> import gymnasium as gym, envs
>>> env = gym.make("rlopt/LRControl-v0")          # DQN adjusts the learning rate
>>> env = gym.make("rlopt/RSGDControl-v0")        # DQN adjusts R-SGD's reinforcement probability
>>> env = gym.make("rlopt/LRRSGDControl-v0")      # both: Discrete(9)
"""

from gymnasium.envs.registration import register, registry

from envs.hyperparam_env import EnvConfig, HyperparamControlEnv

__all__ = ["ENV_IDS", "EnvConfig", "HyperparamControlEnv", "env_id_for"]

ENV_IDS: dict[str, str] = {
    "lr": "rlopt/LRControl-v0",
    "rsgd": "rlopt/RSGDControl-v0",
    "lr+rsgd": "rlopt/LRRSGDControl-v0",
}
#: Γ control needs R-SGD; lr control runs the task's optimizer
_KWARGS_OF_MODE: dict[str, dict[str, str]] = {
    "lr": {"control": "lr"},
    "rsgd": {"control": "rsgd", "optimizer": "rsgd"},
    "lr+rsgd": {"control": "lr+rsgd", "optimizer": "rsgd"},
}


def env_id_for(control: str) -> str:
    """The registered id of a control mode."""
    try:
        return ENV_IDS[control]
    except KeyError:
        raise ValueError(f"unknown control mode {control!r}; choose one of {sorted(ENV_IDS)}") from None


# no max_episode_steps: the env truncates at its own ``episode_steps``, so the length follows the
# setting (gym.make(..., episode_steps=100)) instead of a TimeLimit fixed at registration
for _mode, _env_id in ENV_IDS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="envs.hyperparam_env:HyperparamControlEnv",
            kwargs=_KWARGS_OF_MODE[_mode],
        )
