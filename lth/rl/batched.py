"""Populations: K independent networks trained as one, every parameter with a leading member dimension K.

Member ``k`` of a batched network is ``{name: p[k] for name, p in net.named_parameters()}`` and loads into
the ordinary solo network (same names, solo shapes). The layers subclass ``nn.Linear`` / ``nn.Conv2d`` so
code that finds prunable layers with ``isinstance`` finds them too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair, _reverse_repeat_tuple


def _reset_member(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default Linear/Conv init (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))) of one member."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound)


def reset_members(layer: nn.Module) -> None:
    """Re-initialise every member slice of a batched layer exactly as its solo layer type does, member by member."""
    with torch.no_grad():
        for k in range(layer.weight.shape[0]):
            _reset_member(layer.weight[k], None if layer.bias is None else layer.bias[k])


def _member_parameters(layer: nn.Module, weight_shape: tuple[int, ...], bias: bool) -> None:
    """Give ``layer`` a ``weight`` of ``weight_shape`` ``[members, out, ...]`` (and a ``[members, out]`` bias), drawn."""
    layer.weight = nn.Parameter(torch.empty(weight_shape))
    if bias:
        layer.bias = nn.Parameter(torch.empty(weight_shape[:2]))
    else:
        layer.register_parameter("bias", None)
    layer.reset_parameters()


class BatchedLinear(nn.Linear):
    """``members`` independent ``nn.Linear(in_features, out_features)`` layers: input ``[K, *batch, in]``."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        nn.Module.__init__(self)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.members = members
        self.in_features = in_features
        self.out_features = out_features
        _member_parameters(self, (members, out_features, in_features), bias)

    def reset_parameters(self) -> None:
        """Each member's slice drawn as ``nn.Linear.reset_parameters`` would, member by member."""
        reset_members(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[0] != self.members or x.shape[-1] != self.in_features:
            raise ValueError(
                f"BatchedLinear expects input [{self.members}, *batch, {self.in_features}], got {tuple(x.shape)}"
            )
        flat = x.reshape(self.members, math.prod(x.shape[1:-1]), self.in_features)
        weight_t = self.weight.transpose(1, 2)
        out = torch.bmm(flat, weight_t) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), flat, weight_t)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class BatchedConv2d(nn.Conv2d):
    """``members`` independent ``nn.Conv2d`` layers as one grouped conv: input ``[K, *batch, C, H, W]``."""

    def __init__(
        self,
        members: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        if isinstance(padding, str):
            raise ValueError("BatchedConv2d takes numeric padding only")
        self.members = members
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = (1, 1)
        self.transposed = False
        self.output_padding = (0, 0)
        self.groups = 1  # per member; the members are the groups of the underlying conv
        self.padding_mode = "zeros"
        self._reversed_padding_repeated_twice = list(_reverse_repeat_tuple(self.padding, 2))
        _member_parameters(self, (members, out_channels, in_channels, *self.kernel_size), bias)

    def reset_parameters(self) -> None:
        """Each member's slice drawn as ``nn.Conv2d.reset_parameters`` would, member by member."""
        reset_members(self)

    def forward(self, x: Tensor) -> Tensor:
        k, c = self.members, self.in_channels
        if x.dim() < 4 or x.shape[0] != k or x.shape[-3] != c:
            raise ValueError(f"BatchedConv2d expects input [{k}, *batch, {c}, H, W], got {tuple(x.shape)}")
        batch, (h, w) = x.shape[1:-3], x.shape[-2:]
        n = math.prod(batch)
        grouped = x.reshape(k, n, c, h, w).transpose(0, 1).reshape(n, k * c, h, w)
        weight = self.weight.reshape(k * self.out_channels, c, *self.kernel_size)
        bias = None if self.bias is None else self.bias.reshape(-1)
        out = F.conv2d(grouped, weight, bias, self.stride, self.padding, self.dilation, groups=k)
        out = out.reshape(n, k, self.out_channels, *out.shape[-2:]).transpose(0, 1)
        return out.reshape(k, *batch, self.out_channels, *out.shape[-2:])

    def extra_repr(self) -> str:
        return f"members={self.members}, " + super().extra_repr()


def members_of(module: nn.Module) -> int:
    """How many members ``module`` holds: its batched layers' member count; an ordinary network is one member."""
    layer = next((m for m in module.modules() if isinstance(m, (BatchedLinear, BatchedConv2d))), None)
    return 1 if layer is None else layer.members


def member_major(net: nn.Module, obs: Tensor) -> Tensor:
    """``net``'s outputs for a flat, member-major batch ``[members * copies, ...]`` of observations (what collectors
    and evaluation hand a population's policy): the network sees ``[members, copies, ...]``; the outputs come back
    flat."""
    return net(obs.reshape(members_of(net), -1, *obs.shape[1:])).reshape(*obs.shape[:1], -1)


def member_tensors(tensors: Mapping[str, Tensor], k: int) -> dict[str, Tensor]:
    """Detached clones of member ``k``'s slice of every batched tensor (a solo state dict)."""
    return {name: t.detach()[k].clone() for name, t in tensors.items()}


def stack_members(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Stack solo states (same names and shapes) into one batched state with a leading member dim."""
    if not states:
        raise ValueError("stack_members needs at least one state")
    names = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != set(names):
            raise KeyError(f"state {i} has names {sorted(state)}, state 0 has {sorted(names)}")
    return {name: torch.stack([state[name].detach() for state in states]) for name in names}


def write_member(params: Mapping[str, Tensor], k: int, values: Mapping[str, Tensor]) -> None:
    """Copy solo ``values`` into member ``k``'s slice of the batched ``params`` in place (every name required)."""
    missing = sorted(set(params) - set(values))
    unknown = sorted(set(values) - set(params))
    if missing or unknown:
        raise KeyError(f"write_member: missing names {missing}, unknown names {unknown}")
    with torch.no_grad():
        for name, target in params.items():
            if target.dim() == 0 or not 0 <= k < target.shape[0]:
                raise ValueError(f"write_member: member {k} out of range for {name!r} of shape {tuple(target.shape)}")
            value = values[name]
            if tuple(value.shape) != tuple(target.shape[1:]):
                raise ValueError(
                    f"write_member: {name!r} has solo shape {tuple(target.shape[1:])}, got {tuple(value.shape)}"
                )
            target[k].copy_(value)


def log_member_metrics(loggers: Sequence[Any], metrics: Mapping[str, float | Tensor], members: int, step: int,
                       which: Sequence[int] | None = None) -> None:
    """Send per-member ``metrics`` (``[members]`` tensors, or one value for all) of members ``which`` (all) to
    Lightning ``loggers`` at ``step``: with one logger per member (as ``lth imp`` gives a population, and any
    logger of a solo agent), member k's values go to the k-th logger under the plain names; several loggers
    shared by a population get ``<name>/<k>``, and a solo agent's values go to each of them as they are."""
    values = {name: torch.as_tensor(value, dtype=torch.float64).expand(members).tolist()
              for name, value in metrics.items()}
    for k in range(members) if which is None else which:
        member = {name: v[k] for name, v in values.items()}
        if len(loggers) == members:
            loggers[k].log_metrics(member, step=step)
        else:
            for logger in loggers:
                logger.log_metrics(member if members == 1 else {f"{n}/{k}": v for n, v in member.items()}, step=step)
