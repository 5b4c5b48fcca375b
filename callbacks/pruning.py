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

The same callback prunes a *population* (K independent networks trained as one module whose parameters all
carry a leading member dimension K): every member is its own IMP chain, see :class:`PruningCallback`.
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
from .seeding import pruning_seed

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MaskSource = Callable[[int], Mapping[str, Tensor] | None]
FreshDraw = Callable[[torch.Generator, Mapping[str, Tensor]], dict[str, Tensor]]


class PruningCallback(Callback):
    """Global magnitude pruning between fits (docs/ARCHITECTURE.md, "Pruning rules the code holds to").

    Args:
        amount: fraction of the remaining prunable weights removed per level.
        condition: a registered condition (:mod:`.conditions`): ``mask/weights``, ``mask/permuted``,
            ``permuted/permuted``, ``random/reinit``, ``mask/reinit``, or one added with ``register_condition``.
            For a population: one condition for every member, or one per member.
        modules: names or glob patterns of sub-modules whose Linear/Conv weights are pruned (a name also
            selects everything below it); ``None`` selects every such layer.
        rewind: ``"init"``, or an int: late rewinding to the weights after that many optimizer steps of the
            first fit.
        prune_from: ``"best"`` (weights at the best ``monitor`` value seen during the fit) or ``"last"``.
            Weights holding NaN/inf are never kept as the best; if the weights pruned from hold some (a diverged
            fit), they rank as the smallest magnitudes and are pruned first, with a warning.
        monitor, mode: the metric that defines "best" and whether higher (``max``) or lower is better.
        seed: seeds every random choice together with the level, so a seed gives the same masks bit for bit.
            For a population: one seed for every member, or one per member.
        mask_source: optional ``level -> masks``; when given, the next level's mask is taken from it instead
            of from this model's weights (branches that reuse a stored ticket chain's masks). It returns
            ``None`` where the source has no such level: the chain ends there and the model stays as trained.
            Solo models only.
        members: optional population size K, for loading member states (:meth:`load_member_state_dict`)
            before the first fit when neither ``condition`` nor ``seed`` lists K values.

    Populations. A ``LightningModule`` with an int attribute ``members`` > 1 is a population of K = ``members``
    independent networks: every parameter has a leading member dimension K (batched Linear/Conv layers subclass
    ``nn.Linear`` / ``nn.Conv*``, weight ``[K, out, in, ...]``), and member k's network is
    ``{name: p[k] for name, p in module.named_parameters()}`` with the solo network's parameter names. No such
    attribute, or ``members == 1``, is an ordinary (solo) model. For a population:

    * ``condition`` and ``seed`` give one value for all members or exactly K values (checked at fit start);
    * each member is its own IMP chain with exactly the solo semantics (own condition, generator, level,
      masks, rewind and start state, best score and weights, NaN/inf handling): its masks and next weights are
      those a solo callback computes from that member's weights. Optimizer steps (late rewinding) are counted
      once for all members;
    * member k's score is ``trainer.callback_metrics[f"{monitor}/{k}"]`` (the module logs one per member);
    * fresh-init conditions call the module's ``reset_parameters()`` under a seed from member k's generator
      and take member k's slices of that fresh draw;
    * one gradient hook per prunable parameter and the step post-hook apply the stacked member masks
      ``[K, ...]``, so pruned weights stay exactly 0 in every member;
    * read-outs per member: :meth:`member_masks`, :meth:`member_rewind_state`, :meth:`member_trained_weights`,
      :meth:`member_state_dict` / :meth:`load_member_state_dict` (exactly the solo layout, so a member's state
      loads into a solo callback and back); ``masks``, ``rewind_state`` and ``trained_weights`` give the
      members' tensors stacked ``[K, ...]``; ``state_dict()`` is ``{"members": [member states]}``.
    """

    def __init__(
        self,
        amount: float = 0.2,
        condition: str | Sequence[str] = "mask/weights",
        modules: Sequence[str] | None = None,
        rewind: str | int = "init",
        prune_from: str = "best",
        monitor: str = "eval/return",
        mode: str = "max",
        seed: int | Sequence[int] = 0,
        mask_source: MaskSource | None = None,
        members: int | None = None,
    ) -> None:
        conditions = [condition] if isinstance(condition, str) else list(condition)
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if not conditions or not seeds:
            raise ValueError("condition and seed need at least one value each")
        for name in conditions:
            get_condition(name)  # a ValueError naming the valid ones
        if not all(isinstance(s, int) for s in seeds):
            raise ValueError(f"seeds must be ints, got {seeds}")
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        if prune_from not in ("best", "last"):
            raise ValueError(f"prune_from must be 'best' or 'last', got {prune_from!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if rewind != "init" and not (isinstance(rewind, int) and rewind >= 0):
            raise ValueError(f"rewind must be 'init' or a number of optimizer steps >= 0, got {rewind!r}")
        if members is not None and not (isinstance(members, int) and members >= 1):
            raise ValueError(f"members must be an int >= 1, got {members!r}")
        sizes = {
            f"{len(conditions)} conditions": len(conditions) if len(conditions) > 1 else None,
            f"{len(seeds)} seeds": len(seeds) if len(seeds) > 1 else None,
            f"members={members}": members,
        }
        sizes = {what: n for what, n in sizes.items() if n is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inconsistent population sizes: {', '.join(sizes)}")
        self._size: int | None = next(iter(sizes.values()), None)
        self._size_from = next(iter(sizes), "")
        if mask_source is not None and (self._size or 1) > 1:
            raise ValueError("mask_source is for solo models only, not for a population")
        self.amount = float(amount)  # plain: a float subclass (a CLI's OpenUnitInterval) would be pickled into states
        self.condition = condition
        self.modules = list(modules) if modules is not None else None
        self.rewind = rewind
        self.prune_from = prune_from
        self.monitor = monitor
        self.mode = mode
        self.seed = seed
        self.mask_source = mask_source
        self._conditions, self._seeds = conditions, seeds
        self._chains: list[_Chain] = self._new_chains(self._size or 1)
        self._steps = 0
        self._handles: list[Any] = []
        self._prunable: dict[str, nn.Parameter] = {}
        self._tracked: dict[str, nn.Parameter] = {}
        self._masks_now: dict[str, Tensor] = {}  # what the hooks multiply by: the masks, stacked for a population

    # ------------------------------------------------------------------ public read-outs
    @property
    def population(self) -> bool:
        """Whether the callback holds a population's chains (more than one member)."""
        return len(self._chains) > 1

    @property
    def members(self) -> int:
        """Number of chains: 1 for a solo model, K for a population (known from the first fit or the arguments)."""
        return len(self._chains)

    @property
    def level(self) -> int:
        """The level the next fit trains (every member's, for a population)."""
        levels = {c.level for c in self._chains}
        if len(levels) > 1:
            raise ValueError(f"the members are at different levels {[c.level for c in self._chains]}")
        return levels.pop()

    @property
    def masks(self) -> dict[str, Tensor]:
        """The masks of the prunable weights; for a population the members' masks stacked ``[K, ...]``."""
        return self._chains[0].masks if not self.population else self._stacked(lambda c: c.masks)

    @property
    def density(self) -> float:
        """Global density of the prunable weights (1.0 before the first pruning); over all members together."""
        masks = self.masks
        return density(masks) if masks else 1.0

    @property
    def rewind_state(self) -> dict[str, Tensor]:
        """The rewind-point values of every tracked parameter (empty until captured); stacked for a population."""
        return dict(self._chains[0].rewind_state) if not self.population else self._stacked(lambda c: c.rewind_state)

    @property
    def trained_weights(self) -> dict[str, Tensor]:
        """Every tracked parameter as the last pruning took it (the best snapshot with ``prune_from="best"``,
        else the last weights): what its masks were computed from. Stacked ``[K, ...]`` for a population."""
        if not self.population:
            return dict(self._chains[0].trained_weights)
        return self._stacked(lambda c: c.trained_weights)

    def member_masks(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s masks (solo shapes)."""
        return dict(self._member(k).masks)

    def member_rewind_state(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s rewind-point values of every tracked parameter (solo shapes)."""
        return dict(self._member(k).rewind_state)

    def member_trained_weights(self, k: int) -> dict[str, Tensor]:
        """Member ``k``'s :attr:`trained_weights` (solo shapes)."""
        return dict(self._member(k).trained_weights)

    def member_weights(self, k: int) -> dict[str, Tensor]:
        """A copy of member ``k``'s tracked parameters as they are now (solo shapes); after a fit's training, before
        :meth:`on_fit_end` prunes, the weights the fit ended with."""
        return _snapshot(self._member(k).tracked)

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member ``k``'s chain state, exactly a solo callback's ``state_dict()`` layout."""
        return self._member(k).state_dict(self.amount, self._steps)

    def load_member_state_dict(self, k: int, state_dict: dict[str, Any]) -> None:
        """Restore member ``k``'s chain from a solo-layout state (a solo callback's or a member's)."""
        if len(self._chains) == 1 and self._size is None:
            raise ValueError("the population size is not known yet: pass members=K (or K conditions or seeds), "
                             "or load every member at once with load_state_dict({'members': [...]})")
        self._steps = self._member(k).load_state_dict(state_dict)

    def prune_members(self, pl_module: LightningModule,
                      fitted: Mapping[int, tuple[dict[str, Any], Mapping[str, Tensor]]]) -> None:
        """End for members ``k`` of ``fitted`` a fit that ran on another model (one fit shared by several chains of a
        seed): member k takes that fit's chain state before pruning (:meth:`member_state_dict` after training, of
        any condition) and its final weights (:meth:`member_weights`), then is pruned as :meth:`on_fit_end` would
        prune it, with its own condition and generator."""
        self._discover(pl_module)
        for k, (state, weights) in fitted.items():
            chain = self._member(k)
            self._steps = chain.load_state_dict({**state, "condition": chain.condition})
            _write(chain.tracked, weights)
        self._prune(pl_module, list(fitted))

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._discover(pl_module)
        for chain in self._chains:
            chain.start(self.rewind == "init")
        self._masks_now = self._hook_masks()
        self._apply_masks()
        for name, param in self._prunable.items():
            self._handles.append(param.register_hook(_mask_grad(self._masks_now[name])))
        for optimizer in trainer.optimizers:
            self._handles.append(optimizer.register_step_post_hook(self._after_step))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for k, chain in enumerate(self._chains):
            key = self._monitor_key(k)
            if key in trainer.callback_metrics:
                chain.observe(float(trainer.callback_metrics[key]), self.mode)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()
        if not all(chain.rewind_state for chain in self._chains):
            raise RuntimeError(
                f"late rewinding to step {self.rewind} was asked for, but the first fit made only {self._steps} "
                "optimizer steps"
            )
        self._prune(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        for chain in self._chains:
            chain.forget_best()  # a failed fit's best must not leak into the next

    def state_dict(self) -> dict[str, Any]:
        if self.population:
            return {"members": [self.member_state_dict(k) for k in range(len(self._chains))]}
        return self.member_state_dict(0)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "members" in state_dict:
            states = list(state_dict["members"])
            self._ensure_chains(len(states))
            for chain, state in zip(self._chains, states):
                self._steps = chain.load_state_dict(state)
        else:
            self._ensure_chains(1)
            self._steps = self._chains[0].load_state_dict(state_dict)

    # ------------------------------------------------------------------ solo internals kept for introspection
    @property
    def _best_score(self) -> float | None:
        return self._chains[0].best_score

    @property
    def _best_weights(self) -> dict[str, Tensor]:
        return self._chains[0].best_weights

    # ------------------------------------------------------------------ internals
    def _new_chains(self, k: int) -> list[_Chain]:
        def pick(values: list, i: int) -> Any:
            return values[i] if len(values) > 1 else values[0]

        return [_Chain(pick(self._conditions, i), pick(self._seeds, i)) for i in range(k)]

    def _monitor_key(self, k: int) -> str:
        """The metric holding member ``k``'s score: ``monitor`` itself for a solo model."""
        return self.monitor if len(self._chains) == 1 else f"{self.monitor}/{k}"

    def _member(self, k: int) -> _Chain:
        if not 0 <= k < len(self._chains):
            raise IndexError(f"member {k} out of range: the callback has {len(self._chains)} member(s)")
        return self._chains[k]

    def _ensure_chains(self, k: int) -> None:
        """Make one chain per member: the configured ones, or (still untouched) re-made for ``k`` members."""
        if len(self._chains) == k:
            return
        if self._size is not None:
            raise ValueError(f"the callback was given {self._size_from}, but the model has members={k}")
        if not all(chain.untouched() for chain in self._chains):
            raise ValueError(f"the callback holds the state of {len(self._chains)} member(s), but the model has "
                             f"members={k}")
        if k > 1 and self.mask_source is not None:
            raise ValueError(f"mask_source is for solo models only, not for a population (members={k})")
        self._chains = self._new_chains(k)

    def _discover(self, pl_module: nn.Module) -> None:
        """Find the prunable weights (selected Linear/Conv layers) and every parameter to rewind, and give each
        member's chain its tensors (the parameters themselves, or a population member's slices of them)."""
        members = getattr(pl_module, "members", None)
        if members is not None and (not isinstance(members, int) or isinstance(members, bool) or members < 1):
            raise ValueError(f"the model's members attribute must be an int >= 1, got {members!r}")
        members = members or 1
        self._ensure_chains(members)
        prunable: dict[str, nn.Parameter] = {}
        seen: set[int] = set()
        for name, module in pl_module.named_modules():
            if isinstance(module, PRUNABLE_TYPES) and self._selected(name) and id(module.weight) not in seen:
                prunable[f"{name}.weight"] = module.weight
                seen.add(id(module.weight))
        if not prunable:
            names = [n for n, m in pl_module.named_modules() if isinstance(m, PRUNABLE_TYPES)]
            raise ValueError(f"modules={self.modules} selects no Linear/Conv layer; layers are: {names}")
        tracked = dict(prunable)
        for name, param in pl_module.named_parameters():
            if id(param) not in seen:
                tracked[name] = param
                seen.add(id(param))
        if members == 1:
            self._chains[0].bind(prunable, tracked)
        else:
            wrong = {n: tuple(p.shape) for n, p in tracked.items() if p.dim() == 0 or p.shape[0] != members}
            if wrong:
                raise ValueError(f"a population of members={members} needs a leading member dimension of "
                                 f"{members} on every parameter; these have none: {wrong}")
            for k, chain in enumerate(self._chains):  # views: writes through them land in the batched parameters
                chain.bind({n: p.detach()[k] for n, p in prunable.items()},
                           {n: p.detach()[k] for n, p in tracked.items()})
        self._prunable, self._tracked = prunable, tracked

    def _selected(self, name: str) -> bool:
        if self.modules is None:
            return True
        return any(
            name == pattern or name.startswith(pattern + ".") or fnmatch.fnmatchcase(name, pattern)
            for pattern in self.modules
        )

    def _stacked(self, part: Callable[[_Chain], Mapping[str, Tensor]]) -> dict[str, Tensor]:
        first = part(self._chains[0])
        return {name: torch.stack([part(c)[name] for c in self._chains]) for name in first}

    def _hook_masks(self) -> dict[str, Tensor]:
        """The masks the hooks apply, per prunable parameter: a solo chain's own, or the members' stacked."""
        if not self.population:
            return {name: self._chains[0].masks[name] for name in self._prunable}
        return {name: torch.stack([c.masks[name] for c in self._chains]).to(param.device)
                for name, param in self._prunable.items()}

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, param in self._prunable.items():
            param.mul_(self._masks_now[name])

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._apply_masks()
        self._steps += 1
        if self.rewind != "init" and self._steps >= self.rewind:
            for chain in self._chains:
                if not chain.rewind_state:
                    chain.rewind_state = _snapshot(chain.tracked)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _fresh_draw(self, pl_module: nn.Module, generator: torch.Generator,
                    tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A fresh draw of ``tensors`` (every tracked parameter, or a member's slices of them), from the module's
        ``reset_parameters()`` if it has one (so its own init scheme is used), else from each layer's; the model
        itself is left unchanged."""
        saved = _snapshot(self._tracked)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            reset = getattr(pl_module, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for module in pl_module.modules():
                    if hasattr(module, "reset_parameters") and module is not pl_module:
                        module.reset_parameters()
            fresh = _snapshot(tensors)
        _write(self._tracked, saved)
        return fresh

    def _prune(self, pl_module: nn.Module, members: Sequence[int] | None = None) -> None:
        def fresh(generator: torch.Generator, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return self._fresh_draw(pl_module, generator, tensors)

        for k in range(len(self._chains)) if members is None else members:
            chain = self._chains[k]
            chain.prune(self.amount, self.prune_from, self._monitor_key(k), fresh, self.mask_source)


class _Chain:
    """One IMP chain over named tensors: a solo model's parameters, or one population member's slices of them
    (views: writes land in the batched parameters). Holds the chain's whole state between fits."""

    def __init__(self, condition: str, seed: int) -> None:
        self.condition, self.seed = condition, seed
        self.level = 0
        self.masks: dict[str, Tensor] = {}
        self.rewind_state: dict[str, Tensor] = {}
        self.start_state: dict[str, Tensor] = {}
        self.best_score: float | None = None
        self.best_weights: dict[str, Tensor] = {}
        self.trained_weights: dict[str, Tensor] = {}
        self.prunable: dict[str, Tensor] = {}
        self.tracked: dict[str, Tensor] = {}

    def untouched(self) -> bool:
        return not (self.level or self.masks or self.rewind_state or self.start_state or self.best_weights)

    def bind(self, prunable: dict[str, Tensor], tracked: dict[str, Tensor]) -> None:
        if self.masks and set(self.masks) != set(prunable):
            raise ValueError("the model's prunable layers differ from the ones the stored masks were made for")
        self.prunable, self.tracked = prunable, tracked

    def start(self, rewind_init: bool) -> None:
        if not self.masks:
            self.masks = full_masks(self.prunable)
        if self.start_state:
            _write(self.tracked, self.start_state)  # a chain restored from stored state starts from its weights
            self.start_state = {}
        if not self.rewind_state and rewind_init:
            self.rewind_state = _snapshot(self.tracked)

    def observe(self, score: float, mode: str) -> None:
        if math.isnan(score):
            return
        better = self.best_score is None or (score > self.best_score if mode == "max" else score < self.best_score)
        if better and all(bool(torch.isfinite(p).all()) for p in self.prunable.values()):
            # weights with NaN/inf values never become the best: pruning from them would be pruning from noise
            self.best_score = score
            self.best_weights = _snapshot(self.tracked)

    def forget_best(self) -> None:
        self.best_score, self.best_weights = None, {}

    def generator(self, level: int) -> torch.Generator:
        return torch.Generator().manual_seed(pruning_seed(self.seed, level))

    def prune(self, amount: float, prune_from: str, monitor: str, fresh_draw: FreshDraw,
              mask_source: MaskSource | None) -> None:
        if prune_from == "best" and not self.best_weights:
            rank_zero_warn(
                f"prune_from='best' but {monitor!r} was never logged in validation: pruning from the last weights"
            )
        source = self.best_weights if prune_from == "best" and self.best_weights else _snapshot(self.tracked)
        self.trained_weights = source
        level = self.level + 1
        generator = self.generator(level)
        if mask_source is not None:
            stored = mask_source(level)
            if stored is None:
                return
            imp_masks = {name: m.to(torch.bool) for name, m in stored.items()}
        else:
            bad = sum(int((~torch.isfinite(source[n]) & self.masks[n].to(source[n].device)).sum()) for n in self.masks)
            if bad:
                rank_zero_warn(f"{bad} surviving weights to prune from are NaN or infinite (a diverged fit?): "
                               "they rank as the smallest magnitudes and are pruned first")
            imp_masks = global_magnitude_masks(source, self.masks, amount)
        condition = get_condition(self.condition)
        base = fresh_draw(generator, self.tracked) if condition.fresh_init else self.rewind_state
        masks, weights = condition.make(
            imp_masks,
            {n: self.rewind_state[n] for n in self.prunable},
            {n: base[n] for n in self.prunable} if condition.fresh_init else {},
            generator,
        )
        _write(self.tracked, {**base, **weights})
        self.start_state = _snapshot(self.tracked)  # makes state_dict() enough to start the next level
        self.masks = masks
        self.level = level
        self.forget_best()

    def state_dict(self, amount: float, steps: int) -> dict[str, Any]:
        return {
            "level": self.level,
            "condition": self.condition,
            "seed": self.seed,
            "amount": amount,
            "masks": self.masks,
            "rewind_state": self.rewind_state,
            "start_state": self.start_state,
            "steps": steps,
            "best_score": self.best_score,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> int:
        """Restore the chain; returns the stored optimizer step count."""
        if state_dict["condition"] != self.condition:
            raise ValueError(f"state is for condition {state_dict['condition']!r}, not {self.condition!r}")
        self.level = state_dict["level"]
        self.masks = dict(state_dict["masks"])
        self.rewind_state = dict(state_dict["rewind_state"])
        self.start_state = dict(state_dict["start_state"])
        self.best_score = state_dict["best_score"]
        self.best_weights = dict(state_dict["best_weights"])
        return state_dict["steps"]


def _snapshot(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in tensors.items()}


@torch.no_grad()
def _write(tensors: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> None:
    for name, value in values.items():
        tensors[name].copy_(value)


def _mask_grad(mask: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda grad: grad * mask
