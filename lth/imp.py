"""IMP studies: one chain of fits per ticket condition, every level recorded in MLflow, resumable.

A chain is ``levels`` fits of the same model with one :class:`lth.callbacks.PruningCallback`; level k trains the
network of density 0.8^k. Each level is a nested MLflow run holding the learning curve, the ticket
(masks + rewind weights, ``ticket.pt``), the state the next level starts from (``next_state.pt``), a
per-layer density table and a picture of the input-layer masks; the chain's parent run logs
``ticket/best_return`` and ``density`` with step = level.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import DummyLogger

from lth.analysis.inputs import InputReport, input_report
from lth.batched import member_tensors, write_member
from lth.callbacks import PruningCallback, get_condition
from lth.callbacks.masks import density, layer_densities
from lth.callbacks.seeding import training_seed
from lth.chain_identity import chain_description, describe_differences, member_description
from lth.errors import ConfigError
from lth.settings import ImpSettings
from lth.modules import AgentModule
from lth.plots import save_chain_png, save_inputs_png
from lth.tracking import ChainShown, ChainStore, chain_run_name, metric_batch, source_tags
from lth.ui_views import CHAINS_VIEW, LEVELS_VIEW, run_tags, study_views

if TYPE_CHECKING:
    from mlflow.entities import Metric


@dataclass
class LevelResult:
    condition: str
    level: int
    density: float
    best_return: float


@dataclass
class Study:
    """What every chain of a study shares: the model as configured (an ordinary agent), data, trainer options,
    store, seeds, and how many chains may train together as one population."""

    model: AgentModule
    datamodule: L.LightningDataModule
    trainer_kwargs: dict[str, Any]
    tracking_uri: str
    experiment: str
    seeds: list[int]
    tags: dict[str, str]
    description: dict[str, Any] | None = None  # JSON data: model, data, trainer budget, seed (lth.chain_identity)
    population: int | None = None  # at most this many chains per population; None: all of them
    config_yaml: str = ""  # the resolved command config, stored as each chain's config.yaml


@dataclass(frozen=True)
class Chain:
    """One IMP chain of a study: its seed and condition."""

    seed: int
    condition: str

    @property
    def prefix(self) -> str:
        return f"[{self.condition} seed {self.seed}]"

    @property
    def name(self) -> str:
        """Its chain run's name, e.g. ``mask/weights s0``."""
        return chain_run_name(self.condition, self.seed)


class MemberLogger(MLFlowLogger):
    """The MLflow logger of one member's level run: the population's hyperparameters are logged as the member's
    own (``members`` 1, its ``seed``), so the run reads like a solo chain's level run.

    Metrics are buffered and written in one ``log_batch`` every ``flush_seconds`` and when the fit ends (or
    fails): one sqlite transaction per rollout and member cost a population fit about a sixth of its time. A
    crash loses at most the last seconds of an unfinished level, which a resume trains again anyway.
    """

    MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit

    def __init__(self, seed: int, flush_seconds: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.flush_seconds = flush_seconds
        self._pending: list[Metric] = []  # written by flush()
        self._flushed_at = time.monotonic()

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        params = dict(vars(params) if isinstance(params, argparse.Namespace) else params)
        params.update({key: value for key, value in (("members", 1), ("seed", self.seed)) if key in params})
        super().log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._pending += metric_batch(metrics, step or 0)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics to the run."""
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.MAX_METRICS_PER_BATCH):
            self.experiment.log_batch(self.run_id, metrics=pending[start : start + self.MAX_METRICS_PER_BATCH])
        self._flushed_at = time.monotonic()

    def finalize(self, status: str = "success") -> None:
        self.flush()
        super().finalize(status)


class FinalWeights(L.Callback):
    """Keeps a copy of the weights at the end of training, before the pruning callback rewinds them."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {name: p.detach().clone() for name, p in pl_module.named_parameters()}


class Executor(Protocol):
    """What runs a study's units (:mod:`lth.executors` has them: in turn here, or as Ray tasks): a function of each
    unit, the results in the units' order."""

    def map_units(self, fn: Callable[[list[Chain]], list[LevelResult]], units: Sequence[list[Chain]],
                  names: Sequence[str] | None = None) -> list[list[LevelResult]]: ...


def run_study(study: Study, settings: ImpSettings, executor: Executor, resume: bool = True,
              unit: Callable[[list[Chain]], list[LevelResult]] | None = None) -> list[LevelResult]:
    """Run (or resume) one chain per seed and condition, as populations of at most ``study.population`` chains
    (one batched network per population); returns every finished level's score.

    ``executor`` runs the populations (:mod:`lth.executors`); ``unit`` trains one of them
    where the executor runs it (:class:`lth.runner.ImpUnit`: another process rebuilds the study), always
    resuming, since an executor may run a unit twice: ``resume=False`` then starts the new chains here first."""
    chains = [Chain(seed, condition) for seed in study.seeds for condition in settings.chain_conditions()]
    size = population_size(study, settings, len(chains))
    units = [chains[start : start + size] for start in range(0, len(chains), size)]
    if unit is not None and not resume:
        _start_new_chains(study, settings, chains)
    progress = Progress(len(chains) * settings.levels)  # the ETA of this process's units
    run = unit or (lambda population: run_population(study, settings, population, resume, progress))
    names = [", ".join(c.name for c in population) for population in units]
    return [r for results in executor.map_units(run, units, names) for r in results]


def _start_new_chains(study: Study, settings: ImpSettings, chains: list[Chain]) -> None:
    """New parent runs for ``chains`` (``--no_resume``), unclaimed: the units, run elsewhere, resume them."""
    for chain in chains:
        _open_chain(study, settings, chain, resume=False).release()


@dataclass
class Progress:
    """How far a study is, for the ETA on each level's line: level runs recorded by this process, of those left."""

    left: int  # level runs the study has yet to record (finished ones found on resume are taken off)
    done: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def record(self) -> str:
        """Count one recorded level run; its progress note, e.g. ``12/80 levels, ETA 4 min``."""
        self.done += 1
        if self.done >= self.left:
            return f"{self.done}/{self.left} levels"
        eta = (time.monotonic() - self.started) / self.done * (self.left - self.done)
        return f"{self.done}/{self.left} levels, ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def population_size(study: Study, settings: ImpSettings, chains: int) -> int:
    """Chains per population: ``--population``, else all of them as far as their replay buffers fit in half the
    memory available now; 1 for a model that cannot batch members or a branch study (its masks come from a stored
    chain, one chain at a time)."""
    if "members" not in inspect.signature(type(study.model)).parameters or settings.branch_from:
        return 1
    if study.population:
        return min(chains, study.population)
    per_member = replay_bytes(study.datamodule, study.model.obs_shape)
    fits = chains if per_member == 0 else max(1, int(0.5 * available_memory() // per_member))
    if fits < chains:
        print(f"populations of {fits} chains: each member's replay buffer takes {per_member / 2**30:.1f} GiB "
              f"(set --population to choose)", flush=True)
    return min(chains, fits)


def replay_bytes(datamodule: L.LightningDataModule, obs_shape: tuple[int, ...]) -> int:
    """The memory one member's full replay buffer takes (float32 observation and next observation per
    transition, plus its small entries); 0 for data without a buffer."""
    size = datamodule.hparams.get("buffer_size", 0)
    return int(size * (2 * 4 * math.prod(obs_shape) + 64))


def available_memory() -> int:
    """Bytes of memory available for new work now: Linux's ``MemAvailable`` (free and reclaimable), else the
    free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def run_population(study: Study, settings: ImpSettings, chains: list[Chain], resume: bool,
                   progress: Progress | None = None) -> list[LevelResult]:
    """Find each chain of the population (or start it), claim it, train the missing levels of all of them
    together, release them."""
    mask_source = _branch_masks(study, settings)  # read before any run is opened: a bad source stops here
    stores: list[ChainStore] = []
    try:
        for chain in chains:
            stores.append(_open_chain(study, settings, chain, resume))
    except BaseException:  # e.g. one chain is busy: the chains opened so far are let go, new empty ones deleted
        for store in stores:
            store.abandon()
        raise
    try:
        return _train_population(study, settings, chains, stores, progress or Progress(len(chains) * settings.levels),
                                 mask_source)
    finally:
        for store in stores:
            store.release()


def _chain_tags(study: Study, settings: ImpSettings, chain: Chain) -> dict[str, str]:
    tags = {**study.tags, "condition": chain.condition, "seed": str(chain.seed)}
    if settings.branch_from:
        tags["branch_from"] = settings.branch_from
    return tags


def _open_chain(study: Study, settings: ImpSettings, chain: Chain, resume: bool) -> ChainStore:
    description = None
    if study.description is not None:
        description = chain_description(member_description(study.description, chain.seed),
                                        dataclasses.asdict(settings), chain.condition)
    store = ChainStore.open(study.tracking_uri, study.experiment, _chain_tags(study, settings, chain), resume,
                            description, _chain_shown(study, settings, chain))
    if store.took_over:
        print(f"{chain.prefix} took over the stale claim of chain {store.parent_id} ({store.took_over})", flush=True)
    if store.closest is not None:
        old, diffs = store.closest
        print(f"{chain.prefix} new chain: the configuration differs from chain {old} in "
              f"{describe_differences(diffs)}", flush=True)
    store.discard_unfinished()
    print(f"{chain.prefix} chain run id {store.parent_id}", flush=True)
    return store


def _chain_shown(study: Study, settings: ImpSettings, chain: Chain) -> ChainShown:
    """What a chain run tells its reader: a paragraph on what the chain is, the level count asked for, the source,
    the command's config; and its experiment's description."""
    condition = get_condition(chain.condition)
    env, algo = study.tags.get("env", "the env"), study.tags.get("algo", "the agent")
    rewind = "initialisation" if settings.rewind == "init" else f"weights after {settings.rewind} optimizer steps"
    modules = ", ".join(settings.modules) if settings.modules else "every prunable layer"
    note = (
        f"IMP chain: {algo} on {env}, seed {chain.seed}, condition {chain.condition} (mask: {condition.mask}; "
        f"weights: {condition.weights}; layer ratios: {condition.layer_ratio}). Each level trains, then prunes "
        f"{settings.amount:.0%} of the remaining weights of {modules} by global magnitude from its "
        f"{settings.prune_from} weights (rewind point: {rewind}). Metrics `ticket/best_return`, `density` and "
        f"`train_seconds` have one point per level (step = level); the child runs `{chain.name} L<level>` hold each level's curves, ticket (`ticket.pt`), trained weights and input picture."
    )
    experiment_note = (
        f"Lottery-ticket (IMP) study of {algo} on {env}, made by `lth imp`. Each top-level run is one chain (a seed "
        f"and a ticket condition) with one point per level; its child runs are the levels. To compare conditions, "
        f"open the saved view `{CHAINS_VIEW}` (the URL `lth imp` prints ends in `viewStateShareKey={CHAINS_VIEW}`): "
        f"chains grouped by condition (mean and spread over seeds), `ticket/best_return` against level "
        f"and against density. The view `{LEVELS_VIEW}` plots every level run's best return against its density."
    )
    tags = {"imp.levels": str(settings.levels), **run_tags(chain.condition), **source_tags("lth imp")}
    texts = {"config.yaml": study.config_yaml} if study.config_yaml else {}
    return ChainShown(note, tags, texts, experiment_note, study_views())


@dataclass
class _Member:
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


def _train_population(study: Study, settings: ImpSettings, chains: list[Chain], stores: list[ChainStore],
                      progress: Progress, mask_source: Callable[[int], dict[str, torch.Tensor] | None] | None
                      ) -> list[LevelResult]:
    members = []
    for chain, store in zip(chains, stores, strict=True):
        runs = store.finished_runs()
        finished = sorted(runs)
        if finished != list(range(len(finished))):
            raise ConfigError(f"chain {store.parent_id} has gaps in its finished levels {finished}; start a new chain")
        store.fill_parent_metrics(runs)
        recorded = [_recorded(runs[lv], chain.condition, lv) for lv in finished]
        run_ids = {lv: run.info.run_id for lv, run in runs.items()}
        tags = {**_chain_tags(study, settings, chain), **run_tags(chain.condition)}
        members.append(_Member(chain, store, tags, run_ids, recorded, progress))
        progress.left -= min(len(finished), settings.levels)
    start = min(m.next_level for m in members)
    if start >= settings.levels:
        for member in members:
            _record_chain(member)
            member.store.finish_chain()
        return [r for m in members for r in m.results]
    model = population_model(study.model, [c.seed for c in chains])
    datamodule = population_data(study.datamodule, [c.seed for c in chains])
    callback = PruningCallback(
        amount=settings.amount, condition=_one_or_all([c.condition for c in chains]), modules=settings.modules,
        rewind=settings.rewind, prune_from=settings.prune_from, seed=_one_or_all([c.seed for c in chains]),
        mask_source=mask_source, members=len(chains),
    )
    for k, member in enumerate(members):
        state = member.state_after(start - 1)
        if state is not None:
            callback.load_member_state_dict(k, state)
            if callback.member_state_dict(k)["level"] != start and start < settings.levels:
                raise ConfigError(f"chain {member.store.parent_id} ended at level {start - 1} (its branch source has "
                                  "no further masks); it cannot be extended")
    for level in range(start, settings.levels):
        for member in members:
            member.store.heartbeat()  # at every level boundary too; raises if another process took the chain over
        _run_level(study, model, datamodule, callback, members, level, summary=level == start)
    for member in members:
        _record_chain(member)
        member.store.finish_chain()
    return [r for m in members for r in m.results]


def _record_chain(member: _Member) -> None:
    """The chain run's own picture and table of its levels: ``best_return_vs_density.png`` and ``levels.md``."""
    results = sorted(member.results, key=lambda r: r.level)
    densities, returns = [r.density for r in results], [r.best_return for r in results]
    title = f"{member.chain.condition} seed {member.chain.seed}: best return against density"
    rows = "\n".join(f"| {r.level} | {r.density:.4f} | {r.best_return:.1f} |" for r in results)
    member.store.log_files({
        "best_return_vs_density.png": lambda p: save_chain_png(densities, returns, p, title),
        "levels.md": lambda p: p.write_text(f"| level | density | best return |\n| ---: | ---: | ---: |\n{rows}\n"),
    })


def _one_or_all(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def population_model(model: AgentModule, seeds: list[int]) -> AgentModule:
    """A model of ``len(seeds)`` members, member k holding the initial weights ``model``'s class and
    hyperparameters give under seed k (what ``lth imp --seeds k`` alone starts from); one seed: an ordinary agent."""
    hparams = _constructor_args(model)
    agents = [_initial_agent(type(model), hparams, seed) for seed in seeds]
    if len(seeds) == 1:
        return agents[0]
    population = type(model)(**{**hparams, "members": len(seeds)})
    params = dict(population.named_parameters())
    for k, agent in enumerate(agents):
        write_member(params, k, dict(agent.named_parameters()))
    return population


def _initial_agent(cls: type[AgentModule], hparams: dict[str, Any], seed: int) -> AgentModule:
    with torch.random.fork_rng(devices=[]):
        L.seed_everything(seed, verbose=False)  # as the CLI seeds before it builds the model
        return cls(**hparams)


def population_data(datamodule: L.LightningDataModule, seeds: list[int]) -> L.LightningDataModule:
    """``datamodule``'s class and hyperparameters for these members (a list of seeds: one per member); itself for
    one member of its own seed (so what only its constructor was given, e.g. an expert loader, stays)."""
    if len(seeds) == 1 and datamodule.hparams.get("seed") == seeds[0]:
        return datamodule
    return type(datamodule)(**{**_constructor_args(datamodule), "seed": seeds if len(seeds) > 1 else seeds[0]})


def _constructor_args(obj: L.LightningModule | L.LightningDataModule) -> dict[str, Any]:
    """The saved hyperparameters that are ``obj``'s constructor arguments (not the CLI's ``_class_path``)."""
    names = inspect.signature(type(obj)).parameters
    return {k: v for k, v in obj.hparams.items() if k in names}


def _run_level(study: Study, model: AgentModule, datamodule: L.LightningDataModule, callback: PruningCallback,
               members: list[_Member], level: int, summary: bool = True) -> None:
    """Train level ``level`` of every member that has not finished it (members ahead, after a kill between two
    members' records, retrain it from their stored state and are put back to their stored next state), record
    each member's level run, and print one line per member. ``summary=False`` skips Lightning's model summary
    (the same table every level)."""
    seeds = [m.chain.seed for m in members]
    L.seed_everything(training_seed(seeds[0], level), verbose=False)  # a level's training depends only on (seed, level)
    # Each member acts and shuffles with its own generator, so same-seed members train alike (an ordinary agent
    # keeps the global generator: its results are those of the solo path).
    model.seed_members([training_seed(seed, level) for seed in seeds] if len(seeds) > 1 else None)
    todo = [k for k, m in enumerate(members) if m.next_level == level]
    for k in (k for k in range(len(members)) if k not in todo):
        state = members[k].state_after(level - 1)
        if state is not None:  # at level 0 the callback's fresh state is the initial one
            callback.load_member_state_dict(k, state)
    population = {"lth.population": _population_id(members), "lth.population.size": str(len(members))}
    run_ids = {k: members[k].store.start_level(level, {**members[k].tags, **population}) for k in todo}
    loggers = [MemberLogger(members[k].chain.seed, experiment_name=study.experiment, tracking_uri=study.tracking_uri,
                            run_id=run_ids[k]) if k in run_ids else DummyLogger() for k in range(len(members))]
    final = FinalWeights()
    options = study.trainer_kwargs if summary else {**study.trainer_kwargs, "enable_model_summary": False}
    trainer = L.Trainer(**options, logger=loggers, callbacks=[final, callback], enable_checkpointing=False)
    trainer.val_check_interval = getattr(datamodule, "eval_interval", trainer.val_check_interval)
    trained = [callback.member_masks(k) for k in range(len(members))]
    trainer.fit(model, datamodule)
    for k, member in enumerate(members):
        if k in run_ids:
            masks = trained[k] or {n: torch.ones_like(m) for n, m in callback.member_masks(k).items()}
            member.results.append(_record_level(study, model, datamodule, callback, member, k, level, run_ids[k],
                                                masks, final.weights))
            member.run_ids[level] = run_ids[k]
        else:
            callback.load_member_state_dict(k, member.state_after(level))


def _population_id(members: list[_Member]) -> str:
    """A short name of a population (tag ``lth.population`` of its level runs): a hash of its chains' run ids."""
    return hashlib.sha256(",".join(m.store.parent_id for m in members).encode()).hexdigest()[:12]


def _record_level(study: Study, model: AgentModule, datamodule: L.LightningDataModule, callback: PruningCallback,
                  member: _Member, k: int, level: int, run_id: str, trained: dict[str, torch.Tensor],
                  final: dict[str, torch.Tensor]) -> LevelResult:
    """Log member k's level: its ticket, next state, trained weights, densities and input picture, and score."""
    store, condition = member.store, member.chain.condition
    # A diverged level is a result: its best return before divergence stands (NaN: it diverged before any
    # evaluation), and the chain goes on, pruning from the best (else the last good, finite) weights.
    diverged_at = model.member_diverged_at[k]
    best = float(model.best_returns[k])
    result = LevelResult(condition, level, density(trained), best if best > -math.inf else math.nan)
    per_layer = layer_densities(trained)
    weights = final if model.members == 1 else member_tensors(final, k)
    inputs = input_report(weights, trained, datamodule.hparams.env_id, model.obs_shape)
    ticket = {"level": level, "condition": condition, "seed": member.chain.seed, "masks": trained,
              "rewind_state": callback.member_rewind_state(k)}
    next_state = callback.member_state_dict(k)
    trained_weights = callback.member_trained_weights(k)
    files: dict[str, Callable[[Path], None]] = {
        "ticket.pt": lambda p: torch.save(ticket, p),
        "next_state.pt": lambda p: torch.save(next_state, p),
        "trained.pt": lambda p: torch.save(trained_weights, p),
        "densities.md": lambda p: p.write_text(_density_table(per_layer)),
        "inputs.png": lambda p: save_inputs_png(
            inputs, p, f"{condition}, level {level}, density {result.density:.3f}: surviving input weights"),
    }
    summary = {"ticket/best_return": result.best_return, "density": result.density}
    metrics = {**summary, "level": level, **{f"density/{n}": v for n, v in per_layer.items()},
               **_input_metrics(inputs)}
    if diverged_at is not None:
        store.client.set_tag(run_id, "diverged", "true")  # the module logged the metric diverged_at_frames
    from lth.policy_model import log_policy  # imports MLflow's pyfunc: not at lth.imp's import time

    # The loadable policy the ticket's score came from (the weights the next mask is computed from, masked): the
    # model itself already holds the next level's starting weights.
    log_policy(model, k, run_id, study.tracking_uri, weights=trained_weights)
    store.finish_level(run_id, level, metrics, summary, files)
    note = "" if diverged_at is None else (
        f" (training diverged at {diverged_at} frames: a non-finite loss, output or weight)")
    print(f"{member.chain.prefix} level {level}: density {result.density:.3f}, "
          f"best return {result.best_return:.1f}{note} ({member.progress.record()})", flush=True)
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


def _branch_masks(study: Study, settings: ImpSettings) -> Callable[[int], dict[str, torch.Tensor] | None] | None:
    """In branch mode, level k's masks are the stored chain's level-k ticket masks (``None`` past its end). All of
    them are read here, before anything trains: an unreadable one stops the study before a run is started."""
    if not settings.branch_from:
        return None
    source = ChainStore.of_run(study.tracking_uri, settings.branch_from)
    stored = {level: source.load(run.info.run_id, "ticket.pt")["masks"]
              for level, run in sorted(source.finished_runs().items())}
    return stored.get


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
