"""PruningCallback on a population (K independent networks with a leading member dimension, ``members`` = K):
every member is its own IMP chain whose masks, next weights and state equal those of a solo callback run on a
solo network holding that member's weights; pruned weights stay exactly 0 in every member through real Adam
steps; a member's state loads into a solo callback (and back) and continues identically; bad input is named.

The batched layer is defined here (the project's own lives in ``lth.rl.batched``): member k of a population's
``reset_parameters()`` draws exactly what member k's solo network draws under the same RNG state, so the
fresh-init conditions can be compared with solo runs bit for bit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lth.callbacks import PruningCallback
from lth.callbacks.conditions import condition_names
from lth.callbacks.masks import count

K = 4
NAMES = ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "scale")
SHAPES = {"net.0.weight": (10, 6), "net.0.bias": (10,), "net.2.weight": (3, 10), "net.2.bias": (3,), "scale": (3,)}


def _draw(in_features: int, out_features: int, member: int) -> tuple[Tensor, Tensor]:
    """Member ``member``'s draw of a Linear: the (member+1)-th ``nn.Linear`` draw from the current RNG state. The
    RNG then stands one draw further, whatever the member, so a population and each solo net stay in step."""
    after = None
    for i in range(member + 1):
        layer = nn.Linear(in_features, out_features)
        after = torch.get_rng_state() if i == 0 else after
    torch.set_rng_state(after)
    return layer.weight.detach(), layer.bias.detach()


class MLinear(nn.Linear):
    """A solo Linear that initialises as member ``member`` of :class:`BLinear`."""

    def __init__(self, in_features: int, out_features: int, member: int) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.member = in_features, out_features, member
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        weight, bias = _draw(self.in_features, self.out_features, self.member)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)


class BLinear(nn.Linear):
    """``members`` independent Linear layers: weight ``[K, out, in]``, bias ``[K, out]``, input ``[K, B, in]``."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        nn.Module.__init__(self)
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        state = torch.get_rng_state()
        with torch.no_grad():
            for k in range(self.members):
                torch.set_rng_state(state)
                self.weight[k], self.bias[k] = _draw(self.in_features, self.out_features, k)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class Net(L.LightningModule):
    """6-10-3 MLP times a per-output ``scale`` (tracked, never pruned). ``members=K``: a population logging
    ``val/score/{k}``; else member ``member``'s solo network logging ``val/score``."""

    def __init__(self, members: int | None = None, member: int = 0, lr: float = 1e-2) -> None:
        super().__init__()
        if members is not None:
            self.members = members
            layers = [BLinear(members, 6, 10), nn.ReLU(), BLinear(members, 10, 3)]
        else:
            layers = [MLinear(6, 10, member), nn.ReLU(), MLinear(10, 3, member)]
        self.net = nn.Sequential(*layers)
        self.scale = nn.Parameter(torch.ones(*([members] if members else []), 3))
        self.lr, self._optimizer = lr, None

    def forward(self, x: Tensor) -> Tensor:
        x = x.expand(self.members, *x.shape)  # the same batch for every member
        return self.net(x) * self.scale.unsqueeze(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self(x) - y) ** 2).mean(dim=(1, 2)).sum()  # members independent: a sum of per-member losses

    def validation_step(self, batch, batch_idx):
        x, y = batch
        for k, loss in enumerate(((self(x) - y) ** 2).mean(dim=(1, 2))):
            self.log(f"val/score/{k}", -loss)

    def configure_optimizers(self):
        if self._optimizer is None:  # one Adam carried across levels (and so across prunes)
            self._optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        return self._optimizer


# ---------------------------------------------------------------------- helpers


def _same(a: Any, b: Any, path: str = "") -> None:
    """Deep, bit-exact equality (NaN equals NaN), with the path of the first difference."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (path, list(a), list(b))
        for key in a:
            _same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype, (path, a.shape, b.shape)
        assert bool(((a == b) | (a.isnan() & b.isnan())).all()), path
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, (path, a, b)


def _weights(member: int, level: int, epoch: int) -> dict[str, Tensor]:
    """Member ``member``'s hand-set weights after ``epoch`` of ``level`` (solo shapes); member 3's last epoch
    holds a NaN: its better score must not make it the best."""
    g = torch.Generator().manual_seed(1_000 * member + 10 * level + epoch)
    out = {name: torch.randn(SHAPES[name], generator=g) for name in NAMES}
    if member == 3 and epoch == 2:
        out["net.2.weight"][0, 0] = math.nan
    return out


# per member (rows), the score after each epoch: each member's best is another epoch; NaN is never the best
SCORES = [[0.1, 0.9, 0.3], [0.5, math.nan, 0.2], [0.2, 0.3, 0.8], [0.9, 0.1, 0.95]]


def _level(cb: PruningCallback, model: nn.Module, level: int, write: Callable[[int, dict[str, Tensor]], None],
           metrics: Callable[[int], dict[str, Tensor]]) -> None:
    """One level driven through the callback's hooks: each epoch hand-sets the weights, makes one optimizer step
    (no gradients: only its post-hook acts) and validates."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={}, optimizers=[optimizer])
    cb.on_fit_start(trainer, model)
    for epoch in range(3):
        write(epoch, {})
        optimizer.step()
        trainer.callback_metrics = metrics(epoch)
        cb.on_validation_end(trainer, model)
    cb.on_fit_end(trainer, model)


def _population_level(cb: PruningCallback, model: Net, level: int) -> None:
    params = dict(model.named_parameters())

    @torch.no_grad()
    def write(epoch: int, _: dict) -> None:
        for k in range(K):
            for name, value in _weights(k, level, epoch).items():
                params[name][k] = value

    _level(cb, model, level, write, lambda e: {f"val/score/{k}": torch.tensor(SCORES[k][e]) for k in range(K)})


def _solo_level(cb: PruningCallback, model: Net, member: int, level: int) -> None:
    params = dict(model.named_parameters())

    @torch.no_grad()
    def write(epoch: int, _: dict) -> None:
        for name, value in _weights(member, level, epoch).items():
            params[name].copy_(value)

    _level(cb, model, level, write, lambda e: {"val/score": torch.tensor(SCORES[member][e])})


def _assert_member_is_solo(cb: PruningCallback, model: Net, k: int, solo_cb: PruningCallback, solo: Net) -> None:
    member = {name: p.detach()[k] for name, p in model.named_parameters()}
    _same(member, dict(solo.named_parameters()), f"member {k} weights")
    _same(cb.member_masks(k), solo_cb.masks, f"member {k} masks")
    _same(cb.member_rewind_state(k), solo_cb.rewind_state, f"member {k} rewind state")
    _same(cb.member_trained_weights(k), solo_cb.trained_weights, f"member {k} trained weights")
    _same(cb.member_state_dict(k), solo_cb.state_dict(), f"member {k} state")


# ---------------------------------------------------------------------- (1) every member is its own solo chain

CASES = [
    *[({"condition": c, "seed": [0, 1, 2, 3]}) for c in (*condition_names(paper=True), "mask/reinit")],
    {"condition": ["mask/weights", "permuted/permuted", "random/reinit", "mask/reinit"], "seed": [7, 7, 3, 1]},
    {"condition": ["mask/permuted", "mask/weights", "mask/reinit", "random/reinit"], "seed": 5,
     "prune_from": "last", "rewind": 2},
    {"condition": "mask/permuted", "seed": 9, "rewind": 1},  # one condition and one seed for every member
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: f"{kw['condition']}-{kw['seed']}-{kw.get('rewind', 'i')}")
def test_every_member_prunes_exactly_as_a_solo_callback_on_its_weights(kwargs: dict) -> None:
    conditions = kwargs["condition"] if isinstance(kwargs["condition"], list) else [kwargs["condition"]] * K
    seeds = kwargs["seed"] if isinstance(kwargs["seed"], list) else [kwargs["seed"]] * K
    common = {"amount": 0.3, "monitor": "val/score", **{k: v for k, v in kwargs.items() if k not in ("condition",
                                                                                                   "seed")}}
    torch.manual_seed(0)
    model = Net(members=K)
    cb = PruningCallback(condition=kwargs["condition"], seed=kwargs["seed"], **common)
    solos = []
    for k in range(K):
        torch.manual_seed(0)
        solos.append((PruningCallback(condition=conditions[k], seed=seeds[k], **common), Net(member=k)))
    _same({n: p.detach()[2] for n, p in model.named_parameters()}, dict(solos[2][1].named_parameters()))
    for level in range(3):
        _population_level(cb, model, level)
        for k, (solo_cb, solo) in enumerate(solos):
            _solo_level(solo_cb, solo, k, level)
            _assert_member_is_solo(cb, model, k, solo_cb, solo)
        assert cb.level == level + 1 and cb.population and cb.members == K
        assert all(torch.equal(cb.masks[n][k], cb.member_masks(k)[n]) for n in cb.masks for k in range(K))
        assert count(cb.masks) == sum(count(cb.member_masks(k)) for k in range(K))
        _same(cb.state_dict(), {"members": [cb.member_state_dict(k) for k in range(K)]})
        # members differ from one another (own weights, seeds, conditions)
        assert not all(torch.equal(cb.member_masks(0)[n], cb.member_masks(1)[n]) for n in cb.masks)
    if kwargs.get("prune_from", "best") == "best":  # each member's own best epoch (NaN scores and weights never)
        for k, epoch in enumerate((1, 0, 2, 0)):
            expected = _weights(k, 2, epoch)
            trained = cb.member_trained_weights(k)
            assert torch.equal(trained["net.0.bias"], expected["net.0.bias"]) and set(trained) == set(NAMES)


# ---------------------------------------------------------------------- (2) real Adam steps


class ZeroProbe(Callback):
    """After every training batch: every pruned weight of every member is exactly 0; before every optimizer
    step: no pruned weight has a gradient."""

    def __init__(self, cb: PruningCallback) -> None:
        self.cb, self.checks = cb, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = dict(pl_module.named_parameters())
        for name, mask in self.cb.masks.items():
            assert mask.shape == params[name].shape
            assert torch.all(params[name].grad[~mask] == 0), name

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        params = dict(pl_module.named_parameters())
        for k in range(K):
            for name, mask in self.cb.member_masks(k).items():
                assert torch.all(params[name][k][~mask] == 0), (k, name)
        self.checks += 1


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.randn(6, 3, generator=g)), batch_size=16)


def _fit(model: Net, cb: PruningCallback, *extra: Callback, epochs: int = 2) -> None:
    L.Trainer(max_epochs=epochs, callbacks=[cb, *extra], logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
              ).fit(model, _loader(), _loader())


def test_pruned_weights_stay_zero_in_every_member_through_adam_steps() -> None:
    torch.manual_seed(0)
    model = Net(members=K)
    cb = PruningCallback(amount=0.5, condition=["mask/weights", "mask/permuted", "random/reinit", "mask/weights"],
                         seed=[0, 1, 2, 3], monitor="val/score")
    _fit(model, cb)  # dense level: Adam's moments become nonzero everywhere, and the optimizer is carried over
    probe = ZeroProbe(cb)
    for level in (1, 2):
        _fit(model, cb, probe)
        assert cb.level == level + 1
    assert probe.checks == 16
    assert cb.density == pytest.approx(0.5**3, abs=0.01)  # three levels of 50 %
    params = dict(model.named_parameters())
    for k in range(K):
        rewind = cb.member_rewind_state(k)
        for name, mask in cb.member_masks(k).items():
            assert torch.all(params[name][k][~mask] == 0)
        if cb.member_state_dict(k)["condition"] == "mask/weights":  # survivors rewound to member k's init
            assert all(torch.equal(params[n][k], rewind[n] * cb.member_masks(k)[n]) for n in cb.member_masks(k))
            assert torch.equal(params["net.0.bias"][k], rewind["net.0.bias"])


# ---------------------------------------------------------------------- (3) member states <-> solo states


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as lth imp stores next_state.pt
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_a_member_state_loads_into_a_solo_callback_and_back() -> None:
    conditions, seeds = ["mask/permuted", "random/reinit", "mask/weights", "permuted/permuted"], [4, 5, 6, 7]
    common = {"amount": 0.3, "monitor": "val/score", "rewind": 1}
    torch.manual_seed(0)
    model = Net(members=K)
    cb = PruningCallback(condition=conditions, seed=seeds, **common)
    _population_level(cb, model, 0)

    # member k -> a solo callback on a solo network with other weights: the stored start state takes over
    solos = []
    for k in range(K):
        torch.manual_seed(100 + k)
        solo_cb = PruningCallback(condition=conditions[k], seed=seeds[k], **common)
        solo_cb.load_state_dict(_roundtrip(cb.member_state_dict(k)))
        solos.append((solo_cb, Net(member=k)))
    # solo states -> a fresh population callback (members known from its K conditions) on a fresh population
    torch.manual_seed(1)
    model_b = Net(members=K)
    cb_b = PruningCallback(condition=conditions, seed=seeds, **common)
    for k, (solo_cb, _) in enumerate(solos):
        cb_b.load_member_state_dict(k, _roundtrip(solo_cb.state_dict()))
    # and the population state as a whole, into a callback with one condition per member given by a list
    torch.manual_seed(2)
    model_c = Net(members=K)
    cb_c = PruningCallback(condition=conditions, seed=seeds, **common)
    cb_c.load_state_dict(_roundtrip(cb.state_dict()))

    for level in (1, 2):
        _population_level(cb, model, level)
        _population_level(cb_b, model_b, level)
        _population_level(cb_c, model_c, level)
        for k, (solo_cb, solo) in enumerate(solos):
            _solo_level(solo_cb, solo, k, level)
            for other_cb, other in ((cb, model), (cb_b, model_b), (cb_c, model_c)):
                _assert_member_is_solo(other_cb, other, k, solo_cb, solo)


def test_fresh_init_takes_member_ks_slice_of_the_fresh_draw() -> None:
    """With the same seed for every member, reinit members still start from different values: their own
    slices (as their solo networks would draw them), not member 0's."""
    torch.manual_seed(0)
    model = Net(members=K)
    cb = PruningCallback(amount=0.3, condition="mask/reinit", seed=3, monitor="val/score")
    _population_level(cb, model, 0)
    first = [model.net[0].bias.detach()[k] for k in range(K)]
    assert all(not torch.equal(first[0], first[k]) for k in range(1, K))
    torch.manual_seed(0)
    solo_cb, solo = PruningCallback(amount=0.3, condition="mask/reinit", seed=3, monitor="val/score"), Net(member=2)
    _solo_level(solo_cb, solo, 2, 0)
    assert torch.equal(first[2], solo.net[0].bias) and count(cb.member_masks(2)) == count(solo_cb.masks)


# ---------------------------------------------------------------------- (4) bad input


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"condition": ["mask/weights"] * 3}, r"3 conditions.*members=4"),
    ({"seed": [0, 1, 2, 3, 4]}, r"5 seeds.*members=4"),
    ({"members": 2}, r"members=2.*members=4"),
])
def test_a_population_size_that_differs_from_the_models_is_named(kwargs: dict, match: str) -> None:
    cb = PruningCallback(monitor="val/score", **kwargs)
    trainer = SimpleNamespace(optimizers=[])
    with pytest.raises(ValueError, match=match):
        cb.on_fit_start(trainer, Net(members=K))


def test_other_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="mask/permuted"):  # an unknown name in a list: the valid ones named
        PruningCallback(condition=["mask/weights", "mask/shuffled"])
    with pytest.raises(ValueError, match="inconsistent.*3 conditions.*2 seeds"):
        PruningCallback(condition=["mask/weights"] * 3, seed=[0, 1])
    with pytest.raises(ValueError, match="solo models only"):
        PruningCallback(seed=[0, 1], mask_source=lambda level: None)
    with pytest.raises(ValueError, match="solo models only"):
        PruningCallback(mask_source=lambda level: None).on_fit_start(SimpleNamespace(optimizers=[]), Net(members=K))
    with pytest.raises(ValueError, match="2 seeds.*members=1"):  # a solo model with per-member seeds
        PruningCallback(seed=[0, 1]).on_fit_start(SimpleNamespace(optimizers=[]), Net(member=0))
    cb = PruningCallback(monitor="val/score")
    with pytest.raises(ValueError, match="population size is not known"):
        cb.load_member_state_dict(1, {})
    model = Net(members=K)
    with torch.no_grad():
        model.scale = nn.Parameter(torch.ones(3))  # no member dimension
    with pytest.raises(ValueError, match="scale"):
        cb.on_fit_start(SimpleNamespace(optimizers=[]), model)


def test_a_population_of_one_is_the_ordinary_model_holding_its_weights() -> None:
    """``members == 1`` (parameters ``[1, ...]``) is one chain that prunes exactly as the ordinary model (no
    ``members`` attribute) holding the same weights: same masks, rewind point and state, in the solo layout; its
    read-outs are laid out as its parameters."""
    torch.manual_seed(0)
    one = Net(members=1)
    cb = PruningCallback(amount=0.3, monitor="val/score", seed=2)
    params = dict(one.named_parameters())

    @torch.no_grad()
    def write(epoch: int, _: dict) -> None:
        for name, value in _weights(0, 0, epoch).items():
            params[name][0] = value

    _level(cb, one, 0, write, lambda e: {"val/score": torch.tensor(SCORES[0][e])})
    torch.manual_seed(0)
    plain, solo_cb = Net(member=0), PruningCallback(amount=0.3, monitor="val/score", seed=2)
    _solo_level(solo_cb, plain, 0, 0)
    _assert_member_is_solo(cb, one, 0, solo_cb, plain)
    assert not cb.population and cb.level == 1 and "members" not in cb.state_dict()
    _same(cb.member_state_dict(0), cb.state_dict())
    assert {n: tuple(m.shape) for n, m in cb.masks.items()} == {n: (1, *SHAPES[n]) for n in ("net.0.weight",
                                                                                                "net.2.weight")}
