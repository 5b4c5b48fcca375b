"""Expert data: a TorchRL collector rolling out a frozen expert, with the expert's outputs next to each frame."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from tensordict.nn import TensorDictModuleBase
from torch import nn

from lth.rl.domains import check_domains
from lth.store.experts import load_agent
from lth.store.tracking import default_tracking_uri

from .envs import EnvDataModule
from .onpolicy import RolloutStream

#: Loads a frozen expert from its reference and a tracking URI: a module whose ``policy`` (a TensorDict policy
#: writing its outputs next to the action) the datamodule rolls out. Default: :func:`lth.store.experts.load_agent`,
#: which rebuilds any lth agent from its checkpoint's class path. (Typed ``Any``: with a class as its return
#: type, ``lth fit --help`` would list every ``nn.Module`` subclass as a choice.)
ExpertLoader = Callable[[str, str], Any]


class ExpertDataModule(EnvDataModule):
    """Rollouts of ``num_envs`` envs x ``rollout_steps`` steps of the expert's policy until ``total_frames``.

    The expert (a checkpoint path, or the MLflow run id of an ``lth expert`` run in ``tracking_uri``: by default
    ``$MLFLOW_TRACKING_URI``, else the local store) acts with its own stochastic
    policy, as in the paper; a value-based (DQN) expert acts epsilon-greedily with ``expert_eps``. Each frame
    keeps what the expert computed while acting (``logits``, ``loc``/``scale`` or ``action_value``), so the
    data distribution is the expert's and never shifts with the student. Evaluation envs are the student's.
    ``loader`` turns ``expert`` into the agent (see :data:`ExpertLoader`); pass another to roll out any
    module with a ``policy``.

    A list of seeds (one per member) makes a population's data: every member of the student population learns
    from the same expert stream of ``num_envs`` envs (seeded with the first seed), and each member is evaluated
    on its own ``eval_episodes`` env copies.
    """

    def __init__(
        self,
        expert: str,
        env_id: str = "CartPole-v1",
        num_envs: PositiveInt = 4,
        rollout_steps: PositiveInt = 128,
        total_frames: PositiveInt = 10_000,
        expert_eps: ClosedUnitInterval = 0.0,
        eval_every: PositiveInt = 1_000,
        eval_episodes: PositiveInt = 10,
        seed: int | list[int] = 0,
        env_kwargs: dict[str, Any] | None = None,
        tracking_uri: str | None = None,
        loader: ExpertLoader = load_agent,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loader"])
        check_domains(ExpertDataModule, dict(self.hparams))
        self.frames_per_batch = num_envs * rollout_steps
        self.batches = math.ceil(total_frames / self.frames_per_batch)
        self._loader = loader
        self._expert: nn.Module | None = None

    @property
    def expert(self) -> nn.Module:
        """The frozen expert agent (loaded on first use)."""
        if self._expert is None:
            self._expert = self._loader(self.hparams.expert, self.hparams.tracking_uri or default_tracking_uri())
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
        collector = self.make_collector(self.frames_per_batch, total, self.expert_policy, shared=True)
        return RolloutStream(collector, self.batches)
