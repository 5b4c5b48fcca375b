"""IMP studies: one chain of fits per ticket condition, every level recorded in MLflow, resumable.

A chain is ``levels`` fits of the same model with one :class:`lth.callbacks.PruningCallback`; level k trains the
network of density 0.8^k. Each level is a nested MLflow run holding the learning curve, the ticket
(masks + rewind weights, ``ticket.pt``), the state the next level starts from (``next_state.pt``), a
per-layer density table and a picture of the input-layer masks; the chain's parent run logs
``ticket/best_return`` and ``density`` with step = level.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from lightning.pytorch.loggers import MLFlowLogger

from lth.analysis.inputs import InputReport, input_report
from lth.callbacks import PruningCallback, condition_names
from lth.callbacks.masks import density, layer_densities
from lth.chain_identity import chain_description, describe_differences
from lth.errors import ConfigError
from lth.modules import AgentModule
from lth.plots import save_inputs_png
from lth.tracking import ChainStore


@dataclass
class ImpSettings:
    """``--imp.*`` options of ``lth imp``."""

    levels: PositiveInt = 20
    condition: str = "mask/weights"
    conditions: str | None = None  # "all" = the four paper conditions, or a comma-separated list
    amount: OpenUnitInterval = 0.2  # the fraction of the remaining weights each level prunes
    modules: list[str] | None = None  # sub-modules to prune, e.g. [actor] (the paper's AP); None = all
    rewind: NonNegativeInt | Literal["init"] = "init"  # "init" or N optimizer steps of the first fit (late rewind)
    prune_from: Literal["best", "last"] = "best"
    branch_from: str | None = None  # parent run id of a stored ticket chain whose masks to reuse per level

    def chain_conditions(self) -> list[str]:
        """The conditions to run, one chain each, validated."""
        if self.conditions is None:
            chosen = [self.condition]
        elif self.conditions == "all":
            chosen = list(condition_names(paper=True))
        else:
            chosen = [c.strip() for c in self.conditions.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in condition_names()]
        if unknown:
            option = "imp.conditions" if self.conditions is not None else "imp.condition"
            raise ConfigError(f"{option}: unknown condition(s) {unknown}; valid: {list(condition_names())} or 'all'")
        if self.levels < 1:
            raise ConfigError(f"imp.levels must be >= 1, got {self.levels}")
        return chosen


@dataclass
class LevelResult:
    condition: str
    level: int
    density: float
    best_return: float


@dataclass
class Study:
    """What every chain of a study shares: the model (at its initial weights), data, trainer options, store."""

    model: AgentModule
    datamodule: L.LightningDataModule
    trainer_kwargs: dict[str, Any]
    tracking_uri: str
    experiment: str
    seed: int
    tags: dict[str, str]
    description: dict[str, Any] | None = None  # JSON data: model, data, trainer budget, seed (lth.chain_identity)


class FinalWeights(L.Callback):
    """Keeps a copy of the weights at the end of training, before the pruning callback rewinds them."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {name: p.detach().clone() for name, p in pl_module.named_parameters()}


def run_study(study: Study, settings: ImpSettings, resume: bool = True) -> list[LevelResult]:
    """Run (or resume) one chain per condition; returns every finished level's score."""
    init_state = copy.deepcopy(study.model.state_dict())
    results: list[LevelResult] = []
    for condition in settings.chain_conditions():
        study.model.load_state_dict(init_state)
        results += run_chain(study, settings, condition, resume)
    return results


def run_chain(study: Study, settings: ImpSettings, condition: str, resume: bool) -> list[LevelResult]:
    """Find the chain of this configuration (or start one), claim it, train its missing levels, release it."""
    tags = {**study.tags, "condition": condition, "seed": str(study.seed)}
    if settings.branch_from:
        tags["branch_from"] = settings.branch_from
    description = None
    if study.description is not None:
        description = chain_description(study.description, dataclasses.asdict(settings), condition)
    store = ChainStore.open(study.tracking_uri, study.experiment, tags, resume, description)
    try:
        return _train_chain(study, settings, condition, store, tags)
    finally:
        store.release()


def _train_chain(study: Study, settings: ImpSettings, condition: str, store: ChainStore,
                 tags: dict[str, str]) -> list[LevelResult]:
    prefix = f"[{condition} seed {study.seed}]"
    if store.took_over:
        print(f"{prefix} took over the stale claim of chain {store.parent_id} ({store.took_over})", flush=True)
    if store.closest is not None:
        chain, diffs = store.closest
        print(f"{prefix} new chain: the configuration differs from chain {chain} in {describe_differences(diffs)}",
              flush=True)
    store.discard_unfinished()
    print(f"{prefix} chain run id {store.parent_id}", flush=True)
    callback = PruningCallback(
        amount=settings.amount, condition=condition, modules=settings.modules, rewind=settings.rewind,
        prune_from=settings.prune_from, seed=study.seed, mask_source=_branch_masks(study, settings),
    )
    runs = store.finished_runs()
    finished = sorted(runs)
    if finished != list(range(len(finished))):
        raise ConfigError(f"chain {store.parent_id} has gaps in its finished levels {finished}; start a new chain")
    results = [_recorded(runs[level], condition, level) for level in finished]
    store.fill_parent_metrics(runs)
    if finished:
        callback.load_state_dict(store.load(runs[finished[-1]].info.run_id, "next_state.pt"))
        if callback.level != len(finished) and len(finished) < settings.levels:
            raise ConfigError(f"chain {store.parent_id} ended at level {finished[-1]} (its branch source has no "
                              "further masks); it cannot be extended")
    for level in range(len(finished), settings.levels):
        store.heartbeat()  # at every level boundary too; raises if another process took the chain over
        results.append(_run_level(study, store, callback, condition, level, tags))
    store.finish_chain()
    return results


def _run_level(study: Study, store: ChainStore, callback: PruningCallback, condition: str, level: int,
               tags: dict[str, str]) -> LevelResult:
    L.seed_everything(study.seed * 10_007 + level, verbose=False)  # a level's training depends only on (seed, level)
    run_id = store.start_level(level, tags)
    logger = MLFlowLogger(experiment_name=study.experiment, tracking_uri=study.tracking_uri, run_id=run_id)
    final = FinalWeights()
    trainer = L.Trainer(**study.trainer_kwargs, logger=logger, callbacks=[final, callback], enable_checkpointing=False)
    trainer.val_check_interval = getattr(study.datamodule, "eval_interval", trainer.val_check_interval)
    trained = dict(callback.masks)
    trainer.fit(study.model, study.datamodule)
    trained = trained or {n: torch.ones_like(m) for n, m in callback.masks.items()}
    # A diverged level is a result: its best return before divergence stands (NaN: it diverged before any
    # evaluation), and the chain goes on, pruning from the best (else the last good, finite) weights.
    diverged_at = study.model.diverged_at
    best = study.model.best_return if study.model.best_return > -math.inf else math.nan
    result = LevelResult(condition, level, density(trained), best)
    per_layer = layer_densities(trained)
    inputs = input_report(final.weights, trained, study.datamodule.hparams.env_id, study.model.obs_shape)
    ticket = {"level": level, "condition": condition, "seed": study.seed, "masks": trained,
              "rewind_state": callback.rewind_state}
    next_state = callback.state_dict()
    files: dict[str, Callable[[Path], None]] = {
        "ticket.pt": lambda p: torch.save(ticket, p),
        "next_state.pt": lambda p: torch.save(next_state, p),
        "densities.md": lambda p: p.write_text(_density_table(per_layer)),
        "inputs.png": lambda p: save_inputs_png(
            inputs, p, f"{condition}, level {level}, density {result.density:.3f}: surviving input weights"),
    }
    summary = {"ticket/best_return": result.best_return, "density": result.density}
    metrics = {**summary, "level": level, **{f"density/{n}": v for n, v in per_layer.items()},
               **_input_metrics(inputs)}
    if diverged_at is not None:
        store.client.set_tag(run_id, "diverged", "true")  # the module logged the metric diverged_at_frames
    store.finish_level(run_id, level, metrics, summary, files)
    note = "" if diverged_at is None else (
        f" (training diverged at {diverged_at} frames: a non-finite loss, output or weight)")
    print(f"[{condition} seed {study.seed}] level {level}: density {result.density:.3f}, "
          f"best return {result.best_return:.1f}{note}", flush=True)
    return result


def _input_metrics(inputs: dict[str, InputReport]) -> dict[str, float]:
    """``inputs/alive`` (the first sub-module's live inputs), and per sub-module its live inputs and the
    surviving weight mass of each channel or named input."""
    metrics = {"inputs/alive": float(next(iter(inputs.values())).alive)}
    for group, report in inputs.items():
        metrics[f"inputs/{group}/alive"] = float(report.alive)
        metrics.update({f"inputs/{group}/{name}": mass for name, mass in report.channel_mass().items()})
    return metrics


def _recorded(run: Any, condition: str, level: int) -> LevelResult:
    return LevelResult(condition, level, run.data.metrics["density"], run.data.metrics["ticket/best_return"])


def _branch_masks(study: Study, settings: ImpSettings) -> Callable[[int], dict[str, torch.Tensor]] | None:
    """In branch mode, level k's masks are the stored chain's level-k ticket masks (``None`` past its end)."""
    if not settings.branch_from:
        return None
    source = ChainStore.of_run(study.tracking_uri, settings.branch_from)

    def masks(level: int) -> dict[str, torch.Tensor] | None:
        run_id = source.find_level_run(level)
        return None if run_id is None else source.load(run_id, "ticket.pt")["masks"]

    return masks


def _density_table(per_layer: dict[str, float]) -> str:
    rows = "\n".join(f"| `{name}` | {value:.4f} |" for name, value in per_layer.items())
    return f"| layer | density |\n| --- | --- |\n{rows}\n"


def summary_table(results: list[LevelResult]) -> str:
    """Best return per level (rows) and condition (columns), as Markdown."""
    conditions = list(dict.fromkeys(r.condition for r in results))
    levels = sorted({r.level for r in results})
    cell = {(r.condition, r.level): r for r in results}
    head = "| level | density | " + " | ".join(conditions) + " |"
    rule = "| --- | --- |" + " --- |" * len(conditions)
    lines = [head, rule]
    for level in levels:
        dens = next(r.density for r in results if r.level == level)
        scores = [f"{cell[(c, level)].best_return:.1f}" if (c, level) in cell else "" for c in conditions]
        lines.append(f"| {level} | {dens:.3f} | " + " | ".join(scores) + " |")
    return "\n".join(lines)
