"""Populations (lth.rl.batched): K independent networks as one, each member equal to its solo network (a
population of one, whose layers equal torch's own)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.rl.batched import BatchedConv2d, BatchedLinear, member_tensors, stack_members, write_member
from lth.rl.networks import NetworkSpec, initialize, weight_layers

K = 3
CASES = [  # (arch, obs_shape, hidden, batch)
    ("mlp", (4,), [8, 8], 5),
    ("mlp", (2, 3, 3), [8], 4),  # multi-dim observations are flattened per member
    ("minatar_cnn", (4, 10, 10), [8], 3),
    ("nature_cnn", (4, 84, 84), [8], 2),
]


class Solo(nn.Module):
    """A population of one seen as a solo network: inputs and outputs without the member dim."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(0))[0]

    def solo_state(self) -> dict[str, torch.Tensor]:
        return member_tensors(self.net.state_dict(), 0)


def solo_and_population(arch: str, obs_shape: tuple[int, ...], hidden: list[int], out: int = 3):
    """K solo networks under different seeds and a population holding solo network k as member k."""
    spec = NetworkSpec(arch=arch, activation="relu" if arch != "mlp" else "tanh")
    solos = []
    for seed in range(K):
        torch.manual_seed(100 + seed)
        solos.append(Solo(spec.build(obs_shape, out, hidden)))
    population = spec.build(obs_shape, out, hidden, members=K)
    params = dict(population.named_parameters())
    for k, solo in enumerate(solos):
        write_member(params, k, solo.solo_state())
    return solos, population


@pytest.mark.parametrize(("arch", "obs_shape", "hidden", "batch"), CASES)
def test_member_k_computes_exactly_what_solo_network_k_does(arch, obs_shape, hidden, batch) -> None:
    solos, population = solo_and_population(arch, obs_shape, hidden)
    x = torch.randn(K, batch, *obs_shape)
    out = population(x)
    assert out.shape == (K, batch, 3)
    for k, solo in enumerate(solos):
        torch.testing.assert_close(out[k], solo(x[k]), atol=1e-6, rtol=0)
    # extra batch dims (rollouts are [envs, steps, ...]) are kept per member
    x2 = torch.randn(K, 2, batch, *obs_shape)
    out2 = population(x2)
    assert out2.shape == (K, 2, batch, 3)
    torch.testing.assert_close(out2[1, 1], solos[1](x2[1, 1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("arch", "obs_shape", "hidden", "batch"), CASES[:3])
def test_population_names_shapes_and_members_load_into_the_solo_network_strictly(
    arch, obs_shape, hidden, batch
) -> None:
    solos, population = solo_and_population(arch, obs_shape, hidden)
    solo_shapes = {n: p.shape for n, p in solos[0].net.named_parameters()}
    batched_shapes = {n: p.shape for n, p in population.named_parameters()}
    assert list(batched_shapes) == list(solo_shapes)
    for name, shape in solo_shapes.items():
        assert shape[0] == 1 and batched_shapes[name] == (K, *shape[1:]), name
    assert len(weight_layers(population)) == len(weight_layers(solos[0]))
    for k in range(K):
        fresh = NetworkSpec(arch=arch).build(obs_shape, 3, hidden)
        fresh.load_state_dict(stack_members([member_tensors(population.state_dict(), k)]), strict=True)
        for name, p in fresh.named_parameters():
            assert torch.equal(p, solos[k].net.state_dict()[name]), (k, name)
    restacked = stack_members([s.solo_state() for s in solos])
    for name, value in population.state_dict().items():
        assert torch.equal(restacked[name], value), name
    copy = member_tensors(population.state_dict(), 0)
    copy[next(iter(copy))].add_(1.0)  # a clone: editing it leaves the population alone
    assert torch.equal(population.state_dict()[next(iter(copy))][0], solos[0].solo_state()[next(iter(copy))])


@pytest.mark.parametrize(("arch", "obs_shape", "hidden", "batch"), [CASES[0], CASES[2]])
def test_members_train_independently(arch, obs_shape, hidden, batch) -> None:
    solos, population = solo_and_population(arch, obs_shape, hidden)
    x = torch.randn(K, batch, *obs_shape)
    target = torch.randn(K, batch, 3)
    ((population(x) - target) ** 2).mean(dim=(1, 2)).sum().backward()
    for k, solo in enumerate(solos):
        ((solo(x[k]) - target[k]) ** 2).mean().backward()
        for name, p in solo.net.named_parameters():
            grad = dict(population.named_parameters())[name].grad[k].unsqueeze(0)
            assert p.grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, p.grad, atol=1e-6, rtol=0)
    population.zero_grad()
    population(x)[1].sum().backward()
    for name, p in population.named_parameters():
        assert torch.all(p.grad[0] == 0) and torch.all(p.grad[2] == 0), name
        assert p.grad[1].abs().sum() > 0, name


def test_reset_parameters_draws_each_member_as_the_solo_layer_would() -> None:
    torch.manual_seed(7)
    layer = BatchedLinear(K, 20, 6)
    torch.manual_seed(7)
    solos = [nn.Linear(20, 6) for _ in range(K)]  # each construction draws weight then bias, like a member
    for k in range(K):
        assert torch.equal(layer.weight[k], solos[k].weight) and torch.equal(layer.bias[k], solos[k].bias)
        assert layer.weight[k].abs().max() <= 1 / math.sqrt(20)
        assert layer.bias[k].abs().max() <= 1 / math.sqrt(20)
    assert not torch.equal(layer.weight[0], layer.weight[1]) and not torch.equal(layer.bias[1], layer.bias[2])
    before = layer.weight.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)

    torch.manual_seed(7)
    conv = BatchedConv2d(K, 4, 5, 3, stride=2)
    torch.manual_seed(7)
    solo_convs = [nn.Conv2d(4, 5, 3, stride=2) for _ in range(K)]
    for k in range(K):
        assert torch.equal(conv.weight[k], solo_convs[k].weight) and torch.equal(conv.bias[k], solo_convs[k].bias)
    assert conv.stride == (2, 2) and conv.padding == (0, 0) and "members=3" in repr(conv)


def test_initialize_schemes_and_input_scale_apply_per_member() -> None:
    population = NetworkSpec().build((4,), 2, [16], members=K)
    first = weight_layers(population)[0]
    assert isinstance(first, nn.Linear) and isinstance(first, BatchedLinear)
    initialize(population, "xavier", input_scale=0.1)
    bound = math.sqrt(6 / (4 + 16))  # per-member fans, not the [K, out, in] tensor's
    assert first.weight.abs().max() <= 0.1 * bound + 1e-7
    assert first.weight.abs().max() > 0.05 * bound  # the per-member bound is used, not a smaller one
    assert torch.all(first.bias == 0)
    assert not torch.equal(first.weight[0], first.weight[1])
    initialize(population, "kaiming", input_scale=0.1)
    assert first.weight.abs().max() <= 0.1 / math.sqrt(4) + 1e-7


def test_batched_layers_with_one_member_match_torchs_layers() -> None:
    solo = nn.Linear(7, 5)
    layer = BatchedLinear(1, 7, 5)
    write_member(dict(layer.named_parameters()), 0, solo.state_dict())
    x = torch.randn(1, 9, 7)
    # baddbmm and addmm may round differently (one ulp, ~1.2e-7 near 1, on some CPUs' kernels): a few ulps allowed
    torch.testing.assert_close(layer(x), solo(x[0]).unsqueeze(0), atol=1e-6, rtol=1e-6)
    conv, solo_conv = BatchedConv2d(1, 3, 4, 3, stride=2), nn.Conv2d(3, 4, 3, stride=2)
    write_member(dict(conv.named_parameters()), 0, solo_conv.state_dict())
    images = torch.randn(1, 6, 3, 11, 11)
    torch.testing.assert_close(conv(images), solo_conv(images[0]).unsqueeze(0), atol=1e-6, rtol=1e-6)
    no_bias = BatchedLinear(2, 7, 5, bias=False)
    assert no_bias.bias is None and no_bias(torch.randn(2, 7)).shape == (2, 5)  # no batch dims


def test_write_member_rejects_missing_names_and_wrong_shapes() -> None:
    params = dict(BatchedLinear(K, 3, 2).named_parameters())
    solo = nn.Linear(3, 2).state_dict()
    with pytest.raises(KeyError, match="missing names \\['bias'\\]"):
        write_member(params, 0, {"weight": solo["weight"]})
    with pytest.raises(ValueError, match="solo shape"):
        write_member(params, 0, {"weight": solo["weight"].T, "bias": solo["bias"]})
    with pytest.raises(ValueError, match="out of range"):
        write_member(params, K, solo)
    write_member(params, 2, solo)
    assert torch.equal(params["weight"][2], solo["weight"])
