"""Divergence as a result, not a crash: per member of an agent (an ordinary agent is a population of one), spot
non-finite losses, outputs and weights, keep the weights before the last optimizer step and put them back for
the members that diverged, so they stay frozen while the others train on.

Pure tensor bookkeeping: :class:`lth.modules.base.AgentModule` owns the optimizer, the frames and the logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import Tensor, nn

from lth.rl.networks import weight_layers


def _along(flags: Tensor, weight: Tensor) -> Tensor:
    """Per-member ``flags`` ``[members]`` shaped to broadcast over ``weight`` ``[members, ...]``."""
    return flags.reshape(-1, *[1] * (weight.ndim - 1))


def member_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Each member's L2 norm over ``tensors`` (each ``[members, ...]``): ``[members]``, as
    ``torch.nn.utils.get_total_norm`` computes a solo model's: the norm of the per-tensor norms."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1) for t in tensors]), dim=0)


def clip_member_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Each member's gradients scaled to L2 norm at most ``max_norm``: ``clip_grad_norm_`` per member (same
    ``1e-6`` guard), so a member's step does not depend on its population mates."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    scale = (max_norm / (member_norms(grads) + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_along(scale, g))


class DivergenceGuard:
    """Which members diverged (and at which env frames), their last good weights, and the output guard.

    One optimizer step goes: :meth:`nonfinite` (which members' loss or outputs this batch are NaN/inf),
    :meth:`remember` (the weights before the step, except frozen members'), the step, then :meth:`after_step`
    (frozen members back to their last good weights; which members' weights became non-finite).
    """

    def __init__(self, members: int) -> None:
        self.members = members
        #: Per member, the env frames of the fit at which its training diverged, else ``None``.
        self.diverged_at: list[int | None] = [None] * members
        self._weights: list[Tensor] = []  # detached views of the stepped parameters
        self._last_good: list[Tensor] = []  # their values before the last step
        self._nonfinite_outputs = torch.zeros(members, dtype=torch.bool)
        self._hooks: list[Any] = []

    def reset(self) -> None:
        """A new fit: no member diverged, no weights remembered."""
        self.diverged_at = [None] * self.members
        self._weights, self._last_good = [], []

    def frozen(self) -> Tensor:
        """Which members have diverged (``[members]`` bool): their weights stay frozen."""
        return torch.tensor([at is not None for at in self.diverged_at])

    @property
    def diverged(self) -> bool:
        """Whether every member has diverged (then no more steps are taken)."""
        return all(at is not None for at in self.diverged_at)

    def nonfinite(self, loss: Tensor, outputs: Sequence[Tensor]) -> dict[int, str]:
        """The members not yet frozen whose ``loss`` (``[members]``, or a scalar for one member), one of
        ``outputs`` (leading member dim) or a guarded network output this batch is NaN/inf, with the reason."""
        loss_ok = torch.isfinite(loss.detach()).reshape(self.members)
        finite = loss_ok.clone()
        for out in outputs:
            finite &= torch.isfinite(out.detach()).reshape(self.members, -1).all(1)
        guarded = bool(self._hooks)
        if guarded:
            finite &= ~self._nonfinite_outputs
        bad = ~finite & ~self.frozen()
        if not bool(bad.any()):  # one host sync in the common case
            return {}
        return {k: ("a network output is not finite" if guarded and bool(self._nonfinite_outputs[k]) else
                    "an output is not finite" if bool(loss_ok[k]) else "the loss is not finite")
                for k in bad.nonzero().flatten().tolist()}

    def remember(self, parameters: Iterable[nn.Parameter]) -> None:
        """Keep the trained weights before a step (a frozen member's last good weights stay: they are what it keeps)."""
        if not self._weights:  # once per fit: detached views of the trained parameters, and room for a copy
            self._weights = [p.detach() for p in parameters if p.requires_grad]
            self._last_good = [w.clone() for w in self._weights]
            return
        if not any(at is not None for at in self.diverged_at):  # the common case: a plain copy, no allocation
            for good, weight in zip(self._last_good, self._weights, strict=True):
                good.copy_(weight)
            return
        frozen = self.frozen()
        for good, weight in zip(self._last_good, self._weights, strict=True):
            good.copy_(torch.where(_along(frozen, weight), good, weight))

    @torch.no_grad()
    def restore(self, members: Tensor) -> None:
        """Put the weights before the last step back for the members flagged in ``members`` (``[members]`` bool)."""
        for weight, good in zip(self._weights, self._last_good, strict=True):
            weight.copy_(torch.where(_along(members, weight), good, weight))

    def after_step(self) -> list[int]:
        """After an optimizer step: frozen members back to their last good weights (whatever Adam made of them);
        returns the other members whose weights are no longer finite (their L2 norm is NaN/inf, which also
        covers weights whose squares overflow float32) and puts their last good weights back too."""
        frozen = self.frozen()
        if bool(frozen.any()):
            self.restore(frozen)
        bad = ~torch.isfinite(member_norms(self._weights)) & ~frozen
        if not bool(bad.any()):
            return []
        self.restore(bad)
        return bad.nonzero().flatten().tolist()

    def watch_outputs(self, networks: Iterable[nn.Module]) -> None:
        """Hook the output layer (last Linear/Conv) of every network that parameterises a distribution (a TorchRL
        ``ProbabilisticActor``) until :meth:`unwatch_outputs`: a non-finite output marks its member for
        :meth:`nonfinite` and is replaced by 0. Weights that are finite but too large (their products overflow
        float32) thus reach the update as divergence instead of raising inside TorchRL's losses (which sample
        when an entropy is not finite). Value and Q networks need no guard: their non-finite outputs reach the
        loss. On only for training batches, since a module hook costs every forward pass (acting too) the slow
        path of ``nn.Module.__call__``."""
        self.unwatch_outputs()
        self._nonfinite_outputs = torch.zeros(self.members, dtype=torch.bool)
        for network in networks:
            layers = weight_layers(network) if isinstance(network, ProbabilisticTensorDictSequential) else []
            if layers:
                self._hooks.append(layers[-1].register_forward_hook(self._guard_output))

    def unwatch_outputs(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _guard_output(self, module: nn.Module, args: Any, out: Tensor) -> Tensor:
        finite = torch.isfinite(out)
        self._nonfinite_outputs.logical_or_(~finite.reshape(self.members, -1).all(1).cpu())
        return torch.where(finite, out, 0.0)
