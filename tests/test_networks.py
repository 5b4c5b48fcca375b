import math

import pytest
import torch
from torch import nn

from lth.rl.batched import BatchedLinear
from lth.rl.networks import initialize, mlp, weight_layers


def test_mlp_shapes_and_dropout() -> None:
    net = mlp(4, [8, 6], 2, activation="relu", dropout=0.1)  # a population of one
    assert [type(m) for m in net] == [BatchedLinear, nn.ReLU, nn.Dropout, BatchedLinear, nn.ReLU, nn.Dropout,
                                      BatchedLinear]
    assert net(torch.zeros(1, 3, 4)).shape == (1, 3, 2)


def test_unknown_activation_and_scheme_name_the_choices() -> None:
    with pytest.raises(ValueError, match="tanh"):
        mlp(4, [8], 2, activation="gelu")
    with pytest.raises(ValueError, match="xavier"):
        initialize(mlp(4, [8], 2), "orthogonal")


def test_kaiming_is_pytorch_default_bound() -> None:
    net = initialize(mlp(100, [50], 3), "kaiming")
    first = weight_layers(net)[0]
    bound = 1 / math.sqrt(100)  # kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.9 * bound


def test_xavier_bound_and_zero_bias() -> None:
    net = initialize(mlp(100, [50], 3), "xavier")
    first = weight_layers(net)[0]
    bound = math.sqrt(6 / (100 + 50))
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.9 * bound
    assert torch.all(first.bias == 0)


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
def test_input_scale_scales_only_the_first_layer(scheme: str) -> None:
    torch.manual_seed(3)
    plain = initialize(mlp(4, [16, 16], 2), scheme)
    torch.manual_seed(3)
    scaled = initialize(mlp(4, [16, 16], 2), scheme, input_scale=0.1)
    (p0, *p_rest), (s0, *s_rest) = weight_layers(plain), weight_layers(scaled)
    torch.testing.assert_close(s0.weight, 0.1 * p0.weight)
    torch.testing.assert_close(s0.bias, p0.bias)
    for p, s in zip(p_rest, s_rest):
        torch.testing.assert_close(s.weight, p.weight)
