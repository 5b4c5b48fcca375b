"""Pure mask maths for iterative magnitude pruning and the ticket conditions (no Lightning, no RL).

Masks and weights are dicts ``{tensor name: tensor}`` with matching shapes; a mask is a bool tensor whose
``True`` entries survive. Every random choice takes an explicit ``torch.Generator``. The ticket conditions
built from these pieces live in :mod:`.conditions`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Masks = dict[str, Tensor]
Weights = dict[str, Tensor]


def full_masks(weights: Mapping[str, Tensor]) -> Masks:
    """All-true masks: the dense network of level 0."""
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


def count(masks: Mapping[str, Tensor]) -> int:
    """Number of surviving weights over all tensors."""
    return int(sum(int(m.sum()) for m in masks.values()))


def density(masks: Mapping[str, Tensor]) -> float:
    """Surviving fraction over all tensors together."""
    total = sum(m.numel() for m in masks.values())
    return count(masks) / total if total else 1.0


def layer_densities(masks: Mapping[str, Tensor]) -> dict[str, float]:
    """Surviving fraction of each tensor."""
    return {name: float(m.float().mean()) for name, m in masks.items()}


def prune_count(remaining: int, amount: float) -> int:
    """How many of ``remaining`` weights one level removes: ``round(amount * remaining)``."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    return round(amount * remaining)


def global_magnitude_masks(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], amount: float) -> Masks:
    """Remove the ``round(amount * surviving)`` surviving weights of smallest |w| across all tensors together.

    Ties are broken by position (tensors in dict order, then flat index), so the result is deterministic.
    Non-finite weights (NaN, +inf, -inf: what a diverged fit leaves) carry no magnitude and rank below every
    finite one, so they are pruned first (among themselves by position); an all-finite input is ranked
    exactly as before. The count removed is unchanged: when more weights are non-finite than the level
    removes, the rest of them survive in the mask (the condition then rewinds their values).
    """
    names = list(masks)
    flat_w = torch.cat([weights[n].detach().reshape(-1).abs().float().cpu() for n in names])
    flat_w = torch.where(torch.isfinite(flat_w), flat_w, -1.0)  # below every |w| >= 0
    flat_m = torch.cat([masks[n].reshape(-1).cpu() for n in names])
    alive = flat_m.nonzero().squeeze(-1)
    k = prune_count(alive.numel(), amount)
    order = torch.sort(flat_w[alive], stable=True).indices
    new_flat = flat_m.clone()
    new_flat[alive[order[:k]]] = False
    return _unflatten(new_flat, masks)


def random_masks(masks: Mapping[str, Tensor], survivors: int, generator: torch.Generator) -> Masks:
    """``survivors`` positions drawn uniformly over all tensors together (layer-wise ratios not kept)."""
    total = sum(m.numel() for m in masks.values())
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=generator)[:survivors]] = True
    return _unflatten(flat, masks)


def shuffle_masks(masks: Mapping[str, Tensor], generator: torch.Generator) -> Masks:
    """Each tensor's mask shuffled element-wise within the tensor: same per-layer density, new positions."""
    out = {}
    for name, m in masks.items():
        flat = m.reshape(-1)
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(m.shape)
    return out


def place_survivors(
    values: Mapping[str, Tensor],
    source: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    generator: torch.Generator | None,
) -> Weights:
    """Per tensor, put the values at ``source``'s surviving positions onto ``target``'s surviving positions.

    With a generator the values are shuffled first (the ``*/permuted`` conditions); without one they keep
    their order. Both masks must have the same count per tensor. Pruned positions are 0.
    """
    out = {}
    for name, v in values.items():
        kept = v.reshape(-1)[source[name].reshape(-1)]
        if generator is not None:
            kept = kept[torch.randperm(kept.numel(), generator=generator)]
        flat = torch.zeros_like(v).reshape(-1)
        slots = target[name].reshape(-1)
        if int(slots.sum()) != kept.numel():
            raise ValueError(f"{name}: source keeps {kept.numel()} values but target has {int(slots.sum())} slots")
        flat[slots] = kept
        out[name] = flat.reshape(v.shape)
    return out


def _unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> Masks:
    out, start = {}, 0
    for name, m in like.items():
        out[name] = flat[start : start + m.numel()].reshape(m.shape).to(m.device)
        start += m.numel()
    return out

