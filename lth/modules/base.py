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
from lightning.pytorch.utilities import rank_zero_warn
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from torch import nn
from torchrl.envs import EnvBase

from lth.domains import check_domains
from lth.envs import env_shapes
from lth.evaluation import evaluate_episodes
from lth.networks import NetworkSpec


def shuffled_minibatches(data: TensorDictBase, minibatches: int, epochs: int) -> Iterator[TensorDictBase]:
    """``epochs`` passes over the flattened ``data``, each in ``minibatches`` shuffled minibatches."""
    flat = data.reshape(-1)
    size = minibatch_size(flat.numel(), minibatches)
    for _ in range(epochs):
        for idx in torch.randperm(flat.numel()).split(size):
            yield flat[idx]


def minibatch_size(frames: int, minibatches: int) -> int:
    """The size of each of :func:`shuffled_minibatches`' minibatches over ``frames`` frames (the last may be smaller)."""
    return max(1, frames // minibatches)


def minibatch_steps(frames: int, minibatches: int, epochs: int) -> int:
    """How many minibatches (optimizer steps) :func:`shuffled_minibatches` yields over ``frames`` frames."""
    return epochs * math.ceil(frames / minibatch_size(frames, minibatches))


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

    Divergence is a result, not a crash: when :meth:`update` meets a non-finite loss, network output or weights
    (see there), the fit stops cleanly before its next batch, back at the weights before its last step;
    :attr:`diverged_at` holds the env frames at which it happened (metric ``diverged_at_frames``), and the best
    return of the evaluations before it stands. (A subclass overriding ``on_train_batch_start``/``_end`` calls
    ``super()``: they switch the output guard on and off.)
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
        check_domains(type(self), dict(self.hparams))  # what the parser checks, for modules built in Python too
        self.automatic_optimization = False
        self.obs_shape, self.action_spec = env_shapes(env_id, **(env_kwargs or {}))
        self.frames = 0
        self.best_return = -math.inf
        #: Env frames of the fit at which training diverged (:meth:`update`); ``None`` while it has not.
        self.diverged_at: int | None = None
        self._weights: list[torch.Tensor] = []  # detached views of the parameters update() steps
        self._last_good: list[torch.Tensor] = []  # their values before the last step
        self._nonfinite_outputs: torch.Tensor | None = None  # set by the output guard (see _guard_outputs)
        self._output_hooks: list[Any] = []

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

    def optimizer_steps_per_batch(self, frames_per_batch: int) -> int:
        """Optimizer steps one training batch of ``frames_per_batch`` frames makes (one here; modules that pass
        over a batch in minibatches say how many), so a late rewind can be checked against a fit's steps."""
        return 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True
        )

    @property
    def diverged(self) -> bool:
        """Whether training diverged in this fit (then :meth:`update` makes no more steps)."""
        return self.diverged_at is not None

    def update(self, loss: torch.Tensor, *outputs: torch.Tensor) -> None:
        """One optimizer step on ``loss`` with gradients clipped to norm ``max_grad_norm``, unless training diverged.

        Divergence is any of: ``loss`` or one of ``outputs`` (other results of the same forward pass that the
        learner uses, e.g. DQN's TD errors, its replay priorities) is NaN/inf; a guarded network output in this
        batch was NaN/inf (:meth:`_guard_outputs`); or, after the step, the global L2 norm of the parameters is
        NaN/inf, which covers NaN/inf weights, non-finite gradients (clipping spreads them to every weight) and
        weights whose squares overflow float32 (|w| above ~1.8e19: one Adam step at lr 1e38 gives finite
        weights whose forward passes are inf/NaN). Then no step is taken (or the offending one is undone): the
        model goes back to the weights before its last step, :attr:`diverged_at` records the env frames,
        ``diverged_at_frames`` goes to the loggers, and ``trainer.should_stop`` is set. Lightning 2.6's
        training loop checks it after this batch, before fetching the next one (lth's streams have a length,
        so nothing is prefetched): no collector acts with diverged weights. It still validates once;
        :meth:`validation_step` then plays no episodes and logs ``eval/return`` NaN, which never counts as a
        best. Later calls in the fit are no-ops.

        Not divergence: a huge but finite loss (lr 1e6: critic loss ~1e14, entropy 0) -- there is no
        principled bound, and the logged ``train/*`` curves show it. A finite loss with finite gradients
        under Adam moves each weight by at most ~lr per step, so checking the loss alone would miss only the
        overflows above; the weight norm, the outputs and the guard catch those.

        Cost per step: one host sync on the loss (and outputs), one fused norm and one in-place copy of the
        parameters, about 45 us measured on a loaded 2-core CPU, next to ~1.4-2.5 ms per small DQN/PPO update.
        """
        if self.diverged:
            return
        opt = self.optimizers()
        opt.zero_grad()
        finite = torch.isfinite(loss.detach())
        for out in outputs:
            finite = finite & torch.isfinite(out.detach()).all()
        if self._output_hooks:  # guarded outputs this batch: one host sync for both
            finite = finite & ~self._nonfinite_outputs
        if not finite:
            if self._output_hooks and bool(self._nonfinite_outputs):
                self._diverge("a network output is not finite")
            else:
                loss_ok = bool(torch.isfinite(loss.detach()))
                self._diverge("an output is not finite" if loss_ok else "the loss is not finite")
            return
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        if not self._weights:  # once per fit: detached views of the trained parameters, and room for a copy
            self._weights = [p.detach() for p in self.parameters() if p.requires_grad]
            self._last_good = [w.clone() for w in self._weights]
        else:
            for good, weight in zip(self._last_good, self._weights, strict=True):
                good.copy_(weight)
        opt.step()
        if not torch.isfinite(torch.nn.utils.get_total_norm(self._weights)):
            opt.zero_grad()
            self._diverge("the weights after the step are not finite")

    def _guard_outputs(self) -> None:
        """Hook the output layer (last Linear/Conv) of every network in :attr:`network_names` that parameterises a
        distribution (a TorchRL ``ProbabilisticActor``) for one training batch: a non-finite output sets
        :attr:`_nonfinite_outputs` and is replaced by 0. Weights that are finite but too large (their products
        overflow float32) thus reach :meth:`update` as divergence instead of raising inside TorchRL's losses
        (which sample when an entropy is not finite). Finite outputs pass unchanged. Value and Q networks need
        no guard: their non-finite outputs reach the loss as NaN/inf. Only on during training batches, since a
        module hook costs every forward pass (acting too) the slow path of ``nn.Module.__call__``."""
        self._unguard_outputs()
        self._nonfinite_outputs = torch.zeros((), dtype=torch.bool, device=self.device)
        for name in self.network_names:
            network = getattr(self, name)
            if not isinstance(network, ProbabilisticTensorDictSequential):
                continue
            layers = [m for m in network.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
            if layers:
                self._output_hooks.append(layers[-1].register_forward_hook(self._guard_output))

    def _unguard_outputs(self) -> None:
        for handle in self._output_hooks:
            handle.remove()
        self._output_hooks = []

    def _guard_output(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(out)
        self._nonfinite_outputs.logical_or_(~finite.all())
        return torch.where(finite, out, 0.0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._guard_outputs()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._unguard_outputs()

    def _diverge(self, why: str) -> None:
        for weight, good in zip(self._weights, self._last_good, strict=True):  # back before the step that led here
            weight.copy_(good)
        self.diverged_at = self.frames
        rank_zero_warn(f"training diverged at {self.frames} env frames ({why}): this fit stops here, back at the "
                       "weights before its last step; its best evaluation return so far stands")
        self.log_at_frames({"diverged_at_frames": float(self.frames)})
        self.trainer.should_stop = True

    def setup(self, stage: str) -> None:
        # Each fit is one learning curve; a resumed fit restores these from the checkpoint afterwards.
        if stage == "fit":
            self.frames = 0
            self.best_return = -math.inf
            self.diverged_at = None
            self._weights, self._last_good = [], []

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
        if self.diverged:
            # Lightning validates once more after a stop request: no episodes, no score (NaN is never a best).
            self.log("eval/return", math.nan, prog_bar=True, logger=False, batch_size=1)
            return
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
        checkpoint["agent"] = {"frames": self.frames, "best_return": self.best_return, "class_path": class_path,
                               "diverged_at": self.diverged_at}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("agent", {})
        self.frames = state.get("frames", 0)
        self.best_return = state.get("best_return", -math.inf)
        self.diverged_at = state.get("diverged_at")
