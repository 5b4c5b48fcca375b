"""Network builders and the paper's initialisation schemes (section 4.2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

InitScheme = Literal["kaiming", "xavier"]
INIT_SCHEMES: tuple[str, ...] = ("kaiming", "xavier")
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A plain MLP ``in -> hidden... -> out``; dropout (SI Figure 14) follows every hidden activation."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def weight_layers(module: nn.Module) -> list[nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    """The Linear/Conv layers of ``module`` in forward (registration) order."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def initialize(module: nn.Module, scheme: str = "kaiming", input_scale: float = 1.0) -> nn.Module:
    """Re-initialise every Linear/Conv layer of ``module`` in place and return it.

    ``kaiming`` is PyTorch's default layer init (kaiming-uniform, a=sqrt(5)); ``xavier`` is Glorot-uniform
    weights with zero biases. ``input_scale`` multiplies the first layer's weights afterwards: the paper's
    rescaling (0.1) that lets global magnitude pruning cut irrelevant input dimensions early.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; valid: {list(INIT_SCHEMES)}")
    layers = weight_layers(module)
    for layer in layers:
        if scheme == "kaiming":
            layer.reset_parameters()
        else:
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    if layers and input_scale != 1.0:
        layers[0].weight.data.mul_(input_scale)
    return module
