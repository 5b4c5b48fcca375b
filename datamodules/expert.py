"""Expert data: a TorchRL collector rolling out a frozen expert, with the expert's outputs next to each frame."""

from __future__ import annotations

import math
from typing import Any

from tensordict.nn import TensorDictModuleBase

from .envs import EnvDataModule
from .onpolicy import RolloutStream
from lth.experts import load_agent
from lth.modules import AgentModule
from lth.tracking import DEFAULT_TRACKING_URI


class ExpertDataModule(EnvDataModule):
    """Rollouts of ``num_envs`` envs x ``rollout_steps`` steps of the expert's policy until ``total_frames``.

    The expert (a checkpoint path or the MLflow run id of an ``lth expert`` run) acts with its own stochastic
    policy, as in the paper; a value-based (DQN) expert acts epsilon-greedily with ``expert_eps``. Each frame
    keeps what the expert computed while acting (``logits``, ``loc``/``scale`` or ``action_value``), so the
    data distribution is the expert's and never shifts with the student. Evaluation envs are the student's.
    """

    def __init__(
        self,
        expert: str,
        env_id: str = "CartPole-v1",
        num_envs: int = 4,
        rollout_steps: int = 128,
        total_frames: int = 10_000,
        expert_eps: float = 0.0,
        eval_every: int = 1_000,
        eval_episodes: int = 10,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        tracking_uri: str = DEFAULT_TRACKING_URI,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.frames_per_batch = num_envs * rollout_steps
        self.batches = math.ceil(total_frames / self.frames_per_batch)
        self._expert: AgentModule | None = None

    @property
    def expert(self) -> AgentModule:
        """The frozen expert agent (loaded on first use)."""
        if self._expert is None:
            self._expert = load_agent(self.hparams.expert, self.hparams.tracking_uri)
        return self._expert

    @property
    def expert_policy(self) -> TensorDictModuleBase:
        policy = self.expert.policy
        if hasattr(policy, "eps"):  # value-based expert: its exploration is the configured epsilon
            policy.eps.fill_(self.hparams.expert_eps)
        return policy

    @property
    def eval_interval(self) -> int:
        """Rollouts between evaluations (Lightning's ``val_check_interval``)."""
        return max(1, min(self.batches, round(self.hparams.eval_every / self.frames_per_batch)))

    def train_dataloader(self) -> RolloutStream:
        total = self.batches * self.frames_per_batch
        return RolloutStream(self.make_collector(self.frames_per_batch, total, self.expert_policy), self.batches)
