"""What every RL agent shares: its env's shapes, its networks' spec and initialisation, hyperparameters, env
frames, greedy evaluation as Lightning validation, best return."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from lth.envs import env_shapes
from lth.evaluation import evaluate_episodes
from lth.networks import NetworkSpec


def shuffled_minibatches(data: TensorDictBase, minibatches: int, epochs: int) -> Iterator[TensorDictBase]:
    """``epochs`` passes over the flattened ``data``, each in ``minibatches`` shuffled minibatches."""
    flat = data.reshape(-1)
    size = max(1, flat.numel() // minibatches)
    for _ in range(epochs):
        for idx in torch.randperm(flat.numel()).split(size):
            yield flat[idx]


class AgentModule(LightningModule):
    """A LightningModule whose data are env frames and whose validation is a set of greedy episodes.

    A subclass takes ``env_id``, ``env_kwargs`` and ``network`` (a :class:`NetworkSpec` with the subclass's
    default; a dict of some options amends that default) among its constructor arguments and passes them to
    ``super().__init__``, which saves every constructor
    argument as a hyperparameter, probes the env once (:attr:`obs_shape`, :attr:`action_spec`) and keeps the
    spec as :attr:`network_spec`. The subclass then builds its networks from these, names them in
    :attr:`network_names` (what :meth:`reset_parameters` re-initialises), and defines :attr:`policy` (what
    collectors act with), its losses and ``training_step`` with the hyperparameters ``lr``, ``weight_decay``
    and ``max_grad_norm`` (Adam, manual optimisation through :meth:`update`). Every metric goes to the loggers
    with ``step`` = env frames seen in this fit, so learning curves share one x-axis; the best mean evaluation
    return of the fit (the paper's ticket score) is logged as ``eval/best_return``.
    """

    #: The sub-modules built from :attr:`network_spec`, in construction order.
    network_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any] | None, network: NetworkSpec | Mapping[str, Any]
    ) -> None:
        super().__init__()
        self.network_spec = NetworkSpec.of(network, default=self.default_network())
        # Lightning collects the arguments of the whole __init__ chain, so this saves the subclass's too; the spec
        # is stored as a plain dict (checkpoints load without pickled classes, loggers get network/<option>).
        self.save_hyperparameters()
        self.save_hyperparameters({"network": asdict(self.network_spec)})
        self.automatic_optimization = False
        self.obs_shape, self.action_spec = env_shapes(env_id, **(env_kwargs or {}))
        self.frames = 0
        self.best_return = -math.inf

    @classmethod
    def default_network(cls) -> NetworkSpec:
        """The ``network`` default of the subclass's constructor (a mapping given instead amends it)."""
        param = inspect.signature(cls).parameters.get("network")
        default = None if param is None else param.default
        return default if isinstance(default, NetworkSpec) else NetworkSpec()

    def reset_parameters(self) -> None:
        """Fresh initial weights for every network in :attr:`network_names` (re-initialised baselines call this)."""
        for name in self.network_names:
            self.network_spec.initialize(getattr(self, name))

    @property
    def policy(self) -> TensorDictModuleBase:
        """The exploring policy that collectors act with (weights shared with the trained networks)."""
        raise NotImplementedError

    @property
    def eval_policy(self) -> TensorDictModuleBase:
        """What evaluation acts with, under deterministic exploration; the exploring policy by default."""
        return self.policy

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True
        )

    def update(self, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss`` with gradients clipped to norm ``max_grad_norm``."""
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        opt.step()

    def setup(self, stage: str) -> None:
        # Each fit is one learning curve; a resumed fit restores these from the checkpoint afterwards.
        if stage == "fit":
            self.frames = 0
            self.best_return = -math.inf

    def log_at_frames(self, metrics: dict[str, float]) -> None:
        """Send ``metrics`` to every logger at step = env frames."""
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.frames)

    def count_frames(self, frames: int, batch_idx: int) -> None:
        """Add ``frames`` newly collected env frames; the progress bar shows them every ``log_every_n_steps``.

        (Each ``self.log`` call costs Lightning about a millisecond, a lot next to one small DQN update.)
        """
        self.frames += frames
        if batch_idx % self.trainer.log_every_n_steps == 0:
            self.log("frames", float(self.frames), prog_bar=True, logger=False, batch_size=1)

    def validation_step(self, env: EnvBase, batch_idx: int) -> None:
        returns = evaluate_episodes(env, self.eval_policy)
        mean = returns.mean().item()
        self.best_return = max(self.best_return, mean)
        self.log("eval/return", mean, prog_bar=True, logger=False, batch_size=1)
        self.log("eval/best_return", self.best_return, logger=False, batch_size=1)
        spread = returns.std(correction=0).item()  # population std: defined for a single episode too
        self.log_at_frames({"eval/return": mean, "eval/return_std": spread, "eval/best_return": self.best_return})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the class path lets lth.experts.load_agent rebuild any agent from its checkpoint alone
        class_path = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["agent"] = {"frames": self.frames, "best_return": self.best_return, "class_path": class_path}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("agent", {})
        self.frames = state.get("frames", 0)
        self.best_return = state.get("best_return", -math.inf)
