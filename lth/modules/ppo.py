"""PPO (clipped surrogate, GAE) as a LightningModule on TorchRL's ``ClipPPOLoss`` and ``GAE``."""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from lth.modules.base import AgentModule
from lth.modules.minibatches import minibatch_steps, shuffled_minibatches
from lth.rl.agents import acting_policy, make_actor, make_critic, resolve_distribution
from lth.rl.domains import Discount
from lth.rl.networks import NetworkSpec


class PPO(AgentModule):
    """Proximal policy optimisation with separate actor and critic networks (paper Tables 3, 5, 7, 9).

    Each training batch is one rollout from the collector: GAE is computed once, then ``epochs`` passes of
    ``minibatches`` shuffled minibatches are optimised manually (one Lightning step = one rollout).
    Sub-modules ``actor`` and ``critic`` are the names pruning selects by.

    With ``members`` K it trains a population: K independent agents as one batched network on a rollout of
    K x ``num_envs`` env copies (member-major), each member with its own advantage normalisation, minibatch
    shuffles, loss (their sum is minimised) and gradient clipping, so each gets the update it would get alone.

    Args:
        actor_hidden: the actor's hidden layer widths.
        critic_hidden: the critic's hidden layer widths.
        network: how both networks are built and initialised (tanh by default).
        distribution: the policy distribution; by default categorical or tanh-Gaussian, as the actions are.
    """

    network_names = ("actor", "critic")

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict[str, Any] | None = None,
        actor_hidden: list[PositiveInt] = [64, 64],  # noqa: B006 - jsonargparse needs a literal default
        critic_hidden: list[PositiveInt] = [64, 64],  # noqa: B006
        network: NetworkSpec = NetworkSpec(activation="tanh"),  # noqa: B008 - frozen, and shown by --help
        distribution: str | None = None,
        lr: PositiveFloat = 5e-4,
        weight_decay: NonNegativeFloat = 0.0,
        gamma: Discount = 0.99,
        gae_lambda: ClosedUnitInterval = 0.95,
        clip_epsilon: PositiveFloat = 0.2,
        value_coef: NonNegativeFloat = 0.5,
        entropy_coef: NonNegativeFloat = 0.001,
        epochs: PositiveInt = 4,
        minibatches: PositiveInt = 4,
        max_grad_norm: PositiveFloat = 1.0,
        members: PositiveInt = 1,
    ) -> None:
        super().__init__(env_id, env_kwargs, network, members)
        dist = resolve_distribution(self.action_spec, distribution, env_id)
        spec = self.network_spec
        self.actor = make_actor(self.obs_shape, self.action_spec, actor_hidden, dist, spec, members,
                                self.member_generators)
        self.critic = make_critic(self.obs_shape, critic_hidden, spec, members)
        self._acting = acting_policy(self.actor, self.member_generators)  # shares the actor's weights
        # Advantages are normalised per member (the "member" entry groups a population's frames), over time dim -1.
        self.advantage = GAE(gamma=gamma, lmbda=gae_lambda, value_network=self.critic, average_gae=True,
                             group_key="member", time_dim=-1)
        self.loss_module = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=clip_epsilon,
            entropy_coeff=entropy_coef,
            critic_coeff=value_coef,
            loss_critic_type="l2",
            normalize_advantage=False,
            log_explained_variance=False,
            reduction="none",  # per frame: each member's loss is the mean over its own frames
        )

    def optimizer_steps_per_batch(self, frames_per_batch: int) -> int:
        return minibatch_steps(frames_per_batch, self.hparams.minibatches, self.hparams.epochs)

    @property
    def policy(self) -> TensorDictModuleBase:
        return self._acting

    @torch.no_grad()
    def estimate_advantage(self, batch: TensorDictBase) -> TensorDictBase:
        """``batch`` (a rollout ``[copies, time]``, member-major as the collector gives it) as ``[members, copies,
        time]`` with each member's GAE advantages and value targets, normalised over its own frames."""
        batch = batch.reshape(self.members, -1, batch.shape[-1])
        batch.set("member", torch.arange(self.members).reshape(-1, 1, 1).expand(batch.shape))
        self.advantage(batch)
        return batch

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        self.count_frames(batch.numel(), batch_idx)
        members = self.members
        batch = self.estimate_advantage(batch)
        stats: dict[str, list[torch.Tensor]] = {}
        minibatches = shuffled_minibatches(batch, self.hparams.minibatches, self.hparams.epochs,
                                           self.member_generators())
        for minibatch in minibatches:
            if self.diverged:  # update() stopped the fit; the rest of this rollout is not trained on
                break
            out = self.loss_module(minibatch)
            parts = {key: out[key].reshape(members, -1).mean(1) for key in ("loss_objective", "loss_critic")}
            entropy_loss = out["loss_entropy"].reshape(members, -1).mean(1)
            self.update(parts["loss_objective"] + parts["loss_critic"] + entropy_loss)
            for key, value in parts.items():
                stats.setdefault(key, []).append(value.detach())
            # (TorchRL's "entropy" and "clip_fraction" are over the whole minibatch, not per member.)
            if self.hparams.entropy_coef > 0:
                stats.setdefault("entropy", []).append(-entropy_loss.detach() / self.hparams.entropy_coef)
        self.log_at_frames({f"train/{k}": torch.stack(v).mean(0) for k, v in stats.items()})
