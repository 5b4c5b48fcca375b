"""What every RL datamodule shares: the env id and kwargs, the seed, and greedy evaluation as validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningDataModule
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from lth.envs import make_env


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


class EnvDataModule(LightningDataModule):
    """Owns the training envs' collector and a separate batched eval env of ``eval_episodes`` copies.

    Subclasses set ``self.hparams`` (``env_id``, ``env_kwargs``, ``num_envs``, ``eval_every``,
    ``eval_episodes``, ``seed``) and build the training stream; evaluation happens every ``eval_every`` frames.
    """

    def __init__(self) -> None:
        super().__init__()
        self._collector: Collector | None = None
        self._eval_env: EnvBase | None = None

    def make_collector(
        self, frames_per_batch: int, total_frames: int, policy: TensorDictModuleBase | None = None
    ) -> Collector:
        """A single-process collector over ``num_envs`` batched envs acting with ``policy`` (by default the
        module's exploring policy)."""
        self._close_collector()
        hp = self.hparams
        env = make_env(hp.env_id, hp.num_envs, hp.seed, **self.env_kwargs)
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

    def val_dataloader(self) -> EvalEnvLoader:
        if self._eval_env is None:
            self._eval_env = make_env(self.hparams.env_id, self.hparams.eval_episodes, **self.env_kwargs)
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
