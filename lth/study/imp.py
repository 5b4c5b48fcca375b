"""IMP studies: one chain of fits per ticket condition, every level recorded in MLflow, resumable.

A chain is ``levels`` fits of the same model with one :class:`lth.callbacks.PruningCallback`; level k trains the
network of density 0.8^k. Each level is a nested MLflow run holding the learning curve, the ticket
(masks + rewind weights, ``ticket.pt``), the state the next level starts from (``next_state.pt``), a
per-layer density table and a picture of the input-layer masks; the chain's parent run logs
``ticket/best_return`` and ``density`` with step = level.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.loggers.logger import DummyLogger

from lth.callbacks import PruningCallback
from lth.callbacks.seeding import training_seed
from lth.errors import ConfigError
from lth.modules import AgentModule
from lth.report.notes import chain_note, experiment_note
from lth.store.chain_identity import chain_description, describe_differences, identity, member_description
from lth.store.chain_store import ChainShown, ChainStore
from lth.store.tracking import source_tags
from lth.store.ui_views import CHAINS_VIEW, LEVELS_VIEW, run_tags, study_views
from lth.study.chains import Chain, LevelResult, Progress, Study
from lth.study.population import population_data, population_model, population_size
from lth.study.recording import FitEnd, Member, MemberFit, MemberLogger, record_chain, record_level, stored_result
from lth.study.settings import ImpSettings


class Executor(Protocol):
    """What runs a study's units (:mod:`lth.study.executors` has them: in turn here, or as Ray tasks): a function of each
    unit, the results in the units' order."""

    def map_units(self, fn: Callable[[list[Chain]], list[LevelResult]], units: Sequence[list[Chain]],
                  names: Sequence[str] | None = None) -> list[list[LevelResult]]: ...


def run_study(study: Study, settings: ImpSettings, executor: Executor, resume: bool = True,
              unit: Callable[[list[Chain]], list[LevelResult]] | None = None) -> list[LevelResult]:
    """Run (or resume) one chain per seed and condition, as populations of at most ``study.population`` chains
    (one batched network per population); returns every finished level's score.

    ``executor`` runs the populations (:mod:`lth.study.executors`); ``unit`` trains one of them
    where the executor runs it (:class:`lth.cli.runner.ImpUnit`: another process rebuilds the study), always
    resuming, since an executor may run a unit twice: ``resume=False`` then starts the new chains here first."""
    conditions = settings.chain_conditions()
    chains = [Chain(seed, condition) for seed in study.seeds for condition in conditions]
    size, per_seed = population_size(study, settings, len(chains)), len(conditions)
    if size > per_seed:
        size -= size % per_seed  # a seed's chains in one population: they share one dense level 0 (_fit_dense)
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
    description = chain_id = None
    if study.description is not None:
        description = chain_description(member_description(study.description, chain.seed),
                                        dataclasses.asdict(settings), chain.condition)
        chain_id = identity(description, {**study.defaults, "imp": dataclasses.asdict(ImpSettings())})
    store = ChainStore.open(study.tracking_uri, study.experiment, _chain_tags(study, settings, chain), resume,
                            description, _chain_shown(study, settings, chain), chain_id)
    if store.took_over:
        print(f"{chain.prefix} took over the stale claim of chain {store.parent_id} ({store.took_over})", flush=True)
    if store.added:
        shown = ", ".join(store.added[:8]) + (f" and {len(store.added) - 8} more" if len(store.added) > 8 else "")
        print(f"{chain.prefix} resumed; options new since it was stored, at their defaults: {shown}", flush=True)
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
    env, algo = study.tags.get("env", "the env"), study.tags.get("algo", "the agent")
    note = chain_note(algo, env, chain.seed, chain.condition, settings.amount, settings.modules, settings.prune_from,
                      settings.rewind, chain.name)
    experiment = experiment_note(algo, env, CHAINS_VIEW, LEVELS_VIEW)
    tags = {"imp.levels": str(settings.levels), **run_tags(chain.condition), **source_tags("lth imp")}
    texts = {"config.yaml": study.config_yaml} if study.config_yaml else {}
    return ChainShown(note, tags, texts, experiment, study_views())


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
        recorded = [stored_result(runs[lv], chain.condition, lv) for lv in finished]
        run_ids = {lv: run.info.run_id for lv, run in runs.items()}
        tags = {**_chain_tags(study, settings, chain), **run_tags(chain.condition)}
        members.append(Member(chain, store, tags, run_ids, recorded, progress))
        progress.left -= min(len(finished), settings.levels)
    start = min(m.next_level for m in members)
    if start >= settings.levels:
        for member in members:
            record_chain(member)
            member.store.finish_chain()
        return [r for m in members for r in m.results]
    model = population_model(study.model, [c.seed for c in chains])
    datamodule = population_data(study.datamodule, [c.seed for c in chains])

    def pruning(of: list[Chain]) -> PruningCallback:
        return PruningCallback(
            amount=settings.amount, condition=_one_or_all([c.condition for c in of]), modules=settings.modules,
            rewind=settings.rewind, prune_from=settings.prune_from, seed=_one_or_all([c.seed for c in of]),
            mask_source=mask_source, members=len(of),
        )

    callback = pruning(chains)
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
        _run_level(study, model, datamodule, callback, members, level, pruning, summary=level == start)
    for member in members:
        record_chain(member)
        member.store.finish_chain()
    return [r for m in members for r in m.results]


def _one_or_all(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def _run_level(study: Study, model: AgentModule, datamodule: L.LightningDataModule, callback: PruningCallback,
               members: list[Member], level: int, pruning: Callable[[list[Chain]], PruningCallback],
               summary: bool = True) -> None:
    """Train level ``level`` of every member that has not finished it and record each one's level run (members
    ahead, after a kill between two members' records, keep their stored state). Level 0 is one dense fit per seed
    (:func:`_fit_dense`); later levels fit the whole population. ``summary=False`` skips Lightning's model summary
    (the same table every level)."""
    todo = [k for k, m in enumerate(members) if m.next_level == level]
    for k in (k for k in range(len(members)) if k not in todo):
        state = members[k].state_after(level - 1)
        if state is not None:  # at level 0 the callback's fresh state is the initial one
            callback.load_member_state_dict(k, state)
    if level == 0:
        fits, run_ids = _fit_dense(study, members, todo, pruning, summary)
        callback.prune_members(model, {k: (fits[k].state, fits[k].weights) for k in todo})
    else:
        run_ids = {k: members[k].store.start_level(level, {**members[k].tags, **_population_tags(members)})
                   for k in todo}
        fitted = _fit(study, model, datamodule, callback, members, level, {k: [run_ids[k]] for k in todo}, summary)
        fits = {k: fitted[k] for k in todo}
    for k, member in enumerate(members):
        if k in todo:
            member.results.append(record_level(study, model, datamodule, callback, member, k, level,
                                               run_ids[k], fits[k]))
            member.run_ids[level] = run_ids[k]
        else:
            callback.load_member_state_dict(k, member.state_after(level))


def _fit_dense(study: Study, members: list[Member], todo: list[int],
               pruning: Callable[[list[Chain]], PruningCallback], summary: bool
               ) -> tuple[dict[int, MemberFit], dict[int, str]]:
    """Level 0 of the ``todo`` members: one fit per seed (its first such member's; level 0 is the same dense fit
    for every condition), recorded in each of the seed's level runs. Returns each todo member's fit and run id."""
    by_seed: dict[int, list[int]] = {}  # seed -> its todo members, the first one leading
    for k in todo:
        by_seed.setdefault(members[k].chain.seed, []).append(k)
    lead_members = [members[ks[0]] for ks in by_seed.values()]
    tags = _population_tags(lead_members)
    run_ids = {k: members[k].store.start_level(0, {**members[k].tags, **tags}) for k in todo}
    seeds = list(by_seed)
    fitted = _fit(study, population_model(study.model, seeds), population_data(study.datamodule, seeds),
                  pruning([m.chain for m in lead_members]), lead_members, 0,
                  {j: [run_ids[k] for k in ks] for j, ks in enumerate(by_seed.values())}, summary)
    fits = {k: fitted[j] for j, ks in enumerate(by_seed.values()) for k in ks}
    return fits, run_ids


def _fit(study: Study, model: AgentModule, datamodule: L.LightningDataModule, callback: PruningCallback,
         members: list[Member], level: int, runs: dict[int, list[str]], summary: bool) -> list[MemberFit]:
    """One fit of a population at ``level``: member k logs to ``runs[k]`` (its level run, then copies; none: a
    member ahead that retrains); returns what the fit left for each member before the callback pruned it."""
    seeds = [m.chain.seed for m in members]
    L.seed_everything(training_seed(seeds[0], level), verbose=False)  # a level's training depends only on (seed, level)
    # Each member acts and shuffles with its own generator, so a member trains alike in any population (of one too).
    model.seed_members([training_seed(seed, level) for seed in seeds])
    loggers = [MemberLogger(members[k].chain.seed, experiment_name=study.experiment, tracking_uri=study.tracking_uri,
                            run_id=runs[k][0], copies=runs[k][1:]) if runs.get(k) else DummyLogger()
               for k in range(len(members))]
    fit_end = FitEnd(callback)
    options = study.trainer_kwargs if summary else {**study.trainer_kwargs, "enable_model_summary": False}
    trainer = L.Trainer(**options, logger=loggers, callbacks=[fit_end, callback], enable_checkpointing=False)
    trainer.val_check_interval = getattr(datamodule, "eval_interval", trainer.val_check_interval)
    trainer.fit(model, datamodule)
    return fit_end.fits


def _population_tags(members: list[Member]) -> dict[str, str]:
    return {"lth.population": _population_id(members), "lth.population.size": str(len(members))}


def _population_id(members: list[Member]) -> str:
    """A short name of a population (tag ``lth.population`` of its level runs): a hash of its chains' run ids."""
    return hashlib.sha256(",".join(m.store.parent_id for m in members).encode()).hexdigest()[:12]


def _branch_masks(study: Study, settings: ImpSettings) -> Callable[[int], dict[str, torch.Tensor] | None] | None:
    """In branch mode, level k's masks are the stored chain's level-k ticket masks (``None`` past its end). All of
    them are read here, before anything trains: an unreadable one stops the study before a run is started."""
    if not settings.branch_from:
        return None
    source = ChainStore.of_run(study.tracking_uri, settings.branch_from)
    stored = {level: source.load(run.info.run_id, "ticket.pt")["masks"]
              for level, run in sorted(source.finished_runs().items())}
    return stored.get
