"""Shuffled minibatches over a population's frames (PPO's and distillation's epochs), each member's own."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from tensordict import TensorDictBase


def shuffled_minibatches(data: TensorDictBase, minibatches: int, epochs: int,
                         generators: Sequence[torch.Generator] | None = None) -> Iterator[TensorDictBase]:
    """``epochs`` passes over ``data`` ``[members, ...]``, each in ``minibatches`` shuffled minibatches ``[members,
    size]``: every member's own frames, in an order drawn from its own generator when ``generators`` are given
    (one per member), else from the global one."""
    members = data.shape[0]
    flat = data.reshape(members, -1)
    frames = flat.shape[1]
    size = minibatch_size(frames, minibatches)
    rows = torch.arange(members).unsqueeze(-1)
    for _ in range(epochs):
        if generators is None:
            order = torch.stack([torch.randperm(frames) for _ in range(members)])
        else:
            order = torch.stack([torch.randperm(frames, generator=g) for g in generators])
        for idx in order.split(size, dim=1):
            yield flat[rows, idx]


def minibatch_size(frames: int, minibatches: int) -> int:
    """The size of each of :func:`shuffled_minibatches`' minibatches over ``frames`` frames (the last may be smaller)."""
    return max(1, frames // minibatches)


def minibatch_steps(frames: int, minibatches: int, epochs: int) -> int:
    """How many minibatches (optimizer steps) :func:`shuffled_minibatches` yields over ``frames`` frames."""
    return epochs * math.ceil(frames / minibatch_size(frames, minibatches))
