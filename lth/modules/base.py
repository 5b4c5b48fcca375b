"""What every RL agent shares: its env's shapes, its networks' spec and initialisation, hyperparameters, env
frames, greedy evaluation as Lightning validation, best return."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from torch import nn
from torchrl.envs import EnvBase

from lth.domains import check_domains
from lth.envs import env_shapes
from lth.errors import ConfigError
from lth.evaluation import evaluate_episodes
from lth.networks import NetworkSpec, weight_layers


def shuffled_minibatches(data: TensorDictBase, minibatches: int, epochs: int,
                         generators: Sequence[torch.Generator] | None = None) -> Iterator[TensorDictBase]:
    """``epochs`` passes over ``data`` ``[members, ...]``, each in ``minibatches`` shuffled minibatches ``[members,
    size]``: every member's own frames, in an order drawn from its own generator when ``generators`` are given
    (one per member), else from the global one."""
    members = data.shape[0]
    flat = data.reshape(members, -1)
    frames = flat.shape[1]
    size = minibatch_size(frames, minibatches)
    rows = torch.arange(members).unsqueeze(-1)
    for _ in range(epochs):
        if generators is None:
            order = torch.stack([torch.randperm(frames) for _ in range(members)])
        else:
            order = torch.stack([torch.randperm(frames, generator=g) for g in generators])
        for idx in order.split(size, dim=1):
            yield flat[rows, idx]


def _along(flags: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-member ``flags`` ``[members]`` shaped to broadcast over a batched ``weight`` ``[members, ...]``."""
    return flags.reshape(-1, *[1] * (weight.ndim - 1))


def minibatch_size(frames: int, minibatches: int) -> int:
    """The size of each of :func:`shuffled_minibatches`' minibatches over ``frames`` frames (the last may be smaller)."""
    return max(1, frames // minibatches)


def minibatch_steps(frames: int, minibatches: int, epochs: int) -> int:
    """How many minibatches (optimizer steps) :func:`shuffled_minibatches` yields over ``frames`` frames."""
    return epochs * math.ceil(frames / minibatch_size(frames, minibatches))


class AgentModule(LightningModule):
    """A LightningModule whose data are env frames and whose validation is a set of greedy episodes.

    A subclass takes ``env_id``, ``env_kwargs`` and ``network`` (a :class:`NetworkSpec` with the subclass's
    default; a dict of some options amends that default) among its constructor arguments and passes them to
    ``super().__init__``, which saves every constructor
    argument as a hyperparameter, probes the env once (:attr:`obs_shape`, :attr:`action_spec`) and keeps the
    spec as :attr:`network_spec`. The subclass then builds its networks from these, names them in
    :attr:`network_names` (what :meth:`reset_parameters` re-initialises), and defines :attr:`policy` (what
    collectors act with), its losses and ``training_step`` with the hyperparameters ``lr``, ``weight_decay``
    and ``max_grad_norm`` (Adam, manual optimisation through :meth:`update`). Every metric goes to the loggers
    with ``step`` = env frames seen in this fit, so learning curves share one x-axis; the best mean evaluation
    return of the fit (the paper's ticket score) is logged as ``eval/best_return``.

    Divergence is a result, not a crash: when :meth:`update` meets a non-finite loss, network output or weights
    (see there), the fit stops cleanly before its next batch, back at the weights before its last step;
    :attr:`diverged_at` holds the env frames at which it happened (metric ``diverged_at_frames``), and the best
    return of the evaluations before it stands. (A subclass overriding ``on_train_batch_start``/``_end`` calls
    ``super()``: they switch the output guard on and off.)
    """

    #: The sub-modules built from :attr:`network_spec`, in construction order.
    network_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any] | None, network: NetworkSpec | Mapping[str, Any],
        members: int = 1,
    ) -> None:
        super().__init__()
        #: Independent agents trained as one batched network (a population); every parameter then has a leading
        #: member dimension, and member k's network is ``{name: p[k]}`` (lth.batched). 1: an ordinary agent.
        self.members = members
        self.network_spec = NetworkSpec.of(network, default=self.default_network())
        # Lightning collects the arguments of the whole __init__ chain, so this saves the subclass's too; the spec
        # is stored as a plain dict (checkpoints load without pickled classes, loggers get network/<option>).
        self.save_hyperparameters()
        self.save_hyperparameters({"network": asdict(self.network_spec)})
        check_domains(type(self), dict(self.hparams))  # what the parser checks, for modules built in Python too
        self.automatic_optimization = False
        self.obs_shape, self.action_spec = env_shapes(env_id, **(env_kwargs or {}))
        self.frames = 0
        #: Each member's best mean evaluation return in this fit.
        self.best_returns = torch.full((members,), -math.inf)
        #: Per member, the env frames of the fit at which its training diverged (:meth:`update`), else ``None``.
        self.member_diverged_at: list[int | None] = [None] * members
        self._member_rng: list[torch.Generator] | None = None
        self._weights: list[torch.Tensor] = []  # detached views of the parameters update() steps
        self._last_good: list[torch.Tensor] = []  # their values before the last step
        self._nonfinite_outputs: torch.Tensor | None = None  # set by the output guard (see _guard_outputs)
        self._output_hooks: list[Any] = []

    @classmethod
    def default_network(cls) -> NetworkSpec:
        """The ``network`` default of the subclass's constructor (a mapping given instead amends it)."""
        param = inspect.signature(cls).parameters.get("network")
        default = None if param is None else param.default
        return default if isinstance(default, NetworkSpec) else NetworkSpec()

    @property
    def best_return(self) -> float:
        """The best mean evaluation return of this fit (an ordinary agent; a population has :attr:`best_returns`)."""
        if self.members != 1:
            raise AttributeError(f"a population of {self.members} members has one best return each: best_returns")
        return float(self.best_returns[0])

    @best_return.setter
    def best_return(self, value: float) -> None:
        if self.members != 1:
            raise AttributeError(f"a population of {self.members} members has one best return each: best_returns")
        self.best_returns = torch.tensor([float(value)])

    @property
    def diverged_at(self) -> int | None:
        """Env frames of the fit at which training diverged (:meth:`update`); ``None`` while it has not."""
        return self.member_diverged_at[0] if self.members == 1 else None

    def seed_members(self, seeds: Sequence[int] | None) -> None:
        """Give each member its own random generator for acting and minibatch shuffles (``None``: the global one),
        so a member's training depends on its own seed, not on its population mates."""
        if seeds is not None and len(seeds) != self.members:
            raise ValueError(f"{len(seeds)} seeds for {self.members} members")
        self._member_rng = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]

    def member_generators(self) -> list[torch.Generator] | None:
        """The members' generators (:meth:`seed_members`), or ``None``."""
        return self._member_rng

    def reset_parameters(self) -> None:
        """Fresh initial weights for every network in :attr:`network_names` (re-initialised baselines call this)."""
        for name in self.network_names:
            self.network_spec.initialize(getattr(self, name))

    @property
    def policy(self) -> TensorDictModuleBase:
        """The exploring policy that collectors act with (weights shared with the trained networks)."""
        raise NotImplementedError

    @property
    def eval_policy(self) -> TensorDictModuleBase:
        """What evaluation acts with, under deterministic exploration; the exploring policy by default."""
        return self.policy

    def optimizer_steps_per_batch(self, frames_per_batch: int) -> int:
        """Optimizer steps one training batch of ``frames_per_batch`` frames makes (one here; modules that pass
        over a batch in minibatches say how many), so a late rewind can be checked against a fit's steps."""
        return 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True
        )

    @property
    def diverged(self) -> bool:
        """Whether training diverged in this fit, for every member (then :meth:`update` makes no more steps)."""
        return all(at is not None for at in self.member_diverged_at)

    def update(self, loss: torch.Tensor, *outputs: torch.Tensor) -> None:
        """One optimizer step on ``loss`` with gradients clipped to norm ``max_grad_norm``, unless training diverged.

        A population passes ``loss`` per member (``[members]``; their sum is minimised, so each member gets its
        own gradient) and ``outputs`` with a leading member dimension; its gradients are clipped per member, and
        divergence (below) freezes only the members it hits: they keep the weights before their last step and
        the fit goes on for the others until all have diverged.

        Divergence is any of: ``loss`` or one of ``outputs`` (other results of the same forward pass that the
        learner uses, e.g. DQN's TD errors, its replay priorities) is NaN/inf; a guarded network output in this
        batch was NaN/inf (:meth:`_guard_outputs`); or, after the step, the L2 norm of the parameters is
        NaN/inf, which covers NaN/inf weights, non-finite gradients (clipping spreads them to every weight) and
        weights whose squares overflow float32 (|w| above ~1.8e19: one Adam step at lr 1e38 gives finite
        weights whose forward passes are inf/NaN). Then no step is taken (or the offending one is undone): the
        model goes back to the weights before its last step, :attr:`diverged_at` records the env frames,
        ``diverged_at_frames`` goes to the loggers, and ``trainer.should_stop`` is set. Lightning 2.6's
        training loop checks it after this batch, before fetching the next one (lth's streams have a length,
        so nothing is prefetched): no collector acts with diverged weights. It still validates once;
        :meth:`validation_step` then plays no episodes and logs ``eval/return`` NaN, which never counts as a
        best. Later calls in the fit are no-ops.

        Not divergence: a huge but finite loss (lr 1e6: critic loss ~1e14, entropy 0) -- there is no
        principled bound, and the logged ``train/*`` curves show it. A finite loss with finite gradients
        under Adam moves each weight by at most ~lr per step, so checking the loss alone would miss only the
        overflows above; the weight norm, the outputs and the guard catch those.

        Cost per step: one host sync on the loss (and outputs), one fused norm and one in-place copy of the
        parameters, about 45 us measured on a loaded 2-core CPU, next to ~1.4-2.5 ms per small DQN/PPO update.
        """
        if self.diverged:
            return
        opt = self.optimizers()
        opt.zero_grad()
        members = self.members
        finite = torch.isfinite(loss.detach()).reshape(members)
        for out in outputs:
            finite = finite & torch.isfinite(out.detach()).reshape(members, -1).all(1)
        guarded = bool(self._output_hooks)
        if guarded:  # guarded outputs this batch: one host sync for both
            finite = finite & ~self._nonfinite_outputs
        frozen = self.diverged_members()
        if not bool((finite | frozen).all()):
            for k in (~finite & ~frozen).nonzero().flatten().tolist():
                if guarded and bool(self._nonfinite_outputs[k]):
                    why = "a network output is not finite"
                else:
                    why = "an output is not finite" if bool(torch.isfinite(loss.detach().reshape(members)[k])) else \
                        "the loss is not finite"
                # Undo its last step later (after this step, see below): its weights are still needed by backward.
                self._diverge(k, why, restore=False)
            if self.diverged:
                self._restore(torch.ones(members, dtype=torch.bool))
                return
            frozen = self.diverged_members()
        self.manual_backward(loss.sum())
        if members == 1:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        else:
            self._clip_member_gradients()
        if not self._weights:  # once per fit: detached views of the trained parameters, and room for a copy
            self._weights = [p.detach() for p in self.parameters() if p.requires_grad]
            self._last_good = [w.clone() for w in self._weights]
        else:  # a frozen member's last good weights stay: they are what it keeps
            for good, weight in zip(self._last_good, self._weights, strict=True):
                good.copy_(weight if members == 1 else torch.where(_along(frozen, weight), good, weight))
        opt.step()
        if bool(frozen.any()):  # diverged members keep their last good weights, whatever Adam made of them
            self._restore(frozen)
        if members == 1:
            if not torch.isfinite(torch.nn.utils.get_total_norm(self._weights)):
                opt.zero_grad()
                self._diverge(0, "the weights after the step are not finite")
            return
        # per member, what get_total_norm computes for a solo agent: the norm of the per-tensor norms, in float32
        norms = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(w.reshape(members, -1), dim=1) for w in self._weights]), dim=0)
        for k in (~torch.isfinite(norms) & ~frozen).nonzero().flatten().tolist():
            self._diverge(k, "the weights after the step are not finite")

    def diverged_members(self) -> torch.Tensor:
        """Which members have diverged in this fit (``[members]`` bool): their weights stay frozen."""
        return torch.tensor([at is not None for at in self.member_diverged_at])

    def _clip_member_gradients(self) -> None:
        """Each member's gradients scaled to L2 norm at most ``max_grad_norm`` (``clip_grad_norm_`` per member)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norms = sum(g.reshape(self.members, -1).pow(2).sum(1) for g in grads).sqrt()
        scale = (self.hparams.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.reshape(-1, *[1] * (g.ndim - 1)))

    @torch.no_grad()
    def _restore(self, members: torch.Tensor) -> None:
        """Put the weights before the last step back, for the members flagged in ``members`` (all: a solo agent)."""
        for weight, good in zip(self._weights, self._last_good, strict=True):
            if self.members == 1:
                weight.copy_(good)
            else:
                weight.copy_(torch.where(_along(members, weight), good, weight))

    def _guard_outputs(self) -> None:
        """Hook the output layer (last Linear/Conv) of every network in :attr:`network_names` that parameterises a
        distribution (a TorchRL ``ProbabilisticActor``) for one training batch: a non-finite output sets
        :attr:`_nonfinite_outputs` and is replaced by 0. Weights that are finite but too large (their products
        overflow float32) thus reach :meth:`update` as divergence instead of raising inside TorchRL's losses
        (which sample when an entropy is not finite). Finite outputs pass unchanged. Value and Q networks need
        no guard: their non-finite outputs reach the loss as NaN/inf. Only on during training batches, since a
        module hook costs every forward pass (acting too) the slow path of ``nn.Module.__call__``."""
        self._unguard_outputs()
        self._nonfinite_outputs = torch.zeros(self.members, dtype=torch.bool, device=self.device)
        for name in self.network_names:
            network = getattr(self, name)
            if not isinstance(network, ProbabilisticTensorDictSequential):
                continue
            layers = weight_layers(network)
            if layers:
                self._output_hooks.append(layers[-1].register_forward_hook(self._guard_output))

    def _unguard_outputs(self) -> None:
        for handle in self._output_hooks:
            handle.remove()
        self._output_hooks = []

    def _guard_output(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(out)
        self._nonfinite_outputs.logical_or_(~finite.reshape(self.members, -1).all(1))
        return torch.where(finite, out, 0.0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._guard_outputs()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._unguard_outputs()

    def _diverge(self, member: int, why: str, restore: bool = True) -> None:
        if restore:
            self._restore(torch.arange(self.members) == member)  # back before the step that led here
        self.member_diverged_at[member] = self.frames
        who = "" if self.members == 1 else f"member {member}: "
        rank_zero_warn(f"{who}training diverged at {self.frames} env frames ({why}): this fit stops here, back at "
                       "the weights before its last step; its best evaluation return so far stands")
        values = torch.full((self.members,), math.nan)
        values[member] = float(self.frames)
        self.log_at_frames({"diverged_at_frames": values}, members=[member])
        if self.diverged:
            self.trainer.should_stop = True

    def setup(self, stage: str) -> None:
        # Each fit is one learning curve; a resumed fit restores these from the checkpoint afterwards.
        data_members = getattr(getattr(self.trainer, "datamodule", None), "members", self.members)
        if data_members != self.members:
            raise ConfigError(f"the model has {self.members} member(s) but the data are for {data_members} "
                              "(a population's data take one seed per member)")
        if stage == "fit":
            self.frames = 0
            self.best_returns = torch.full((self.members,), -math.inf)
            self.member_diverged_at = [None] * self.members
            self._weights, self._last_good = [], []

    def log_at_frames(self, metrics: Mapping[str, float | torch.Tensor], members: Sequence[int] | None = None) -> None:
        """Send ``metrics`` to the loggers at step = env frames (per member).

        A population's values are ``[members]`` tensors (or one float for all): with one logger per member (as
        ``lth imp`` gives it), member k's values go to the k-th logger under the plain names, else to every logger
        as ``<name>/<k>``. ``members`` limits which members log.
        """
        if self.members == 1:
            plain = {name: float(value) for name, value in metrics.items()}
            for logger in self.loggers:
                logger.log_metrics(plain, step=self.frames)
            return
        values = {name: torch.as_tensor(value, dtype=torch.float64).expand(self.members).tolist()
                  for name, value in metrics.items()}
        per_member = len(self.loggers) == self.members
        for k in range(self.members) if members is None else members:
            member = {name: v[k] for name, v in values.items()}
            if per_member:
                self.loggers[k].log_metrics(member, step=self.frames)
            else:
                for logger in self.loggers:
                    logger.log_metrics({f"{name}/{k}": v for name, v in member.items()}, step=self.frames)

    def count_frames(self, frames: int, batch_idx: int) -> None:
        """Add ``frames`` newly collected env frames (over all members: each member saw ``frames / members``);
        the progress bar shows them every ``log_every_n_steps``.

        (Each ``self.log`` call costs Lightning about a millisecond, a lot next to one small DQN update.)
        """
        self.frames += frames // self.members
        if batch_idx % self.trainer.log_every_n_steps == 0:
            self.log("frames", float(self.frames), prog_bar=True, logger=False, batch_size=1)

    def validation_step(self, env: EnvBase, batch_idx: int) -> None:
        if self.diverged:
            # Lightning validates once more after a stop request: no episodes, no score (NaN is never a best).
            self.log("eval/return", math.nan, prog_bar=True, logger=False, batch_size=1)
            return
        returns = evaluate_episodes(env, self.eval_policy).reshape(self.members, -1)
        means = returns.mean(1)
        means[self.diverged_members()] = math.nan  # a diverged member's frozen weights score nothing
        self.best_returns = torch.fmax(self.best_returns, means)
        spread = returns.std(1, correction=0)  # population std: defined for a single episode too
        self.log("eval/return", means.nanmean(), prog_bar=True, logger=False, batch_size=1)
        if self.members == 1:
            self.log("eval/best_return", self.best_returns[0], logger=False, batch_size=1)
        else:  # one score per member for callbacks (e.g. PruningCallback's per-member best)
            for k, mean in enumerate(means.tolist()):
                self.log(f"eval/return/{k}", mean, logger=False, batch_size=1)
        self.log_at_frames({"eval/return": means, "eval/return_std": spread, "eval/best_return": self.best_returns})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the class path lets lth.experts.load_agent rebuild any agent from its checkpoint alone
        class_path = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["agent"] = {"frames": self.frames, "best_returns": self.best_returns.tolist(),
                               "class_path": class_path, "diverged_at": list(self.member_diverged_at)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("agent", {})
        self.frames = state.get("frames", 0)
        best = state.get("best_returns", [state.get("best_return", -math.inf)])
        self.best_returns = torch.tensor(best, dtype=torch.float32).expand(self.members).clone()
        diverged = state.get("diverged_at", None)
        self.member_diverged_at = list(diverged) if isinstance(diverged, list) else [diverged] * self.members
