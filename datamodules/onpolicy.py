"""On-policy data: a TorchRL collector acting with the attached module's policy, one rollout per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from jsonargparse.typing import PositiveInt
from tensordict import TensorDictBase
from torchrl.collectors import Collector

from lth.rl.domains import check_domains

from .envs import EnvDataModule


class RolloutStream:
    """An iterable of rollouts with a known length, so Lightning's progress bar can show the whole fit."""

    def __init__(self, collector: Collector, batches: int) -> None:
        self.collector = collector
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[TensorDictBase]:
        yield from self.collector


class OnPolicyDataModule(EnvDataModule):
    """Rollouts of ``num_envs`` batched envs x ``rollout_steps`` steps until ``total_frames`` env frames (per
    member of a population: its ``seed`` a list, one per member).

    Frames, not epochs, bound a fit: one Lightning epoch is the whole budget. The collector acts with
    ``trainer.lightning_module.policy`` (shared weights, so every rollout uses the latest policy). The
    validation "data" is a separate batched env of ``eval_episodes`` copies that the module plays greedily.
    """

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: PositiveInt = 4,
        rollout_steps: PositiveInt = 128,
        total_frames: PositiveInt = 80_000,
        eval_every: PositiveInt = 5_000,
        eval_episodes: PositiveInt = 10,
        seed: int | list[int] = 0,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_domains(OnPolicyDataModule, dict(self.hparams))
        self.frames_per_batch = num_envs * rollout_steps  # per member
        self.batches = math.ceil(total_frames / self.frames_per_batch)

    @property
    def eval_interval(self) -> int:
        """Rollouts between evaluations (Lightning's ``val_check_interval``)."""
        return max(1, min(self.batches, round(self.hparams.eval_every / self.frames_per_batch)))

    def train_dataloader(self) -> RolloutStream:
        frames = self.frames_per_batch * self.members
        collector = self.make_collector(frames, self.batches * frames)
        return RolloutStream(collector, self.batches)
