"""One IMP chain's state between fits (:class:`ChainState`): masks, rewind point, best weights and the next level's
start, over named tensors; :class:`callbacks.pruning.PruningCallback` keeps one per chain (a population: one per
member, over views of its slices)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from .conditions import get_condition
from .masks import full_masks, global_magnitude_masks
from .seeding import pruning_seed

#: Stored IMP masks of a level (a branch of a stored chain), or ``None`` to stop there.
MaskSource = Callable[[int], Mapping[str, Tensor] | None]
#: Fresh weights for the re-initialised conditions, drawn from a generator over the tracked tensors.
FreshDraw = Callable[[torch.Generator, Mapping[str, Tensor]], dict[str, Tensor]]


class ChainState:
    """One IMP chain over named tensors: a solo model's parameters, or one population member's slices of them
    (views: writes land in the batched parameters). Holds the chain's whole state between fits."""

    def __init__(self, condition: str, seed: int) -> None:
        self.condition, self.seed = condition, seed
        self.level = 0
        self.masks: dict[str, Tensor] = {}
        self.rewind_state: dict[str, Tensor] = {}
        self.start_state: dict[str, Tensor] = {}
        self.best_score: float | None = None
        self.best_weights: dict[str, Tensor] = {}
        self.trained_weights: dict[str, Tensor] = {}
        self.prunable: dict[str, Tensor] = {}
        self.tracked: dict[str, Tensor] = {}

    def untouched(self) -> bool:
        return not (self.level or self.masks or self.rewind_state or self.start_state or self.best_weights)

    def bind(self, prunable: dict[str, Tensor], tracked: dict[str, Tensor]) -> None:
        if self.masks and set(self.masks) != set(prunable):
            raise ValueError("the model's prunable layers differ from the ones the stored masks were made for")
        self.prunable, self.tracked = prunable, tracked

    def start(self, rewind_init: bool) -> None:
        if not self.masks:
            self.masks = full_masks(self.prunable)
        if self.start_state:
            write(self.tracked, self.start_state)  # a chain restored from stored state starts from its weights
            self.start_state = {}
        if not self.rewind_state and rewind_init:
            self.rewind_state = snapshot(self.tracked)

    def observe(self, score: float, mode: str) -> None:
        if math.isnan(score):
            return
        better = self.best_score is None or (score > self.best_score if mode == "max" else score < self.best_score)
        if better and all(bool(torch.isfinite(p).all()) for p in self.prunable.values()):
            # weights with NaN/inf values never become the best: pruning from them would be pruning from noise
            self.best_score = score
            self.best_weights = snapshot(self.tracked)

    def forget_best(self) -> None:
        self.best_score, self.best_weights = None, {}

    def generator(self, level: int) -> torch.Generator:
        return torch.Generator().manual_seed(pruning_seed(self.seed, level))

    def prune(self, amount: float, prune_from: str, monitor: str, fresh_draw: FreshDraw,
              mask_source: MaskSource | None) -> None:
        if prune_from == "best" and not self.best_weights:
            rank_zero_warn(
                f"prune_from='best' but {monitor!r} was never logged in validation: pruning from the last weights"
            )
        source = self.best_weights if prune_from == "best" and self.best_weights else snapshot(self.tracked)
        self.trained_weights = source
        level = self.level + 1
        generator = self.generator(level)
        if mask_source is not None:
            stored = mask_source(level)
            if stored is None:
                return
            imp_masks = {name: m.to(torch.bool) for name, m in stored.items()}
        else:
            bad = sum(int((~torch.isfinite(source[n]) & self.masks[n].to(source[n].device)).sum()) for n in self.masks)
            if bad:
                rank_zero_warn(f"{bad} surviving weights to prune from are NaN or infinite (a diverged fit?): "
                               "they rank as the smallest magnitudes and are pruned first")
            imp_masks = global_magnitude_masks(source, self.masks, amount)
        condition = get_condition(self.condition)
        base = fresh_draw(generator, self.tracked) if condition.fresh_init else self.rewind_state
        masks, weights = condition.make(
            imp_masks,
            {n: self.rewind_state[n] for n in self.prunable},
            {n: base[n] for n in self.prunable} if condition.fresh_init else {},
            generator,
        )
        write(self.tracked, {**base, **weights})
        self.start_state = snapshot(self.tracked)  # makes state_dict() enough to start the next level
        self.masks = masks
        self.level = level
        self.forget_best()

    def state_dict(self, amount: float, steps: int) -> dict[str, Any]:
        return {
            "level": self.level,
            "condition": self.condition,
            "seed": self.seed,
            "amount": amount,
            "masks": self.masks,
            "rewind_state": self.rewind_state,
            "start_state": self.start_state,
            "steps": steps,
            "best_score": self.best_score,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> int:
        """Restore the chain; returns the stored optimizer step count."""
        if state_dict["condition"] != self.condition:
            raise ValueError(f"state is for condition {state_dict['condition']!r}, not {self.condition!r}")
        self.level = state_dict["level"]
        self.masks = dict(state_dict["masks"])
        self.rewind_state = dict(state_dict["rewind_state"])
        self.start_state = dict(state_dict["start_state"])
        self.best_score = state_dict["best_score"]
        self.best_weights = dict(state_dict["best_weights"])
        return state_dict["steps"]


def snapshot(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached copies of ``tensors``."""
    return {name: p.detach().clone() for name, p in tensors.items()}


@torch.no_grad()
def write(tensors: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> None:
    """Copy ``values`` into the same-named ``tensors`` in place (views write through to the parameters)."""
    for name, value in values.items():
        tensors[name].copy_(value)
