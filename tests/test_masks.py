"""Mask maths against torch's own global pruning as an oracle, the invariants of each condition, and the
uniformity of the random masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth.callbacks.conditions import apply_condition, condition_names
from lth.callbacks.masks import (
    count,
    density,
    full_masks,
    global_magnitude_masks,
    random_masks,
    shuffle_masks,
)


def _layers(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(16, 4, generator=g), "b.weight": torch.randn(16, 16, generator=g),
            "c.weight": torch.randn(2, 16, generator=g)}


def test_matches_torch_global_unstructured_over_levels() -> None:
    modules = [nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 2)]
    names = ["a.weight", "b.weight", "c.weight"]
    masks = full_masks(_layers())
    for level in range(1, 6):
        weights = _layers(seed=level)  # "trained" weights differ at every level
        scores = {(m, "weight"): weights[n] for m, n in zip(modules, names)}
        k = round(0.2 * count(masks))
        prune.global_unstructured(list(scores), pruning_method=prune.L1Unstructured, amount=k, importance_scores=scores)
        masks = global_magnitude_masks(weights, masks, 0.2)
        for module, name in zip(modules, names):
            assert torch.equal(module.weight_mask.bool(), masks[name]), (level, name)


def test_density_is_exact_to_one_weight_per_level() -> None:
    weights = _layers()
    masks = full_masks(weights)
    remaining = total = count(masks)
    for level in range(1, 21):
        masks = global_magnitude_masks(weights, masks, 0.2)
        remaining -= round(0.2 * remaining)
        assert count(masks) == remaining
        # each level rounds to one weight; the error against 0.8**level stays below 0.5 / (1 - 0.8) weights
        assert abs(density(masks) * total - total * 0.8**level) < 2.5
    assert count(masks) > 0


def test_ties_are_broken_deterministically_by_position() -> None:
    weights = {"w": torch.ones(10)}
    masks = global_magnitude_masks(weights, full_masks(weights), 0.3)
    assert masks["w"].tolist() == [False] * 3 + [True] * 7
    # many ties across tensors (an unstable sort reorders runs of equal keys once they are long), and non-finite
    # weights, which all tie below every finite one
    for value in (0.5, float("nan")):
        weights = {"a": torch.full((300,), value), "b": torch.full((20, 40), value)}
        masks = global_magnitude_masks(weights, full_masks(weights), 0.5)
        assert masks["a"].sum() == 0 and masks["b"].reshape(-1)[:250].sum() == 0
        assert bool(masks["b"].reshape(-1)[250:].all())


def test_already_pruned_weights_are_never_revived() -> None:
    weights = _layers()
    first = global_magnitude_masks(weights, full_masks(weights), 0.5)
    second = global_magnitude_masks(_layers(seed=9), first, 0.5)
    for name in first:
        assert not torch.any(second[name] & ~first[name])


def _setup(seed: int = 0):
    rewind = _layers(seed=100)
    imp = global_magnitude_masks(_layers(seed), full_masks(rewind), 0.5)
    fresh = _layers(seed=200)
    return imp, rewind, fresh


def _run(condition: str, seed: int = 0):
    imp, rewind, fresh = _setup()
    masks, weights = apply_condition(condition, imp, rewind, fresh, torch.Generator().manual_seed(seed))
    return imp, rewind, fresh, masks, weights


@pytest.mark.parametrize("condition", condition_names())
def test_pruned_positions_are_zero_and_count_is_kept(condition: str) -> None:
    imp, _, _, masks, weights = _run(condition)
    assert count(masks) == count(imp)
    for name in masks:
        assert torch.all(weights[name][~masks[name]] == 0)


@pytest.mark.parametrize("condition", condition_names())
def test_same_seed_same_result_bit_for_bit(condition: str) -> None:
    *_, m1, w1 = _run(condition, seed=5)
    *_, m2, w2 = _run(condition, seed=5)
    assert all(torch.equal(m1[n], m2[n]) and torch.equal(w1[n], w2[n]) for n in m1)


@pytest.mark.parametrize("condition", ["mask/permuted", "permuted/permuted", "random/reinit"])
def test_random_conditions_depend_on_the_seed(condition: str) -> None:
    *_, m1, w1 = _run(condition, seed=5)
    *_, m3, w3 = _run(condition, seed=6)
    assert any(not torch.equal(w1[n], w3[n]) for n in w1)
    assert any(not torch.equal(m1[n], m3[n]) for n in m1) == (condition != "mask/permuted")


@pytest.mark.parametrize("condition", ["mask/weights", "mask/reinit"])
def test_deterministic_conditions_draw_nothing_from_the_generator(condition: str) -> None:
    """They leave the generator untouched, so the draws of everything after them do not move."""
    imp, rewind, fresh = _setup()
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    apply_condition(condition, imp, rewind, fresh, g)
    assert torch.equal(g.get_state(), before)


def test_ticket_keeps_mask_and_rewind_values() -> None:
    imp, rewind, _, masks, weights = _run("mask/weights")
    for name in imp:
        assert torch.equal(masks[name], imp[name])
        assert torch.equal(weights[name], rewind[name] * imp[name])


def test_mask_permuted_keeps_each_layers_multiset_of_surviving_values() -> None:
    imp, rewind, _, masks, weights = _run("mask/permuted")
    for name in imp:
        assert torch.equal(masks[name], imp[name])
        kept = torch.sort(rewind[name][imp[name]]).values
        assert torch.equal(torch.sort(weights[name][masks[name]]).values, kept)
    assert any(not torch.equal(weights[n], rewind[n] * imp[n]) for n in imp)


def test_permuted_permuted_keeps_layer_density_not_positions() -> None:
    imp, rewind, _, masks, weights = _run("permuted/permuted")
    for name in imp:
        assert int(masks[name].sum()) == int(imp[name].sum())
        assert not torch.equal(masks[name], imp[name])
        kept = torch.sort(rewind[name][imp[name]]).values
        assert torch.equal(torch.sort(weights[name][masks[name]]).values, kept)


def test_random_reinit_keeps_only_the_global_count() -> None:
    imp, _, fresh, masks, weights = _run("random/reinit")
    assert count(masks) == count(imp)
    assert any(int(masks[n].sum()) != int(imp[n].sum()) for n in imp)
    for name in imp:
        assert torch.equal(weights[name], fresh[name] * masks[name])


def test_mask_reinit_keeps_mask_with_fresh_values() -> None:
    imp, _, fresh, masks, weights = _run("mask/reinit")
    for name in imp:
        assert torch.equal(masks[name], imp[name])
        assert torch.equal(weights[name], fresh[name] * imp[name])


def test_shuffle_and_random_masks_counts() -> None:
    imp, *_ = _setup()
    g = torch.Generator().manual_seed(0)
    assert {n: int(m.sum()) for n, m in shuffle_masks(imp, g).items()} == {n: int(m.sum()) for n, m in imp.items()}
    assert count(random_masks(imp, 17, g)) == 17


def _survival_frequency(draw, seeds: int) -> torch.Tensor:
    return torch.stack([draw(torch.Generator().manual_seed(s)) for s in range(seeds)]).double().mean(0)


def _assert_uniform(freq: torch.Tensor, p: float, seeds: int) -> None:
    """Every position's survival frequency over ``seeds`` draws is ``p`` within sampling error: no position is
    more than 5 binomial sd off and the chi-square statistic over positions stays below dof + 5 sqrt(2 dof)."""
    sd = (p * (1 - p) / seeds) ** 0.5
    assert float((freq - p).abs().max()) < 5 * sd, (freq, p)
    chi2 = float((((freq - p) / sd) ** 2).sum())
    dof = freq.numel()
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, chi2


def test_random_masks_are_uniform_over_all_positions_of_all_tensors() -> None:
    masks = {"a": torch.zeros(3, 4, dtype=torch.bool), "b": torch.ones(5, dtype=torch.bool),
             "c": torch.eye(2, dtype=torch.bool)}  # 21 positions; the input pattern must not matter
    seeds, survivors = 3000, 7

    def draw(g):
        out = random_masks(masks, survivors, g)
        assert count(out) == survivors
        assert {n: m.shape for n, m in out.items()} == {n: m.shape for n, m in masks.items()}
        return torch.cat([m.reshape(-1) for m in out.values()])

    _assert_uniform(_survival_frequency(draw, seeds), survivors / 21, seeds)


def test_shuffled_masks_are_uniform_within_each_tensor() -> None:
    masks = {"a": torch.arange(12).reshape(3, 4) < 3, "b": torch.arange(8) >= 2}  # survivors bunched at one end
    seeds = 3000

    def draw(g):
        out = shuffle_masks(masks, g)
        assert all(int(out[n].sum()) == int(masks[n].sum()) for n in masks)
        return torch.cat([m.reshape(-1) for m in out.values()])

    freq = _survival_frequency(draw, seeds)
    _assert_uniform(freq[:12], 3 / 12, seeds)
    _assert_uniform(freq[12:], 6 / 8, seeds)


def test_unknown_condition_names_the_valid_ones() -> None:
    imp, rewind, fresh = _setup()
    with pytest.raises(ValueError, match="mask/permuted"):
        apply_condition("mask/shuffled", imp, rewind, fresh, torch.Generator())
