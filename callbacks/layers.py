"""Which weights a :class:`callbacks.pruning.PruningCallback` prunes and rewinds, and fresh draws of them: the
selected Linear/Conv layers' weights (:func:`find_weights`), every other parameter tracked for rewinding, and
:func:`fresh_draw` for the re-initialised conditions."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .chain_state import snapshot, write

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def selects(name: str, patterns: Sequence[str] | None) -> bool:
    """Whether module ``name`` is selected by ``patterns`` (a name also selects everything below it; glob patterns;
    ``None`` selects every module)."""
    if patterns is None:
        return True
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p) for p in patterns)


def find_weights(module: nn.Module, patterns: Sequence[str] | None
                 ) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """The prunable weights (of the Linear/Conv layers ``patterns`` selects) and every parameter to rewind (those
    weights first, then every other parameter), by name; shared parameters once. ``ValueError`` if none is
    selected."""
    prunable: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, layer in module.named_modules():
        if isinstance(layer, PRUNABLE_TYPES) and selects(name, patterns) and id(layer.weight) not in seen:
            prunable[f"{name}.weight"] = layer.weight
            seen.add(id(layer.weight))
    if not prunable:
        names = [n for n, m in module.named_modules() if isinstance(m, PRUNABLE_TYPES)]
        raise ValueError(f"modules={None if patterns is None else list(patterns)} selects no Linear/Conv layer; "
                         f"layers are: {names}")
    tracked = dict(prunable)
    for name, param in module.named_parameters():
        if id(param) not in seen:
            tracked[name] = param
            seen.add(id(param))
    return prunable, tracked


def fresh_draw(module: nn.Module, tracked: Mapping[str, Tensor], generator: torch.Generator,
               tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A fresh draw of ``tensors`` (the ``tracked`` parameters, or a member's slices of them), from the module's
    ``reset_parameters()`` if it has one (so its own init scheme is used), else from each layer's, under a seed
    from ``generator``; the module itself is left unchanged."""
    saved = snapshot(tracked)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for layer in module.modules():
                if hasattr(layer, "reset_parameters") and layer is not module:
                    layer.reset_parameters()
        fresh = snapshot(tensors)
    write(tracked, saved)
    return fresh
