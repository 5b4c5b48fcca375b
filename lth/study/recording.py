"""What a level and a chain leave in MLflow: each member's own logger, its level run (ticket, next state, trained
weights, densities, inputs picture, loadable policy) and the chain run's summary picture and table."""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Param

from lth.analysis.inputs import InputReport, input_report
from lth.callbacks import PruningCallback
from lth.callbacks.masks import density, layer_densities
from lth.modules import AgentModule
from lth.report.notes import density_table, levels_table
from lth.report.plots import save_chain_png, save_inputs_png
from lth.store.chain_store import ChainStore
from lth.store.tracking import metric_batch
from lth.study.chains import Chain, LevelResult, Progress, Study

if TYPE_CHECKING:
    from mlflow.entities import Metric


class MemberLogger(MLFlowLogger):
    """The MLflow logger of one member's level run: the population's hyperparameters are logged as the member's
    own (``members`` 1, its ``seed``), so the run reads like a solo chain's level run. ``copies``: the level runs
    of the same seed's other chains, which record this fit too (level 0, one dense fit per seed), get the same
    parameters and metrics.

    Metrics are buffered and written in one ``log_batch`` every ``flush_seconds`` and when the fit ends (or
    fails): one sqlite transaction per rollout and member cost a population fit about a sixth of its time. A
    crash loses at most the last seconds of an unfinished level, which a resume trains again anyway.
    """

    MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit

    def __init__(self, seed: int, flush_seconds: float = 10.0, copies: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.copies = list(copies)
        self.flush_seconds = flush_seconds
        self._pending: list[Metric] = []  # written by flush()
        self._flushed_at = time.monotonic()

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = dict(vars(params) if isinstance(params, argparse.Namespace) else params)
        params.update({key: value for key, value in (("members", 1), ("seed", self.seed)) if key in params})
        super().log_hyperparams(params, *args, **kwargs)
        if self.copies:  # exactly what MLFlowLogger made of them (flattened, stringified, truncated)
            logged = [Param(key, value) for key, value in self.experiment.get_run(self.run_id).data.params.items()]
            for run_id in self.copies:
                self.experiment.log_batch(run_id, params=logged)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._pending += metric_batch(metrics, step or 0)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics to the run and its copies."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.MAX_METRICS_PER_BATCH):
            for run_id in (self.run_id, *self.copies):
                self.experiment.log_batch(run_id, metrics=pending[start : start + self.MAX_METRICS_PER_BATCH])
        self._flushed_at = time.monotonic()

    def finalize(self, status: str = "success") -> None:
        self.flush()
        super().finalize(status)


@dataclass
class MemberFit:
    """What a fit left for one member before pruning (solo shapes): its best return, where it diverged, the masks
    it trained under, its final weights and its pruning chain's state."""

    best_return: float
    diverged_at: int | None
    masks: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


class FitEnd(L.Callback):
    """Takes each member's :class:`MemberFit` when training ends, before the pruning callback prunes and rewinds."""

    def __init__(self, pruning: PruningCallback) -> None:
        self.pruning = pruning
        self.fits: list[MemberFit] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fits = [MemberFit(float(pl_module.best_returns[k]), pl_module.member_diverged_at[k],
                               self.pruning.member_masks(k), self.pruning.member_weights(k),
                               copy.deepcopy(self.pruning.member_state_dict(k)))
                     for k in range(self.pruning.members)]


@dataclass
class Member:
    """A population member's chain as stored: its finished level runs and recorded scores."""

    chain: Chain
    store: ChainStore
    tags: dict[str, str]  # of its level runs: the chain's, and how the UI shows its condition
    run_ids: dict[int, str]  # of its finished levels
    results: list[LevelResult]
    progress: Progress  # the study's, shared by all members

    @property
    def next_level(self) -> int:
        return len(self.run_ids)

    def state_after(self, level: int) -> dict[str, Any] | None:
        """The pruning state level ``level`` left for the next (``None`` for level -1: the initial weights)."""
        return None if level < 0 else self.store.load(self.run_ids[level], "next_state.pt")


def record_level(study: Study, model: AgentModule, datamodule: L.LightningDataModule, callback: PruningCallback,
                 member: Member, k: int, level: int, run_id: str, fit: MemberFit) -> LevelResult:
    """Log member k's level: its ticket, next state, trained weights, densities and input picture, and score
    (``fit``: what the fit left for it; ``callback`` has pruned it since)."""
    store, condition = member.store, member.chain.condition
    # A diverged level is a result: its best return before divergence stands (NaN: it diverged before any
    # evaluation), and the chain goes on, pruning from the best (else the last good, finite) weights.
    diverged_at, trained = fit.diverged_at, fit.masks
    best = fit.best_return
    result = LevelResult(condition, level, density(trained), best if best > -math.inf else math.nan)
    per_layer = layer_densities(trained)
    inputs = input_report(fit.weights, trained, datamodule.hparams.env_id, model.obs_shape)
    ticket = {"level": level, "condition": condition, "seed": member.chain.seed, "masks": trained,
              "rewind_state": callback.member_rewind_state(k)}
    next_state = callback.member_state_dict(k)
    trained_weights = callback.member_trained_weights(k)
    files: dict[str, Callable[[Path], None]] = {
        "ticket.pt": lambda p: torch.save(ticket, p),
        "next_state.pt": lambda p: torch.save(next_state, p),
        "trained.pt": lambda p: torch.save(trained_weights, p),
        "densities.md": lambda p: p.write_text(density_table(per_layer)),
        "inputs.png": lambda p: save_inputs_png(
            inputs, p, f"{condition}, level {level}, density {result.density:.3f}: surviving input weights"),
    }
    summary = {"ticket/best_return": result.best_return, "density": result.density}
    metrics = {**summary, "level": level, **{f"density/{n}": v for n, v in per_layer.items()},
               **_input_metrics(inputs)}
    if diverged_at is not None:
        store.client.set_tag(run_id, "diverged", "true")  # the module logged the metric diverged_at_frames
    from lth.store.policy_model import log_policy  # imports MLflow's pyfunc: not at import time

    # The loadable policy the ticket's score came from (the weights the next mask is computed from, masked): the
    # model itself already holds the next level's starting weights.
    log_policy(model, k, run_id, study.tracking_uri, weights=trained_weights)
    store.finish_level(run_id, level, metrics, summary, files)
    note = "" if diverged_at is None else (
        f" (training diverged at {diverged_at} frames: a non-finite loss, output or weight)")
    print(f"{member.chain.prefix} level {level}: density {result.density:.3f}, "
          f"best return {result.best_return:.1f}{note} ({member.progress.record()})", flush=True)
    return result


def record_chain(member: Member) -> None:
    """The chain run's own picture and table of its levels: ``best_return_vs_density.png`` and ``levels.md``."""
    results = sorted(member.results, key=lambda r: r.level)
    densities, returns = [r.density for r in results], [r.best_return for r in results]
    title = f"{member.chain.condition} seed {member.chain.seed}: best return against density"
    member.store.log_files({
        "best_return_vs_density.png": lambda p: save_chain_png(densities, returns, p, title),
        "levels.md": lambda p: p.write_text(levels_table(results)),
    })


def _input_metrics(inputs: dict[str, InputReport]) -> dict[str, float]:
    """``inputs/alive`` (the first sub-module's live inputs), and per sub-module its live inputs and the
    surviving weight mass of each channel or named input."""
    metrics = {"inputs/alive": float(next(iter(inputs.values())).alive)}
    for group, report in inputs.items():
        metrics[f"inputs/{group}/alive"] = float(report.alive)
        metrics.update({f"inputs/{group}/{name}": mass for name, mass in report.channel_mass().items()})
    return metrics


def stored_result(run: Any, condition: str, level: int) -> LevelResult:
    """The score a finished level run recorded."""
    return LevelResult(condition, level, run.data.metrics["density"], run.data.metrics["ticket/best_return"])
