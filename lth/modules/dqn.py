"""Double DQN with a Huber loss and prioritized replay, as a LightningModule on TorchRL's ``DQNLoss``."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import ReplayBuffer
from torchrl.objectives import DQNLoss, HardUpdate

from lth.errors import ConfigError
from lth.modules.base import AgentModule
from lth.rl.agents import EpsilonGreedyActing, build_network, make_q_actor
from lth.rl.domains import Discount
from lth.rl.networks import NetworkSpec
from lth.rl.schedules import linear_schedule


class DQN(AgentModule):
    """Double Q-learning (paper Tables 8 and 11) on minibatches from :class:`lth.datamodules.ReplayDataModule`.

    Each training batch is one prioritized minibatch and one gradient step: TorchRL's ``DQNLoss`` with
    ``double_dqn`` (online argmax, target value), a Huber loss (delta 1) weighted by the importance weights,
    gradients clipped to ``max_grad_norm``, and a hard target update every ``target_update_interval`` steps;
    the sampled transitions' priorities in :attr:`replay_buffer` then become their ``|TD error|``.
    Exploration is epsilon-greedy, annealed from ``eps_start`` to ``eps_end`` over ``eps_frames`` env frames;
    evaluation acts with ``eps_eval``. The Q-network is the sub-module ``q_net`` (what pruning selects).

    With ``members`` K it trains a population: K independent agents as one batched Q-network (and target) on
    K x ``num_envs`` env copies (member-major) with one prioritized buffer per member (a
    :class:`lth.datamodules.ReplayDataModule` with K seeds). Each update stacks every member's own minibatch
    (``[K, batch_size]``); each member's loss is the mean over its own transitions (their sum is minimised,
    gradients are clipped per member), and member k's new priorities go to member k's buffer, so each gets the
    update it would get alone. Each member explores with its own generator when given them (``seed_members``).

    Args:
        hidden: the Q-network's hidden layer widths.
        network: how the Q-network is built and initialised (ReLU by default).
    """

    network_names = ("q_net",)

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        env_kwargs: dict[str, Any] | None = None,
        hidden: list[PositiveInt] = [64, 64],  # noqa: B006 - jsonargparse needs a literal default
        network: NetworkSpec = NetworkSpec(activation="relu"),  # noqa: B008 - frozen, and shown by --help
        lr: PositiveFloat = 5e-4,
        weight_decay: NonNegativeFloat = 0.0,
        gamma: Discount = 0.99,
        max_grad_norm: PositiveFloat = 10.0,
        target_update_interval: PositiveInt = 250,
        eps_start: ClosedUnitInterval = 1.0,
        eps_end: ClosedUnitInterval = 0.01,
        eps_frames: NonNegativeInt = 1_000_000,
        eps_eval: ClosedUnitInterval = 0.001,
        members: PositiveInt = 1,
    ) -> None:
        super().__init__(env_id, env_kwargs, network, members)
        action_spec = self.action_spec
        self.q_net = build_network(self.obs_shape, int(action_spec.n), hidden, self.network_spec, members)
        # reduction="none" returns the importance-weighted per-transition losses; their plain mean is Schaul et
        # al.'s (and rlpyt's) loss, where TorchRL's "mean" would renormalise by the sum of the weights. A population's
        # batched Q-network takes the [members, batch_size] sample as it is: losses and TD errors come out per member.
        self.loss_module = DQNLoss(
            make_q_actor(self.q_net, action_spec),
            loss_function="smooth_l1",
            delay_value=True,
            double_dqn=True,
            reduction="none",
        )
        self.loss_module.make_value_estimator(gamma=gamma)
        self.target_updater = HardUpdate(self.loss_module, value_network_update_interval=target_update_interval)
        n = int(action_spec.n)
        self._acting = EpsilonGreedyActing(self.q_net, n, eps_start, self.member_generators)
        self._eval_rng: list[torch.Generator] | None = None  # see on_validation_epoch_start
        self._eval_acting = EpsilonGreedyActing(self.q_net, n, eps_eval, lambda: self._eval_rng)

    @property
    def policy(self) -> TensorDictModuleBase:
        return self._acting

    @property
    def eval_policy(self) -> TensorDictModuleBase:
        return self._eval_acting

    def on_train_start(self) -> None:
        # The target starts as a copy of the online net as it stands after any pruning/rewinding (masked too),
        # and exploration restarts from the schedule: each fit is a fresh learning run.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Updated already initialized")  # TorchRL warns on any re-sync
            self.target_updater.init_()
        self._set_epsilon()

    def on_validation_epoch_start(self) -> None:
        # Evaluation explores too (eps_eval), each member with a generator forked from its own at the start of the
        # evaluation (seed_members; else the global RNG): a population evaluates until every member's episodes have
        # ended, so drawing from the members' own generators would make a member's later exploration and sampling
        # depend on its mates' episode lengths.
        generators = self.member_generators()
        self._eval_rng = None if generators is None else [
            torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=g))) for g in generators
        ]

    def _set_epsilon(self) -> None:
        hp = self.hparams
        self._acting.eps.fill_(linear_schedule(hp.eps_start, hp.eps_end, hp.eps_frames, self.frames))

    @property
    def replay_buffers(self) -> list[ReplayBuffer]:
        """Each member's buffer, where its minibatches come from: the training dataloader's ``buffers``."""
        buffers = getattr(self.trainer.train_dataloader, "buffers", None)
        if buffers is None or not all(isinstance(b, ReplayBuffer) for b in buffers):
            raise ConfigError("DQN trains on a replay stream with a buffer, e.g. lth.datamodules.ReplayDataModule's")
        if len(buffers) != self.members:
            raise ConfigError(f"{len(buffers)} replay buffers for {self.members} members (one per member)")
        return list(buffers)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> None:
        self.count_frames(int(batch["new_frames"]), batch_idx)
        self._set_epsilon()
        sample = batch["sample"]  # [members, batch_size]
        members = self.members
        loss = self.loss_module(sample)["loss"].reshape(members, -1).mean(1)
        self.update(loss, sample["td_error"])  # squared TD errors overflow before the (Huber) loss does
        if self.diverged:  # update() stopped the fit: no target update, and no NaN priorities in the buffer
            return
        self.target_updater.step()
        # The loss wrote the squared TD error of each sampled transition into the sample; Schaul et al. (and rlpyt,
        # the paper's framework) prioritise by |delta| (the sampler adds its eps and raises to alpha). The sampler's
        # trees are float32 (a no-op cast unless the module was made float64).
        # Member k's priorities go to member k's buffer; a diverged member's (maybe NaN) ones are not written.
        priorities = sample["td_error"].reshape(members, -1).sqrt().float()
        indices = sample["index"].reshape(members, -1)
        frozen = self.diverged_members().tolist()
        for k, buffer in enumerate(self.replay_buffers):
            if not frozen[k]:
                buffer.update_priority(indices[k], priorities[k])
        if batch_idx % self.trainer.log_every_n_steps == 0:
            metrics = {"train/loss": loss.detach(), "train/epsilon": self._acting.eps.item()}
            self.log_at_frames(metrics)
