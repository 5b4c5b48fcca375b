"""What every RL datamodule shares: the env id and kwargs, the seed, and greedy evaluation as validation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from lightning.pytorch import LightningDataModule
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from lth.callbacks.seeding import evaluation_seed
from lth.envs import make_env


class EvalEnvLoader:
    """A one-batch loader whose batch is the eval env: Lightning's validation then runs greedy episodes.

    The env is re-seeded before every evaluation, so all evaluations of a fit start from the same states:
    scores of different checkpoints are comparable, and a stored best checkpoint reproduces its score.
    """

    def __init__(self, env: EnvBase, seeds: Sequence[int]) -> None:
        self.env = env
        self.seeds = seeds

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[EnvBase]:
        self.env.seed_copies(self.seeds)
        yield self.env


def member_copy_seeds(seeds: Sequence[int], copies: int) -> list[int]:
    """Per-copy seeds of a population's member-major env copies: member k's ``copies`` copies get ``seed_k + i``,
    the seeds its copies get when it trains alone (gymnasium seeds copy i of a vector env with ``seed + i``)."""
    return [seed + i for seed in seeds for i in range(copies)]


class EnvDataModule(LightningDataModule):
    """Owns the training envs' collector and a separate batched eval env of ``eval_episodes`` copies.

    Subclasses set ``self.hparams`` (``env_id``, ``env_kwargs``, ``num_envs``, ``eval_every``,
    ``eval_episodes``, ``seed``) and build the training stream; evaluation happens every ``eval_every`` frames.
    A list of seeds makes a population's data: ``num_envs`` training and ``eval_episodes`` evaluation copies per
    member, member-major, each member's copies seeded as they would be alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self._collector: Collector | None = None
        self._eval_env: EnvBase | None = None

    def make_collector(
        self, frames_per_batch: int, total_frames: int, policy: TensorDictModuleBase | None = None,
        shared: bool = False,
    ) -> Collector:
        """A single-process collector over ``num_envs`` batched envs per member acting with ``policy`` (by default
        the module's exploring policy); ``shared``: ``num_envs`` envs for all members, seeded with the first seed
        (e.g. an expert's data stream that every member of a population learns from)."""
        self._close_collector()
        hp = self.hparams
        seeds = self.seeds[:1] if shared else self.seeds
        env = make_env(hp.env_id, hp.num_envs * len(seeds), member_copy_seeds(seeds, hp.num_envs), **self.env_kwargs)
        self._collector = Collector(
            env,
            policy if policy is not None else self.trainer.lightning_module.policy,
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            trust_policy=True,  # a TensorDictModule acting on this env's keys: skip the collector's policy probing
            track_traj_ids=False,  # trajectory ids are not used by the losses and cost per step
            auto_register_policy_transforms=False,  # the policies here are feed-forward: no InitTracker needed
        )
        return self._collector

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.hparams.env_kwargs or {})

    @property
    def seeds(self) -> list[int]:
        """The members' seeds (one for an ordinary agent)."""
        seed = self.hparams.seed
        return [int(s) for s in seed] if isinstance(seed, Sequence) else [int(seed)]

    @property
    def members(self) -> int:
        """How many agents the data are for: one per seed (one int: an ordinary agent's)."""
        return len(self.seeds)

    def val_dataloader(self) -> EvalEnvLoader:
        episodes = self.hparams.eval_episodes
        seeds = member_copy_seeds([evaluation_seed(s) for s in self.seeds], episodes)
        if self._eval_env is None:
            self._eval_env = make_env(self.hparams.env_id, len(seeds), **self.env_kwargs)
        return EvalEnvLoader(self._eval_env, seeds)

    def _close_collector(self) -> None:
        if self._collector is not None:
            self._collector.shutdown()
            self._collector = None

    def teardown(self, stage: str) -> None:
        self._close_collector()
