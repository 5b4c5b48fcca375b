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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from .chain_state import ChainState, MaskSource, snapshot, write
from .conditions import get_condition
from .layers import find_weights, fresh_draw
from .masks import density


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

    Populations. A ``LightningModule`` with an int attribute ``members`` = K >= 1 is K independent networks whose
    parameters all lead with the member dimension (member k's network is ``{name: p[k]}``, the solo names); a
    model without it is an ordinary model, one chain. Then ``condition`` and ``seed`` give one value or exactly K
    (checked at fit start); each member is its own IMP chain with exactly the solo semantics (own condition,
    generator, level, masks, rewind and start state, best score and weights), scored by
    ``callback_metrics[f"{monitor}/{k}"]``; fresh-init conditions take member k's slices of a
    ``reset_parameters()`` draw seeded from member k's generator; the hooks apply the stacked masks. Read member
    k through :meth:`member_masks`, :meth:`member_rewind_state`, :meth:`member_trained_weights` and
    :meth:`member_state_dict` / :meth:`load_member_state_dict` (a solo callback's layout); ``masks``,
    ``rewind_state`` and ``trained_weights`` are laid out as the model's parameters (the members stacked
    ``[K, ...]``); with K > 1 ``state_dict()`` is ``{"members": [member states]}``. Optimizer steps (late
    rewinding) are counted once for all members.
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
        self._size: int | None
        self._size, self._size_from = _check_arguments(amount, conditions, seeds, rewind, prune_from, mode, members)
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
        self._chains: list[ChainState] = self._new_chains(self._size or 1)
        self._steps = 0
        self._handles: list[Any] = []
        self._prunable: dict[str, nn.Parameter] = {}
        self._tracked: dict[str, nn.Parameter] = {}
        self._masks_now: dict[str, Tensor] = {}  # what the hooks multiply by: the masks, stacked for a population
        self._member_dim = (self._size or 1) > 1  # whether the model's parameters lead with a member dim

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
        """The masks of the prunable weights, laid out as the model's parameters (a population's stacked ``[K, ...]``)."""
        return self._combined(lambda c: c.masks)

    @property
    def density(self) -> float:
        """Global density of the prunable weights (1.0 before the first pruning); over all members together."""
        masks = self.masks
        return density(masks) if masks else 1.0

    @property
    def rewind_state(self) -> dict[str, Tensor]:
        """The rewind-point values of every tracked parameter (empty until captured), laid out as the parameters."""
        return self._combined(lambda c: c.rewind_state)

    @property
    def trained_weights(self) -> dict[str, Tensor]:
        """Every tracked parameter as the last pruning took it (the best snapshot with ``prune_from="best"``,
        else the last weights): what its masks were computed from. Laid out as the parameters."""
        return self._combined(lambda c: c.trained_weights)

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
        return snapshot(self._member(k).tracked)

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
            write(chain.tracked, weights)
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
            self._member_dim = True
            for chain, state in zip(self._chains, states):
                self._steps = chain.load_state_dict(state)
        else:
            self._ensure_chains(1)
            self._steps = self._chains[0].load_state_dict(state_dict)

    # ------------------------------------------------------------------ internals
    def _new_chains(self, k: int) -> list[ChainState]:
        def pick(values: list, i: int) -> Any:
            return values[i] if len(values) > 1 else values[0]

        return [ChainState(pick(self._conditions, i), pick(self._seeds, i)) for i in range(k)]

    def _monitor_key(self, k: int) -> str:
        """The metric holding member ``k``'s score: ``monitor`` itself for a solo model."""
        return self.monitor if len(self._chains) == 1 else f"{self.monitor}/{k}"

    def _member(self, k: int) -> ChainState:
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
        self._member_dim = hasattr(pl_module, "members")  # else an ordinary model: one chain over its parameters
        members = getattr(pl_module, "members", 1)
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise ValueError(f"the model's members attribute must be an int >= 1, got {members!r}")
        self._ensure_chains(members)
        prunable, tracked = find_weights(pl_module, self.modules)
        if self._member_dim:
            wrong = {n: tuple(p.shape) for n, p in tracked.items() if p.dim() == 0 or p.shape[0] != members}
            if wrong:
                raise ValueError(f"a population of members={members} needs a leading member dimension of "
                                 f"{members} on every parameter; these have none: {wrong}")

        def layout(p: Tensor) -> Tensor:  # the parameter as [members, ...] views
            return p.detach() if self._member_dim else p.detach().unsqueeze(0)

        for k, chain in enumerate(self._chains):  # views: writes through them land in the parameters
            chain.bind({n: layout(p)[k] for n, p in prunable.items()}, {n: layout(p)[k] for n, p in tracked.items()})
        self._prunable, self._tracked = prunable, tracked

    def _combined(self, part: Callable[[ChainState], Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """``part`` of the chains laid out as the model's parameters: a plain model's chain's own tensors, or the
        members' stacked ``[K, ...]``."""
        if not self._member_dim:
            return dict(part(self._chains[0]))
        first = part(self._chains[0])
        return {name: torch.stack([part(c)[name] for c in self._chains]) for name in first}

    def _hook_masks(self) -> dict[str, Tensor]:
        """The masks the hooks apply, per prunable parameter, on its device."""
        masks = self._combined(lambda c: c.masks)
        return {name: masks[name].to(param.device) for name, param in self._prunable.items()}

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
                    chain.rewind_state = snapshot(chain.tracked)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _prune(self, pl_module: nn.Module, which: Sequence[int] | None = None) -> None:
        """Prune the chains ``which`` (all)."""
        def fresh(generator: torch.Generator, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return fresh_draw(pl_module, self._tracked, generator, tensors)

        for k in range(len(self._chains)) if which is None else which:
            chain = self._chains[k]
            chain.prune(self.amount, self.prune_from, self._monitor_key(k), fresh, self.mask_source)



def _check_arguments(amount: float, conditions: list[str], seeds: list[int], rewind: str | int, prune_from: str,
                     mode: str, members: int | None) -> tuple[int | None, str]:
    """``ValueError`` naming a bad argument; else the population size the arguments fix (``None``: any) and
    what fixed it."""
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
    return next(iter(sizes.values()), None), next(iter(sizes), "")


def _mask_grad(mask: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda grad: grad * mask
