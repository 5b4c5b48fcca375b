"""On-policy data: a TorchRL collector acting with the attached module's policy, one rollout per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator

from lightning.pytorch import LightningDataModule
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from lth.envs import make_env


class RolloutStream:
    """An iterable of rollouts with a known length, so Lightning's progress bar can show the whole fit."""

    def __init__(self, collector: Collector, batches: int) -> None:
        self.collector = collector
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[TensorDictBase]:
        yield from self.collector


class EvalEnvLoader:
    """A one-batch loader whose batch is the eval env: Lightning's validation then runs greedy episodes.

    The env is re-seeded before every evaluation, so all evaluations of a fit start from the same states:
    scores of different checkpoints are comparable, and a stored best checkpoint reproduces its score.
    """

    def __init__(self, env: EnvBase, seed: int) -> None:
        self.env = env
        self.seed = seed

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[EnvBase]:
        self.env.set_seed(self.seed)
        yield self.env


class OnPolicyDataModule(LightningDataModule):
    """Rollouts of ``num_envs`` batched envs x ``rollout_steps`` steps until ``total_frames`` env frames.

    Frames, not epochs, bound a fit: one Lightning epoch is the whole budget. The collector acts with
    ``trainer.lightning_module.policy`` (shared weights, so every rollout uses the latest policy). The
    validation "data" is a separate batched env of ``eval_episodes`` copies that the module plays greedily.
    """

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: int = 4,
        rollout_steps: int = 128,
        total_frames: int = 80_000,
        eval_every: int = 5_000,
        eval_episodes: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.frames_per_batch = num_envs * rollout_steps
        self.batches = math.ceil(total_frames / self.frames_per_batch)
        self._collector: Collector | None = None
        self._eval_env: EnvBase | None = None

    @property
    def eval_interval(self) -> int:
        """Rollouts between evaluations (Lightning's ``val_check_interval``)."""
        return max(1, round(self.hparams.eval_every / self.frames_per_batch))

    def train_dataloader(self) -> RolloutStream:
        self._close_collector()
        env = make_env(self.hparams.env_id, self.hparams.num_envs, self.hparams.seed)
        self._collector = Collector(
            env,
            self.trainer.lightning_module.policy,
            frames_per_batch=self.frames_per_batch,
            total_frames=self.batches * self.frames_per_batch,
            device="cpu",
            trust_policy=True,  # a TensorDictModule acting on this env's keys: skip the collector's policy probing
            track_traj_ids=False,  # trajectory ids are not used by on-policy losses and cost per step
            auto_register_policy_transforms=False,  # the policies here are feed-forward: no InitTracker needed
        )
        return RolloutStream(self._collector, self.batches)

    def val_dataloader(self) -> EvalEnvLoader:
        if self._eval_env is None:
            self._eval_env = make_env(self.hparams.env_id, self.hparams.eval_episodes)
        return EvalEnvLoader(self._eval_env, self.eval_seed)

    @property
    def eval_seed(self) -> int:
        """The seed every evaluation starts from (distinct from the training envs' seed)."""
        return self.hparams.seed + 10_000

    def _close_collector(self) -> None:
        if self._collector is not None:
            self._collector.shutdown()
            self._collector = None

    def teardown(self, stage: str) -> None:
        self._close_collector()
