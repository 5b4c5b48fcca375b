"""Bookkeeping every RL agent shares: env frames, greedy evaluation as Lightning validation, best return."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import LightningModule
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from lth.evaluation import evaluate_episodes


class AgentModule(LightningModule):
    """A LightningModule whose data are env frames and whose validation is a set of greedy episodes.

    Subclasses define :attr:`policy` (what collectors act with) and ``training_step``. Every metric goes to
    the loggers with ``step`` = env frames seen in this fit, so learning curves share one x-axis; the best
    mean evaluation return of the fit (the paper's ticket score) is logged as ``eval/best_return``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0
        self.best_return = -math.inf

    @property
    def policy(self) -> TensorDictModuleBase:
        """The exploring policy that collectors act with (weights shared with the trained networks)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        # Each fit is one learning curve; a resumed fit restores these from the checkpoint afterwards.
        if stage == "fit":
            self.frames = 0
            self.best_return = -math.inf

    def log_at_frames(self, metrics: dict[str, float]) -> None:
        """Send ``metrics`` to every logger at step = env frames."""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.frames)

    def count_frames(self, batch: TensorDictBase) -> None:
        self.frames += batch.numel()
        self.log("frames", float(self.frames), prog_bar=True, logger=False, batch_size=1)

    def validation_step(self, env: EnvBase, batch_idx: int) -> None:
        returns = evaluate_episodes(env, self.policy)
        mean = returns.mean().item()
        self.best_return = max(self.best_return, mean)
        self.log("eval/return", mean, prog_bar=True, logger=False, batch_size=1)
        self.log("eval/best_return", self.best_return, logger=False, batch_size=1)
        self.log_at_frames(
            {"eval/return": mean, "eval/return_std": returns.std().item(), "eval/best_return": self.best_return}
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["agent"] = {"frames": self.frames, "best_return": self.best_return}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("agent", {})
        self.frames = state.get("frames", 0)
        self.best_return = state.get("best_return", -math.inf)
