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
    """A population of ``members`` MLPs ``in -> hidden... -> out`` (:class:`lth.rl.batched.BatchedLinear` layers;
    one member: an ordinary agent's network): input ``[members, *batch, in]``. Dropout (SI Figure 14) follows every
    hidden activation.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [BatchedLinear(members, width, size), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(BatchedLinear(members, width, out_features))
    return nn.Sequential(*layers)


class ImageTrunk(nn.Module):
    """Applies a population's conv stack to images with any batch dims after the member dim (rollouts are
    ``[members, envs, steps, C, H, W]``): the member dim is kept, the others flattened for the convs and restored."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[0], x.shape[1:-3]
        out = self.layers(x.reshape(members, math.prod(batch), *x.shape[-3:]))
        return out.reshape(members, *batch, out.shape[-1])


def conv_trunk(arch: str, obs_shape: Sequence[int], members: int = 1) -> tuple[ImageTrunk, int]:
    """The convolutional part of ``arch`` for channels-first ``obs_shape`` and its flat output width.

    ``minatar_cnn`` is MinAtar's 16 3x3 filters (paper Table 10); ``nature_cnn`` is Mnih et al.'s 2015 Atari
    trunk (32x8x8/4, 64x4x4/2, 64x3x3/1). Both end in ReLU and a flatten of (channels, height, width).
    A population of ``members`` trunks (:class:`lth.rl.batched.BatchedConv2d`).
    """
    if len(obs_shape) != 3:
        raise ConfigError(f"{arch} needs image observations (channels, height, width), got shape {tuple(obs_shape)}")
    channels = obs_shape[0]
    if arch == "minatar_cnn":
        layers: list[nn.Module] = [BatchedConv2d(members, channels, 16, 3, stride=1), nn.ReLU()]
    else:
        layers = [
            BatchedConv2d(members, channels, 32, 8, stride=4), nn.ReLU(),
            BatchedConv2d(members, 32, 64, 4, stride=2), nn.ReLU(),
            BatchedConv2d(members, 64, 64, 3, stride=1), nn.ReLU(),
        ]  # fmt: skip
    trunk = ImageTrunk(nn.Sequential(*layers, nn.Flatten(-3, -1)))
    probe = torch.zeros(members, 1, *obs_shape)
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
    ``Sequential``, so a vector-input MLP has the same parameter names as :func:`mlp`. A population of ``members``
    independent networks (one: an ordinary agent's), each parameter with a leading member dim: input
    ``[members, *batch, *obs_shape]``, output ``[members, *batch, out_features]``.
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
        """:func:`network` for this spec (a population of ``members``), initialised with :meth:`initialize`."""
        net = network(
            obs_shape, out_features, hidden, self.arch, self.activation, self.dropout, self.obs_scale, members
        )
        return self.initialize(net)

    def initialize(self, module: nn.Module) -> nn.Module:
        """Fresh initial weights for every Linear/Conv layer of ``module`` (:func:`initialize` with this spec)."""
        return initialize(module, self.init, self.input_scale)
