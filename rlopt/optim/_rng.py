"""Seeded per-device random generators for optimizers that draw random numbers in ``step``.

Shared by :class:`rlopt.optim.RSGD` (Bernoulli masks) and :class:`rlopt.optim.LangevinSGD`
(Gaussian noise): one private :class:`torch.Generator` per device, created lazily on the device of
the first parameter that needs it, and saved in / restored from the optimizer's ``state_dict``
under the extra top-level key ``"rng"`` (plain ints, strings and CPU uint8 tensors, so
``torch.load(..., weights_only=True)`` accepts it).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch.optim.optimizer import Optimizer, ParamsT

_MASK64 = (1 << 64) - 1
# Odd 64-bit constants (golden ratio, splitmix64) to decorrelate derived seeds from their source.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX = 0xBF58476D1CE4E5B9


def _mix64(x: int) -> int:
    """A splitmix64-style finaliser: a deterministic, well-spread 64-bit function of ``x``."""
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * _MIX) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class SeededOptimizer(Optimizer):
    """An :class:`~torch.optim.Optimizer` with one private, checkpointed generator per device.

    ``seed=None`` derives the seed from :func:`torch.initial_seed`, so ``torch.manual_seed(s)``
    before construction makes a run reproducible without consuming numbers from torch's global
    generator (a model's initialisation and the data order are left untouched). The derived seed is
    mixed so the optimizer's stream differs from the global one. Two optimizers built after the
    same ``torch.manual_seed`` share a stream: pass distinct ``seed`` values to decorrelate them.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any], seed: int | None) -> None:
        if seed is None:
            seed = _mix64(torch.initial_seed())
        if not 0 <= seed <= _MASK64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        self._seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        # Generator states loaded from a checkpoint, applied when the generator is first needed.
        self._pending_states: dict[str, torch.Tensor] = {}
        super().__init__(params, defaults)

    @property
    def seed(self) -> int:
        """The base seed of this optimizer's generators."""
        return self._seed

    def _device_seed(self, device: str) -> int:
        # CPU uses the seed itself; other devices get a distinct, deterministic seed each.
        if device == "cpu":
            return self._seed
        return _mix64(self._seed ^ zlib.crc32(device.encode()))

    def _generator(self, device: torch.device) -> torch.Generator:
        """The generator for ``device``, created on first use from a loaded state or the seed."""
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            pending = self._pending_states.pop(key, None)
            if pending is None:
                gen.manual_seed(self._device_seed(key))
            else:
                gen.set_state(pending)
            self._generators[key] = gen
        return gen

    def _encode_group(self, group: dict[str, Any]) -> dict[str, Any]:
        """Hook: make a saved param group (a copy, without ``params``) weights-only friendly."""
        return group

    def _decode_group(self, saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """Hook: rebuild a saved param group; ``current`` is the group it will replace."""
        return saved

    def _rng_state(self) -> dict[str, Any]:
        states = {key: state.clone() for key, state in self._pending_states.items()}
        states.update({key: gen.get_state() for key, gen in self._generators.items()})
        return {"seed": self._seed, "generators": states}

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        self._seed = int(rng["seed"])
        self._generators = {}
        self._pending_states = {
            key: state.to("cpu", torch.uint8).clone() for key, state in rng["generators"].items()
        }

    def __getstate__(self) -> dict[str, Any]:
        # torch pickles only defaults, state and param_groups; keep the stream across copy/pickle.
        return {**super().__getstate__(), "_rng": self._rng_state()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        rng = state.pop("_rng", None)
        super().__setstate__(state)
        if rng is not None:
            self._restore_rng(rng)

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus ``"rng"``: the base seed and every generator's state."""
        state_dict = super().state_dict()
        return {
            **state_dict,
            "param_groups": [self._encode_group(dict(g)) for g in state_dict["param_groups"]],
            "rng": self._rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load torch's optimizer state and, if present, the generators so the random stream continues.

        Generator states are applied lazily, when a parameter on that device next draws, so a
        checkpoint can be loaded before the model is moved and on a machine without that device.
        """
        state_dict = dict(state_dict)
        rng = state_dict.pop("rng", None)
        if len(state_dict["param_groups"]) == len(self.param_groups):
            state_dict["param_groups"] = [
                self._decode_group(dict(saved), current)
                for saved, current in zip(state_dict["param_groups"], self.param_groups, strict=True)
            ]
        super().load_state_dict(state_dict)
        if rng is not None:
            self._restore_rng(rng)
