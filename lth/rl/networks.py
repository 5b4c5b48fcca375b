"""Network builders and the paper's initialisation schemes (section 4.2)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

import torch
from torch import nn

from lth.errors import ConfigError
from lth.rl.batched import BatchedConv2d, BatchedLinear

InitScheme = Literal["kaiming", "xavier"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)
Activation = Literal["tanh", "relu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
Architecture = Literal["mlp", "minatar_cnn", "nature_cnn"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


class Scale(nn.Module):
    """Multiplies its input by a constant (e.g. 1/255 for pixel observations); no parameters to prune."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    dropout: float = 0.0,
    members: int = 1,
) -> nn.Sequential:
    """A plain MLP ``in -> hidden... -> out``; dropout (SI Figure 14) follows every hidden activation.

    ``members > 1`` builds a population (:class:`lth.rl.batched.BatchedLinear` layers, same parameter names):
    input ``[members, *batch, in]``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [_linear(width, size, members), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(_linear(width, out_features, members))
    return nn.Sequential(*layers)


def _linear(in_features: int, out_features: int, members: int) -> nn.Linear:
    """``nn.Linear``, or a population of ``members`` of them when ``members > 1``."""
    return nn.Linear(in_features, out_features) if members == 1 else BatchedLinear(members, in_features, out_features)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, members: int) -> nn.Conv2d:
    """``nn.Conv2d``, or a population of ``members`` of them when ``members > 1``."""
    if members == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride)
    return BatchedConv2d(members, in_channels, out_channels, kernel_size, stride=stride)


class ImageTrunk(nn.Module):
    """Applies a conv stack to images with any leading batch dims (rollouts are [envs, steps, C, H, W]).

    With ``members > 1`` the leading dim is the population's member dim and is kept: ``[K, *batch, C, H, W]``.
    """

    def __init__(self, layers: nn.Sequential, members: int = 1) -> None:
        super().__init__()
        self.layers = layers
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            batch = x.shape[:-3]
            out = self.layers(x.reshape(-1, *x.shape[-3:]))
            return out.reshape(*batch, out.shape[-1])
        batch = x.shape[1:-3]
        out = self.layers(x.reshape(self.members, math.prod(batch), *x.shape[-3:]))
        return out.reshape(self.members, *batch, out.shape[-1])


def conv_trunk(arch: str, obs_shape: Sequence[int], members: int = 1) -> tuple[ImageTrunk, int]:
    """The convolutional part of ``arch`` for channels-first ``obs_shape`` and its flat output width.

    ``minatar_cnn`` is MinAtar's 16 3x3 filters (paper Table 10); ``nature_cnn`` is Mnih et al.'s 2015 Atari
    trunk (32x8x8/4, 64x4x4/2, 64x3x3/1). Both end in ReLU and a flatten of (channels, height, width).
    ``members > 1`` builds a population (:class:`lth.rl.batched.BatchedConv2d`, same parameter names).
    """
    if len(obs_shape) != 3:
        raise ConfigError(f"{arch} needs image observations (channels, height, width), got shape {tuple(obs_shape)}")
    channels = obs_shape[0]
    if arch == "minatar_cnn":
        layers: list[nn.Module] = [_conv(channels, 16, 3, 1, members), nn.ReLU()]
    else:
        layers = [
            _conv(channels, 32, 8, 4, members), nn.ReLU(),
            _conv(32, 64, 4, 2, members), nn.ReLU(),
            _conv(64, 64, 3, 1, members), nn.ReLU(),
        ]  # fmt: skip
    trunk = ImageTrunk(nn.Sequential(*layers, nn.Flatten(-3, -1)), members)
    probe = torch.zeros(1, *obs_shape) if members == 1 else torch.zeros(members, 1, *obs_shape)
    with torch.no_grad():
        width = trunk(probe).shape[-1]
    return trunk, int(width)


def network(
    obs_shape: Sequence[int],
    out_features: int,
    hidden: Sequence[int],
    arch: str = "mlp",
    activation: str = "tanh",
    dropout: float = 0.0,
    obs_scale: float = 1.0,
    members: int = 1,
) -> nn.Sequential:
    """A policy/value/Q network for observations of ``obs_shape``: ``arch``'s trunk, then an MLP over ``hidden``.

    ``mlp`` flattens multi-dimensional observations (channels first, so first-layer columns map back to
    channel x height x width). ``obs_scale`` multiplies observations first (1/255 for pixels). One flat
    ``Sequential``, so a vector-input MLP has the same parameter names as :func:`mlp`. ``members > 1`` builds
    a population of that many independent networks with the same parameter names, each parameter with a
    leading member dim: input ``[members, *batch, *obs_shape]``, output ``[members, *batch, out_features]``.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown network architecture {arch!r}; valid: {list(ARCHITECTURES)}")
    layers: list[nn.Module] = [Scale(obs_scale)] if obs_scale != 1.0 else []
    if arch == "mlp":
        if len(obs_shape) > 1:
            layers.append(nn.Flatten(-len(obs_shape), -1))
        width = math.prod(obs_shape)
    else:
        trunk, width = conv_trunk(arch, obs_shape, members)
        layers.append(trunk)
    return nn.Sequential(*layers, *mlp(width, hidden, out_features, activation, dropout, members))


def weight_layers(module: nn.Module) -> list[nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    """The Linear/Conv layers of ``module`` in forward (registration) order."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def initialize(module: nn.Module, scheme: str = "kaiming", input_scale: float = 1.0) -> nn.Module:
    """Re-initialise every Linear/Conv layer of ``module`` in place and return it.

    ``kaiming`` is PyTorch's default layer init (kaiming-uniform, a=sqrt(5)); ``xavier`` is Glorot-uniform
    weights with zero biases. ``input_scale`` multiplies the first layer's weights afterwards: the paper's
    rescaling (0.1) that lets global magnitude pruning cut irrelevant input dimensions early. Population
    layers (leading member dim) are initialised member by member, as their solo layers would be.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid: {list(INIT_SCHEMES)}")
    layers = weight_layers(module)
    for layer in layers:
        if scheme == "kaiming":
            layer.reset_parameters()
        else:
            for weight in layer.weight if isinstance(layer, (BatchedLinear, BatchedConv2d)) else [layer.weight]:
                nn.init.xavier_uniform_(weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    if layers and input_scale != 1.0:
        layers[0].weight.data.mul_(input_scale)
    return module


@dataclass(frozen=True)
class NetworkSpec:
    """How an agent's networks are built and initialised (one spec for every network of a module).

    The hidden widths are the module's own arguments (``actor_hidden``/``critic_hidden``, ``hidden``): they
    differ per network, while everything here is shared.

    Args:
        arch: ``mlp`` (observations flattened), or the ``minatar_cnn`` / ``nature_cnn`` conv trunk before the MLP.
        activation: the nonlinearity after every hidden layer.
        init: ``kaiming`` (PyTorch's default layer init) or ``xavier`` (Glorot-uniform, zero biases); section 4.2.
        input_scale: multiplies the first layer's initial weights (the paper's 0.1 lets pruning cut inputs early).
        obs_scale: multiplies observations before the first layer (1/255 for pixels).
        dropout: dropout probability after every hidden activation (SI Figure 14).
    """

    arch: Architecture = "mlp"
    activation: Activation = "tanh"
    init: InitScheme = "kaiming"
    input_scale: float = 1.0
    obs_scale: float = 1.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name, valid in (("arch", ARCHITECTURES), ("activation", tuple(ACTIVATIONS)), ("init", INIT_SCHEMES)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"unknown network {name} {getattr(self, name)!r}; valid: {list(valid)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"network dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def of(cls, spec: NetworkSpec | Mapping[str, Any], default: NetworkSpec | None = None) -> NetworkSpec:
        """``spec`` itself, or ``default`` with the options a mapping gives (checkpoints store a plain dict)."""
        if isinstance(spec, cls):
            return spec
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ConfigError(f"unknown network option(s) {unknown}; valid: {names}")
        return replace(default or cls(), **spec)

    def build(
        self, obs_shape: Sequence[int], out_features: int, hidden: Sequence[int], members: int = 1
    ) -> nn.Sequential:
        """:func:`network` for this spec (a population when ``members > 1``), initialised with :meth:`initialize`."""
        net = network(
            obs_shape, out_features, hidden, self.arch, self.activation, self.dropout, self.obs_scale, members
        )
        return self.initialize(net)

    def initialize(self, module: nn.Module) -> nn.Module:
        """Fresh initial weights for every Linear/Conv layer of ``module`` (:func:`initialize` with this spec)."""
        return initialize(module, self.init, self.input_scale)
