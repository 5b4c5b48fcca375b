"""``PruningCallback``: iterative magnitude pruning with rewinding and the ticket conditions, for any
Lightning project.

One fit per level, a fresh ``Trainer`` each time, the same callback and model::

    cb = PruningCallback(amount=0.2, condition="mask/weights")
    for level in range(levels):
        Trainer(callbacks=[cb], ...).fit(model, datamodule)

After each fit the callback prunes (from the best or the last weights), applies the condition, resets the
survivors to the rewind point and leaves the model ready for the next fit. Masks are enforced without
re-parametrising the model (its ``state_dict`` keys stay plain): pruned gradients are zeroed by tensor
hooks and pruned weights are re-zeroed by an optimizer step post-hook, which covers automatic and manual
optimisation, any torch optimizer, and parameters shared with TorchRL losses' ``TensorDictParams``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from .conditions import get_condition
from .masks import density, full_masks, global_magnitude_masks

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MaskSource = Callable[[int], Mapping[str, Tensor] | None]


class PruningCallback(Callback):
    """Global magnitude pruning between fits (docs/ARCHITECTURE.md, "Pruning rules the code holds to").

    Args:
        amount: fraction of the remaining prunable weights removed per level.
        condition: a registered condition (:mod:`.conditions`): ``mask/weights``, ``mask/permuted``,
            ``permuted/permuted``, ``random/reinit``, ``mask/reinit``, or one added with ``register_condition``.
        modules: names or glob patterns of sub-modules whose Linear/Conv weights are pruned (a name also
            selects everything below it); ``None`` selects every such layer.
        rewind: ``"init"``, or an int: late rewinding to the weights after that many optimizer steps of the
            first fit.
        prune_from: ``"best"`` (weights at the best ``monitor`` value seen during the fit) or ``"last"``.
            Weights holding NaN/inf are never kept as the best; if the weights pruned from hold some (a diverged
            fit), they rank as the smallest magnitudes and are pruned first, with a warning.
        monitor, mode: the metric that defines "best" and whether higher (``max``) or lower is better.
        seed: seeds every random choice together with the level, so a seed gives the same masks bit for bit.
        mask_source: optional ``level -> masks``; when given, the next level's mask is taken from it instead
            of from this model's weights (branches that reuse a stored ticket chain's masks). It returns
            ``None`` where the source has no such level: the chain ends there and the model stays as trained.
    """

    def __init__(
        self,
        amount: float = 0.2,
        condition: str = "mask/weights",
        modules: Sequence[str] | None = None,
        rewind: str | int = "init",
        prune_from: str = "best",
        monitor: str = "eval/return",
        mode: str = "max",
        seed: int = 0,
        mask_source: MaskSource | None = None,
    ) -> None:
        get_condition(condition)  # a ValueError naming the valid ones
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        if prune_from not in ("best", "last"):
            raise ValueError(f"prune_from must be 'best' or 'last', got {prune_from!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if rewind != "init" and not (isinstance(rewind, int) and rewind >= 0):
            raise ValueError(f"rewind must be 'init' or a number of optimizer steps >= 0, got {rewind!r}")
        self.amount = amount
        self.condition = condition
        self.modules = list(modules) if modules is not None else None
        self.rewind = rewind
        self.prune_from = prune_from
        self.monitor = monitor
        self.mode = mode
        self.seed = seed
        self.mask_source = mask_source
        self.level = 0
        self.masks: dict[str, Tensor] = {}
        self._rewind_state: dict[str, Tensor] = {}
        self._start_state: dict[str, Tensor] = {}
        self._steps = 0
        self._best_score: float | None = None
        self._best_weights: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        self._prunable: dict[str, nn.Parameter] = {}
        self._tracked: dict[str, nn.Parameter] = {}

    # ------------------------------------------------------------------ public read-outs
    @property
    def density(self) -> float:
        """Global density of the prunable weights (1.0 before the first pruning)."""
        return density(self.masks) if self.masks else 1.0

    @property
    def rewind_state(self) -> dict[str, Tensor]:
        """The rewind-point values of every tracked parameter (empty until captured)."""
        return dict(self._rewind_state)

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._discover(pl_module)
        if not self.masks:
            self.masks = full_masks(self._prunable)
        if self._start_state:
            self._write(self._start_state)  # a chain restored from stored state starts from its weights
            self._start_state = {}
        if not self._rewind_state and self.rewind == "init":
            self._rewind_state = self._snapshot(self._tracked)
        self._apply_masks()
        for name, param in self._prunable.items():
            self._handles.append(param.register_hook(_mask_grad(self.masks[name])))
        for optimizer in trainer.optimizers:
            self._handles.append(optimizer.register_step_post_hook(self._after_step))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if math.isnan(score):
            return
        better = self._best_score is None or (
            score > self._best_score if self.mode == "max" else score < self._best_score
        )
        if better and all(bool(torch.isfinite(p).all()) for p in self._prunable.values()):
            # weights with NaN/inf values never become the best: pruning from them would be pruning from noise
            self._best_score = score
            self._best_weights = self._snapshot(self._prunable)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()
        if not self._rewind_state:
            raise RuntimeError(
                f"late rewinding to step {self.rewind} was asked for, but the first fit made only {self._steps} "
                "optimizer steps"
            )
        self._prune(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        self._best_score, self._best_weights = None, {}  # a failed fit's best must not leak into the next

    def state_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "condition": self.condition,
            "seed": self.seed,
            "amount": self.amount,
            "masks": self.masks,
            "rewind_state": self._rewind_state,
            "start_state": self._start_state,
            "steps": self._steps,
            "best_score": self._best_score,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["condition"] != self.condition:
            raise ValueError(f"state is for condition {state_dict['condition']!r}, not {self.condition!r}")
        self.level = state_dict["level"]
        self.masks = dict(state_dict["masks"])
        self._rewind_state = dict(state_dict["rewind_state"])
        self._start_state = dict(state_dict["start_state"])
        self._steps = state_dict["steps"]
        self._best_score = state_dict["best_score"]
        self._best_weights = dict(state_dict["best_weights"])

    # ------------------------------------------------------------------ internals
    def _discover(self, pl_module: LightningModule) -> None:
        """Find the prunable weights (selected Linear/Conv layers) and every parameter to rewind."""
        prunable: dict[str, nn.Parameter] = {}
        seen: set[int] = set()
        for name, module in pl_module.named_modules():
            if isinstance(module, PRUNABLE_TYPES) and self._selected(name) and id(module.weight) not in seen:
                prunable[f"{name}.weight"] = module.weight
                seen.add(id(module.weight))
        if not prunable:
            names = [n for n, m in pl_module.named_modules() if isinstance(m, PRUNABLE_TYPES)]
            raise ValueError(f"modules={self.modules} selects no Linear/Conv layer; layers are: {names}")
        if self.masks and set(self.masks) != set(prunable):
            raise ValueError("the model's prunable layers differ from the ones the stored masks were made for")
        tracked = dict(prunable)
        for name, param in pl_module.named_parameters():
            if id(param) not in seen:
                tracked[name] = param
                seen.add(id(param))
        self._prunable, self._tracked = prunable, tracked

    def _selected(self, name: str) -> bool:
        if self.modules is None:
            return True
        return any(
            name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)
            for pattern in self.modules
        )

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, param in self._prunable.items():
            param.mul_(self.masks[name])

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._apply_masks()
        self._steps += 1
        if not self._rewind_state and self.rewind != "init" and self._steps >= self.rewind:
            self._rewind_state = self._snapshot(self._tracked)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @staticmethod
    def _snapshot(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def _write(self, values: Mapping[str, Tensor]) -> None:
        for name, value in values.items():
            self._tracked[name].copy_(value)

    def _generator(self, level: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + level)

    def _fresh_init(self, pl_module: LightningModule, generator: torch.Generator) -> dict[str, Tensor]:
        """A fresh draw of every tracked parameter, from the module's ``reset_parameters()`` if it has one
        (so its own init scheme is used), else from each layer's; the model itself is left unchanged."""
        saved = self._snapshot(self._tracked)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            reset = getattr(pl_module, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for module in pl_module.modules():
                    if hasattr(module, "reset_parameters") and module is not pl_module:
                        module.reset_parameters()
            fresh = self._snapshot(self._tracked)
        self._write(saved)
        return fresh

    def _prune(self, pl_module: LightningModule) -> None:
        if self.prune_from == "best" and not self._best_weights:
            rank_zero_warn(
                f"prune_from='best' but {self.monitor!r} was never logged in validation: pruning from the last weights"
            )
        source = (
            self._best_weights if self.prune_from == "best" and self._best_weights else self._snapshot(self._prunable)
        )
        level = self.level + 1
        generator = self._generator(level)
        if self.mask_source is not None:
            stored = self.mask_source(level)
            if stored is None:
                return
            imp_masks = {name: m.to(torch.bool) for name, m in stored.items()}
        else:
            bad = sum(int((~torch.isfinite(source[n]) & self.masks[n].to(source[n].device)).sum()) for n in self.masks)
            if bad:
                rank_zero_warn(f"{bad} surviving weights to prune from are NaN or infinite (a diverged fit?): "
                               "they rank as the smallest magnitudes and are pruned first")
            imp_masks = global_magnitude_masks(source, self.masks, self.amount)
        condition = get_condition(self.condition)
        base = self._fresh_init(pl_module, generator) if condition.fresh_init else self._rewind_state
        masks, weights = condition.make(
            imp_masks,
            {n: self._rewind_state[n] for n in self._prunable},
            {n: base[n] for n in self._prunable} if condition.fresh_init else {},
            generator,
        )
        self._write({**base, **weights})
        self._start_state = self._snapshot(self._tracked)  # makes state_dict() enough to start the next level
        self.masks = masks
        self.level = level
        self._best_score, self._best_weights = None, {}


def _mask_grad(mask: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda grad: grad * mask
