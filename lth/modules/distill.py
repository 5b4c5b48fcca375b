"""Policy distillation: a student network imitating a frozen expert's outputs on the expert's own data."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch.distributions import Normal, kl_divergence

from lth.errors import ConfigError
from lth.modules.base import AgentModule
from lth.modules.minibatches import minibatch_steps, shuffled_minibatches
from lth.rl.agents import EpsilonGreedyActing, acting_policy, build_network, make_actor, resolve_distribution
from lth.rl.networks import NetworkSpec

Imitated = Literal["policy", "q_values"]


def _member_means(per_frame: torch.Tensor) -> torch.Tensor:
    """Each member's mean of its ``per_frame`` values ``[members, ...]``: ``[members]``."""
    return per_frame.reshape(per_frame.shape[0], -1).mean(1)


def categorical_kl(expert_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Each member's mean KL(expert || student) of two categorical policies (cross-entropy minus the expert's
    entropy) over its own frames: logits ``[members, ..., actions]`` in, ``[members]`` out."""
    expert_log_p = expert_logits.log_softmax(-1)
    return _member_means((expert_log_p.exp() * (expert_log_p - student_logits.log_softmax(-1))).sum(-1))


def gaussian_kl(expert_loc: torch.Tensor, expert_scale: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
                ) -> torch.Tensor:
    """Each member's mean KL(expert || student) of diagonal Gaussian policies (before the tanh squashing both
    share) over its own frames: ``[members, ..., action_dim]`` in, ``[members]`` out."""
    return _member_means(kl_divergence(Normal(expert_loc, expert_scale), Normal(loc, scale)).sum(-1))


def q_huber(expert_q: torch.Tensor, q: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Huber loss between the student's and the expert's Q-values (the paper's MinAtar distillation): each member's
    mean over its own frames and actions, ``[members, ..., actions]`` in, ``[members]`` out."""
    return _member_means(F.huber_loss(q, expert_q, delta=delta, reduction="none"))


#: What an expert writes next to each frame (what a student imitates).
EXPERT_KEYS = ("logits", "loc", "scale", "action_value")


class Distill(AgentModule):
    """A student trained to imitate a frozen expert (paper Tables 2, 4, 6, 10) on :class:`ExpertDataModule` data.

    ``imitate="policy"`` builds a policy student (categorical or tanh-Gaussian, like a PPO actor) and minimises
    the KL from the expert's policy; ``"q_values"`` builds a Q-network and minimises a Huber loss to the expert's
    Q-values. Each batch is a rollout of the expert with its outputs; it is used for ``epochs`` passes of
    ``minibatches`` minibatches. The student (sub-module ``student``, what pruning selects) is scored like an
    agent: by the best mean return of its own greedy policy.

    With ``members`` K it trains a population: K independent students (one batched network) that all learn
    from the same expert data stream (:class:`ExpertDataModule` with one seed per member), each with its own
    minibatch shuffles, loss (the mean over its own frames; their sum is minimised) and gradient clipping, so each
    gets the update it would get alone on that data.

    Args:
        imitate: what the student imitates: the expert's ``policy`` or its ``q_values``.
        hidden: the student's hidden layer widths.
        network: how the student is built and initialised (tanh by default).
    """

    network_names = ("student",)

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict[str, Any] | None = None,
        imitate: Imitated = "policy",
        hidden: list[PositiveInt] = [128, 128],  # noqa: B006 - jsonargparse needs a literal default
        network: NetworkSpec = NetworkSpec(activation="tanh"),  # noqa: B008 - frozen, and shown by --help
        lr: PositiveFloat = 1e-3,
        weight_decay: NonNegativeFloat = 0.0,
        epochs: PositiveInt = 4,
        minibatches: PositiveInt = 4,
        max_grad_norm: PositiveFloat = 10.0,
        huber_delta: PositiveFloat = 1.0,
        eps_eval: ClosedUnitInterval = 0.001,
        members: PositiveInt = 1,
    ) -> None:
        super().__init__(env_id, env_kwargs, network, members)
        action_spec = self.action_spec
        if imitate == "policy":
            dist = resolve_distribution(action_spec, None, env_id)
            self.student = make_actor(self.obs_shape, action_spec, hidden, dist, self.network_spec, members,
                                      self.member_generators)
            self._acting = acting_policy(self.student, self.member_generators)
        elif imitate == "q_values":
            if not hasattr(action_spec, "n"):
                raise ConfigError(f"imitate='q_values' needs discrete actions; {env_id} has continuous ones")
            n = int(action_spec.n)
            self.student = build_network(self.obs_shape, n, hidden, self.network_spec, members)
            self._acting = EpsilonGreedyActing(self.student, n, eps_eval, self.member_generators)
        else:
            raise ConfigError(f"unknown imitate={imitate!r}; valid: ['policy', 'q_values']")

    def optimizer_steps_per_batch(self, frames_per_batch: int) -> int:
        return minibatch_steps(frames_per_batch, self.hparams.minibatches, self.hparams.epochs)

    @property
    def policy(self) -> TensorDictModuleBase:
        """The student's own policy (it only acts in evaluation: the expert collects the data)."""
        return self._acting

    def distillation_loss(self, batch: TensorDictBase) -> torch.Tensor:
        """Each member's divergence from the expert outputs stored in ``batch`` ``[members, ...]``: the mean over
        its own frames, ``[members]``."""
        obs = batch.get("observation")
        if self.hparams.imitate == "q_values":
            return q_huber(self._expert(batch, "action_value"), self.student(obs), self.hparams.huber_delta)
        out = self.student.module[0](TensorDict({"observation": obs}, batch_size=batch.batch_size))
        if "logits" in out:
            return categorical_kl(self._expert(batch, "logits"), out.get("logits"))
        return gaussian_kl(self._expert(batch, "loc"), self._expert(batch, "scale"), out.get("loc"), out.get("scale"))

    def _expert(self, batch: TensorDictBase, key: str) -> torch.Tensor:
        if key not in batch:
            raise ConfigError(
                f"the expert data has no {key!r}: a policy expert (PPO) needs imitate='policy', a value expert "
                f"(DQN) imitate='q_values'"
            )
        return batch.get(key)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        # The expert's rollout [copies, time] is shared: every member counts its frames once and trains on all of them.
        members = self.members
        self.count_frames(batch.numel() * members, batch_idx)
        keys = [key for key in ("observation", *EXPERT_KEYS) if key in batch]
        data = batch.select(*keys).reshape(1, -1).expand(members, batch.numel())  # [members, frames], no copy
        losses = []
        minibatches = shuffled_minibatches(data, self.hparams.minibatches, self.hparams.epochs,
                                           self.member_generators())
        for minibatch in minibatches:
            if self.diverged:  # update() stopped the fit; the rest of this batch is not trained on
                break
            loss = self.distillation_loss(minibatch)
            self.update(loss)
            losses.append(loss.detach())
        if losses and batch_idx % self.trainer.log_every_n_steps == 0:
            self.log_at_frames({"train/distillation_loss": torch.stack(losses).mean(0)})
