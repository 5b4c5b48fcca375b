"""Every seed lth derives from a study seed, each named once: a level's training, its pruning draws, evaluation.

It lives in ``callbacks/`` because :class:`PruningCallback` draws its masks from one of them and ``callbacks/``
imports nothing from ``lth``; ``lth`` and ``datamodules/`` import the others from here (``lth.callbacks.seeding``).
The factors are primes larger than any number of levels, so different (seed, level) pairs never share a seed.
"""

from __future__ import annotations

#: Offset of the evaluation envs' seeds from the training envs': evaluation never replays training episodes.
EVALUATION_OFFSET = 10_000


def training_seed(seed: int, level: int) -> int:
    """The seed of level ``level``'s training (acting, shuffling) in the chain of study seed ``seed``."""
    return seed * 10_007 + level


def pruning_seed(seed: int, level: int) -> int:
    """The seed of the random draws (masks, permutations, fresh weights) that make level ``level``'s ticket."""
    return seed * 1_000_003 + level


def evaluation_seed(seed: int) -> int:
    """The seed every evaluation of study seed ``seed`` starts from (its first env copy's)."""
    return seed + EVALUATION_OFFSET
