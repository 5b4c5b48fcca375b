"""Input-layer mask analysis (paper section 4): the surviving first-layer weight of every observation input.

For a Linear input layer, input ``i``'s *mass* is the cumulative absolute surviving weight of column ``i``
(``sum_j |W_ji| * M_ji``), shaped like the observation; an input whose column is fully pruned is *dead*: the
ticket no longer sees it. A convolutional input layer shares its filters across pixels, so only its
per-channel mass is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Physical names of vector observations, where the env documents them.
VECTOR_INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "CartPole-v1": ("cart position", "cart velocity", "pole angle", "pole angular velocity"),
    "Acrobot-v1": ("cos theta1", "sin theta1", "cos theta2", "sin theta2", "theta1 velocity", "theta2 velocity"),
}


def channel_names(env_id: str, channels: int) -> tuple[str, ...]:
    """Names of an image observation's channels (MazeGrid's object maps, MinAtar's game objects)."""
    if env_id.startswith("lth/MazeGrid"):
        from lth.envs.maze_board import CHANNELS

        if channels == len(CHANNELS):
            return CHANNELS
        return ("red", "green", "blue") if channels == 3 else tuple(f"channel {c}" for c in range(channels))
    if env_id.startswith("MinAtar/"):
        import gymnasium as gym

        from lth.envs import check_env_id

        check_env_id(env_id)
        by_index = gym.make(env_id).unwrapped.game.env.channels
        return tuple(sorted(by_index, key=by_index.get))
    return tuple(f"channel {c}" for c in range(channels))


def input_names(env_id: str, obs_shape: Sequence[int]) -> tuple[str, ...]:
    """One name per vector input, or one per channel for image observations."""
    if len(obs_shape) == 3:
        return channel_names(env_id, obs_shape[0])
    default = tuple(f"input {i}" for i in range(obs_shape[0]))
    names = VECTOR_INPUT_NAMES.get(env_id, default)
    return names if len(names) == obs_shape[0] else default


def input_mass(weight: Tensor, mask: Tensor, obs_shape: Sequence[int]) -> Tensor:
    """Cumulative absolute surviving weight per input: ``obs_shape`` for a Linear layer, channels for a Conv."""
    alive = (weight.detach() * mask).abs()
    if alive.dim() == 2:  # Linear [units, flattened inputs]
        return alive.sum(0).reshape(tuple(obs_shape))
    return alive.transpose(0, 1).reshape(alive.shape[1], -1).sum(1)  # Conv [out, channels, kh, kw]


def dead_inputs(mass: Tensor) -> Tensor:
    """True where an input has lost every first-layer weight."""
    return mass == 0


@dataclass
class InputReport:
    """One input layer's view of the observation at one level."""

    layer: str
    mass: Tensor  # per input (shaped like the observation) or per channel (conv)
    names: tuple[str, ...]  # per vector input, or per channel

    @property
    def alive(self) -> int:
        """Inputs (vector entries or pixels x channels) with at least one surviving weight."""
        return int((~dead_inputs(self.mass)).sum())

    def channel_mass(self) -> dict[str, float]:
        """Surviving mass per channel (images) or per named input (vectors)."""
        per = self.mass.reshape(len(self.names), -1).sum(1)
        return {name: float(v) for name, v in zip(self.names, per)}


def input_layers(masks: Mapping[str, Tensor]) -> dict[str, str]:
    """The first masked tensor of each top-level sub-module (``actor``, ``critic``, ``q_net``...): its input layer."""
    first: dict[str, str] = {}
    for name in masks:
        first.setdefault(name.split(".")[0], name)
    return first


def input_report(
    weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], env_id: str, obs_shape: Sequence[int]
) -> dict[str, InputReport]:
    """For each sub-module, the input mass of its first masked layer (``weights`` and ``masks`` by name)."""
    names = input_names(env_id, obs_shape)
    return {
        group: InputReport(layer, input_mass(weights[layer], masks[layer], obs_shape), names)
        for group, layer in input_layers(masks).items()
    }


def alive_inputs(mask: Tensor, obs_shape: Sequence[int]) -> Tensor:
    """True per input (shaped like the observation) whose column in a Linear input layer's ``mask`` keeps a weight."""
    return mask.reshape(mask.shape[0], -1).bool().any(0).reshape(tuple(obs_shape))


def last_alive_level(masks_by_level: Sequence[Mapping[str, Tensor]], layer: str, obs_shape: Sequence[int]) -> Tensor:
    """Per input, the last level at which its column in ``layer`` still had a weight (-1: dead from the start)."""
    last = torch.full(tuple(obs_shape), -1, dtype=torch.long)
    for level, masks in enumerate(masks_by_level):
        last[alive_inputs(masks[layer], obs_shape)] = level
    return last
