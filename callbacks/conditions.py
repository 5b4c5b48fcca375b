"""The ticket conditions (paper Table 1) as one registry: name -> :class:`Condition`.

Every reader takes the conditions from here: :class:`~.pruning.PruningCallback` (validation and the
next level's masks and weights), ``lth imp`` (``--imp.conditions all`` = :func:`condition_names` with
``paper=True``), ``lth report`` (the order of its legends and rows) and the README's condition table
(:func:`markdown_table`, checked by a test). Adding a condition is one :func:`register_condition` call
plus its test::

    register_condition(Condition(
        "mask/negated", lambda imp, rewind, fresh, g: (dict(imp), {n: -rewind[n] * imp[n] for n in imp}),
        weights="minus the init values", mask="IMP", layer_ratio="kept",
    ))

Pure tensor maths, like :mod:`.masks`: no Lightning, no RL. Every random choice comes from the generator
passed in, drawn in a fixed order, so a seed gives the same masks and weights bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .masks import Masks, Weights, count, place_survivors, random_masks, shuffle_masks

#: ``(imp_masks, rewind, fresh, generator) -> (masks, weights)``: the next level's masks and the starting
#: values of the pruned tensors (0 at pruned positions). ``imp_masks`` come from magnitude pruning (or a
#: stored chain), ``rewind`` holds the rewind-point values of the pruned tensors, ``fresh`` a fresh
#: initialisation of them (empty unless the condition sets ``fresh_init``).
MakeFn = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Mapping[str, Tensor], torch.Generator],
                  tuple[Masks, Weights]]


@dataclass(frozen=True)
class Condition:
    """One ticket condition. ``weights``, ``mask`` and ``layer_ratio`` are its row of the README table."""

    name: str
    make: MakeFn
    weights: str
    mask: str
    layer_ratio: str
    fresh_init: bool = False  # needs a fresh initialisation of the model (its biases start fresh too)
    paper: bool = False  # one of the paper's four conditions (``--imp.conditions all``)
    note: str = ""  # shown after the name in the table, e.g. "the ticket"


registered_conditions: dict[str, Condition] = {}


def register_condition(condition: Condition) -> Condition:
    """Add ``condition`` to the registry (names are unique); returns it."""
    if condition.name in registered_conditions:
        raise ValueError(f"condition {condition.name!r} is already registered")
    registered_conditions[condition.name] = condition
    return condition


def unregister_condition(name: str) -> Condition:
    """Remove a registered condition (for tests and plugins); returns it."""
    return registered_conditions.pop(get_condition(name).name)


def get_condition(name: str) -> Condition:
    """The registered condition called ``name``; a ``ValueError`` naming the valid ones otherwise."""
    if name not in registered_conditions:
        raise ValueError(f"unknown condition {name!r}; valid: {list(registered_conditions)}")
    return registered_conditions[name]


def condition_names(paper: bool = False) -> tuple[str, ...]:
    """Registered names in registration order (the paper's Table 1 order first); ``paper=True``: only its four."""
    return tuple(name for name, c in registered_conditions.items() if c.paper or not paper)


def apply_condition(
    name: str,
    imp_masks: Mapping[str, Tensor],
    rewind: Mapping[str, Tensor],
    fresh: Mapping[str, Tensor],
    generator: torch.Generator,
) -> tuple[Masks, Weights]:
    """The next level's masks and starting weights for condition ``name`` (see :data:`MakeFn`)."""
    return get_condition(name).make(imp_masks, rewind, fresh, generator)


def markdown_table() -> str:
    """The README's condition table, one row per registered condition."""
    rows = ["| condition | weights | mask | layer-wise ratio |", "| --- | --- | --- | --- |"]
    for c in registered_conditions.values():
        label = f"`{c.name}`" + (f" ({c.note})" if c.note else "")
        rows.append(f"| {label} | {c.weights} | {c.mask} | {c.layer_ratio} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------- the conditions
def _mask_weights(imp_masks, rewind, fresh, generator):
    masks = dict(imp_masks)
    return masks, {n: rewind[n] * masks[n] for n in masks}


def _mask_permuted(imp_masks, rewind, fresh, generator):
    masks = dict(imp_masks)
    return masks, place_survivors(rewind, masks, masks, generator)


def _permuted_permuted(imp_masks, rewind, fresh, generator):
    masks = shuffle_masks(imp_masks, generator)
    return masks, place_survivors(rewind, imp_masks, masks, generator)


def _random_reinit(imp_masks, rewind, fresh, generator):
    masks = random_masks(imp_masks, count(imp_masks), generator)
    return masks, {n: fresh[n] * masks[n] for n in masks}


def _mask_reinit(imp_masks, rewind, fresh, generator):
    masks = dict(imp_masks)
    return masks, {n: fresh[n] * masks[n] for n in masks}


for _condition in (
    Condition("mask/weights", _mask_weights, "kept", "IMP", "kept", paper=True, note="the ticket"),
    Condition("mask/permuted", _mask_permuted, "surviving init values shuffled among surviving positions, per layer",
              "IMP", "kept", paper=True),
    Condition("permuted/permuted", _permuted_permuted, "as above, onto the shuffled mask",
              "mask shuffled element-wise within each layer", "kept", paper=True),
    Condition("random/reinit", _random_reinit, "fresh initialisation",
              "random, same global count, uniform over layers", "not kept", fresh_init=True, paper=True),
    Condition("mask/reinit", _mask_reinit, "fresh initialisation", "IMP", "kept", fresh_init=True, note="extra"),
):
    register_condition(_condition)
del _condition

