"""The condition registry and every condition wired through PruningCallback after a real Lightning fit: the
weights a level starts from are the condition's (not the ticket's), a condition added through the registry
alone runs end to end, and the README's table is the registry's."""

from __future__ import annotations

import re

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lth.callbacks import Condition, PruningCallback, condition_names, register_condition, unregister_condition
from lth.callbacks.conditions import get_condition, markdown_table
from lth.callbacks.masks import count, full_masks, global_magnitude_masks
from lth.errors import ConfigError
from lth.study.settings import ImpSettings
from tests.conftest import ROOT
from tests.test_pruning_callback import Regressor, _fit

PAPER = ("mask/weights", "mask/permuted", "permuted/permuted", "random/reinit")


def test_the_registry_holds_the_papers_four_conditions_first_then_mask_reinit() -> None:
    assert condition_names(paper=True) == PAPER
    assert condition_names() == (*PAPER, "mask/reinit")
    assert {n for n in condition_names() if get_condition(n).fresh_init} == {"random/reinit", "mask/reinit"}
    with pytest.raises(ValueError, match="already registered"):
        register_condition(get_condition("mask/weights"))
    with pytest.raises(ValueError, match="mask/permuted"):
        get_condition("mask/shuffled")
    with pytest.raises(ValueError, match="mask/permuted"):
        PruningCallback(condition="mask/shuffled")


def test_readme_condition_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ticket conditions", 1)[1]
    table = re.search(r"^\|.*?(?=\n[^|])", section, flags=re.S | re.M).group(0)
    assert table == markdown_table()
    assert re.findall(r"^\| `([^`]+)`", table, flags=re.M) == list(condition_names())


# ---------------------------------------------------------------------- a condition added through the registry


def _negated(imp_masks, rewind, fresh, generator):
    masks = dict(imp_masks)
    return masks, {n: -rewind[n] * masks[n] for n in masks}


@pytest.fixture()
def negated():
    condition = register_condition(Condition("mask/negated", _negated, weights="minus the rewind values",
                                             mask="IMP", layer_ratio="kept"))
    yield condition
    unregister_condition("mask/negated")


def test_a_condition_added_through_the_registry_runs_through_the_callback_and_lth_imp(negated) -> None:
    assert condition_names()[-1] == "mask/negated" and "mask/negated" not in condition_names(paper=True)
    assert "| `mask/negated` | minus the rewind values | IMP | kept |" in markdown_table()
    assert ImpSettings(conditions="mask/weights, mask/negated").chain_conditions() == ["mask/weights", "mask/negated"]
    assert ImpSettings(conditions="all").chain_conditions() == list(PAPER)

    model = Regressor()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cb = PruningCallback(condition="mask/negated", monitor="val/score", seed=1)
    for level in (1, 2):
        _fit(model, cb)
        state = model.state_dict()
        assert cb.level == level and count(cb.masks) < count(full_masks(cb.masks))
        for name, mask in cb.masks.items():
            assert torch.equal(state[name], -init[name] * mask)
        assert torch.equal(state["net.0.bias"], init["net.0.bias"])


def test_an_unregistered_condition_is_rejected_everywhere() -> None:
    assert "mask/negated" not in condition_names()  # the fixture unregisters it after its test
    with pytest.raises(ValueError, match="mask/negated"):
        PruningCallback(condition="mask/negated")
    with pytest.raises(ConfigError, match="mask/negated"):
        ImpSettings(condition="mask/negated").chain_conditions()


# ---------------------------------------------------------------------- each condition after a real fit


class Trained(Callback):
    """The weights at the end of training, before the pruning callback replaces them."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _level_one(condition: str):
    """One real fit (prune from the last weights) -> init, the IMP masks of the trained weights, callback, model."""
    model = Regressor()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cb = PruningCallback(condition=condition, monitor="val/score", prune_from="last", seed=1)
    trained = Trained()
    _fit(model, cb, trained)
    names = list(cb.masks)
    imp = global_magnitude_masks({n: trained.weights[n] for n in names}, full_masks(cb.masks), 0.2)
    return init, imp, cb, model.state_dict()


def test_mask_weights_starts_from_the_rewind_values_on_the_imp_mask() -> None:
    init, imp, cb, state = _level_one("mask/weights")
    for name in imp:
        assert torch.equal(cb.masks[name], imp[name])
        assert torch.equal(state[name], init[name] * imp[name])


@pytest.mark.parametrize("condition", ["mask/permuted", "permuted/permuted"])
def test_permuted_conditions_start_from_a_permutation_of_the_rewind_survivors(condition: str) -> None:
    """In every layer the survivors hold the rewind values of the IMP survivors, in another order."""
    init, imp, cb, state = _level_one(condition)
    for name in imp:
        mask = cb.masks[name]
        assert int(mask.sum()) == int(imp[name].sum())
        assert torch.equal(mask, imp[name]) == (condition == "mask/permuted")
        assert torch.all(state[name][~mask] == 0)
        source, placed = init[name][imp[name]], state[name][mask]  # both in flat (row-major) order
        assert torch.equal(torch.sort(placed).values, torch.sort(source).values)  # the same multiset...
        assert not torch.equal(placed, source)  # ...not the identity permutation


@pytest.mark.parametrize("condition", ["random/reinit", "mask/reinit"])
def test_reinit_conditions_start_from_fresh_values(condition: str) -> None:
    init, imp, cb, state = _level_one(condition)
    assert count(cb.masks) == count(imp)
    assert (condition == "mask/reinit") == all(torch.equal(cb.masks[n], imp[n]) for n in imp)
    for name, mask in cb.masks.items():
        fan_in = mask.shape[1]
        values = state[name][mask]
        assert torch.all(state[name][~mask] == 0)
        assert not torch.any(values == init[name][mask])  # no survivor keeps its rewind value
        assert not torch.any(torch.isin(values, init[name]))  # nor any other rewind value
        assert values.abs().max() <= 1 / fan_in**0.5  # nn.Linear's own init: kaiming-uniform, bound 1/sqrt(fan_in)
    for name in ("net.0.bias", "net.2.bias", "net.4.bias"):
        assert not torch.any(state[name] == init[name])  # unpruned tensors are drawn fresh too

