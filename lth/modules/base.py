"""What every RL agent shares: its env's shapes, its networks' spec and initialisation, hyperparameters, env
frames, greedy evaluation as Lightning validation, best return."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from lth.envs import env_shapes
from lth.errors import ConfigError
from lth.modules.divergence import DivergenceGuard, clip_member_gradients
from lth.rl.batched import log_member_metrics
from lth.rl.domains import check_domains
from lth.rl.evaluation import evaluate_episodes
from lth.rl.networks import NetworkSpec


class AgentModule(LightningModule):
    """A LightningModule whose data are env frames and whose validation is a set of greedy episodes; a population
    of ``members`` independent agents (one: an ordinary agent) trained as one batched network.

    A subclass passes ``env_id``, ``env_kwargs`` and ``network`` (a :class:`NetworkSpec`, or a dict amending the
    subclass's default) to ``super().__init__``, which saves every constructor argument as a hyperparameter,
    probes the env (:attr:`obs_shape`, :attr:`action_spec`) and keeps :attr:`network_spec`. The subclass builds
    its networks, names them in :attr:`network_names` (what :meth:`reset_parameters` re-initialises), defines
    :attr:`policy` (what collectors act with), its losses and ``training_step`` with ``lr``, ``weight_decay`` and
    ``max_grad_norm`` (Adam, manual optimisation through :meth:`update`). Metrics go to the loggers at ``step`` =
    env frames of this fit; the best mean evaluation return (the paper's ticket score) as ``eval/best_return``.
    Divergence is a result, not a crash (:meth:`update`). A subclass overriding ``on_train_batch_start``/``_end``
    calls ``super()``: they switch the output guard on and off.
    """

    #: The sub-modules built from :attr:`network_spec`, in construction order.
    network_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any] | None, network: NetworkSpec | Mapping[str, Any],
        members: int = 1,
    ) -> None:
        super().__init__()
        #: Agents trained as one batched network; member k's network is ``{name: p[k]}`` (lth.rl.batched).
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
        #: Which members diverged in this fit, and their last good weights (:meth:`update`).
        self.guard = DivergenceGuard(members)
        self._member_rng: list[torch.Generator] | None = None

    @classmethod
    def default_network(cls) -> NetworkSpec:
        """The ``network`` default of the subclass's constructor (a mapping given instead amends it)."""
        param = inspect.signature(cls).parameters.get("network")
        default = None if param is None else param.default
        return default if isinstance(default, NetworkSpec) else NetworkSpec()

    @property
    def member_diverged_at(self) -> list[int | None]:
        """Per member, the env frames of the fit at which its training diverged (:meth:`update`), else ``None``."""
        return self.guard.diverged_at

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
        return self.guard.diverged

    def diverged_members(self) -> torch.Tensor:
        """Which members have diverged in this fit (``[members]`` bool): their weights stay frozen."""
        return self.guard.frozen()

    def update(self, loss: torch.Tensor, *outputs: torch.Tensor) -> None:
        """One optimizer step on ``loss`` (``[members]``; their sum is minimised, so each member gets its own
        gradient, clipped to norm ``max_grad_norm`` per member), unless training diverged.

        A member diverges when ``loss`` or one of ``outputs`` (other results of the same forward pass the learner
        uses, e.g. DQN's TD errors; leading member dim), a guarded network output, or after the step its weights'
        L2 norm is NaN/inf (:class:`DivergenceGuard`). It keeps the weights before its last step, frozen, while
        the others train on; :attr:`member_diverged_at` records the env frames (metric ``diverged_at_frames``).
        Once all have diverged ``trainer.should_stop`` is set: Lightning 2.6 checks it after this batch, before
        fetching the next (lth's streams have a length, so nothing is prefetched), so no collector acts with
        diverged weights. A huge but finite loss is not divergence: there is no principled bound, and Adam moves
        each weight by at most ~lr per step, so the weight norm and the output guard catch the overflows.
        Cost: one host sync, one fused norm and one copy of the parameters, ~45 us per step on 2 cores.
        """
        guard = self.guard
        if guard.diverged:
            return
        opt = self.optimizers()
        opt.zero_grad()
        for k, why in guard.nonfinite(loss, outputs).items():
            self._diverge(k, why)  # its last step is undone after this one: backward still needs its weights
        if guard.diverged:
            guard.restore(guard.frozen())  # every member
            return
        self.manual_backward(loss.sum())
        clip_member_gradients(self.parameters(), self.hparams.max_grad_norm)
        guard.remember(self.parameters())
        opt.step()
        for k in guard.after_step():
            self._diverge(k, "the weights after the step are not finite")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.guard.watch_outputs(getattr(self, name) for name in self.network_names)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.guard.unwatch_outputs()

    def _diverge(self, member: int, why: str) -> None:
        self.guard.diverged_at[member] = self.frames
        rank_zero_warn(f"member {member}: training diverged at {self.frames} env frames ({why}): this fit stops "
                       "here, back at the weights before its last step; its best evaluation return so far stands")
        self.log_at_frames({"diverged_at_frames": float(self.frames)}, members=[member])
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
            self.guard.reset()

    def log_at_frames(self, metrics: Mapping[str, float | torch.Tensor], members: Sequence[int] | None = None) -> None:
        """Send ``metrics`` (``[members]`` tensors, or one float for all) to the loggers at step = env frames, per
        member as :func:`lth.rl.batched.log_member_metrics` routes them; ``members`` limits which members log."""
        log_member_metrics(self.loggers, metrics, self.members, self.frames, members)

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
        for k, mean in enumerate(means.tolist()):  # one score per member for callbacks (PruningCallback's best)
            self.log(f"eval/return/{k}", mean, logger=False, batch_size=1)
        self.log_at_frames({"eval/return": means, "eval/return_std": spread, "eval/best_return": self.best_returns})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the class path lets lth.store.experts.load_agent rebuild any agent from its checkpoint alone
        class_path = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["agent"] = {"frames": self.frames, "best_returns": self.best_returns.tolist(),
                               "class_path": class_path, "diverged_at": list(self.member_diverged_at)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("agent", {})
        self.frames = state.get("frames", 0)
        self.best_returns = torch.tensor(state.get("best_returns", [-math.inf] * self.members), dtype=torch.float32)
        self.guard.diverged_at = list(state.get("diverged_at", [None] * self.members))
