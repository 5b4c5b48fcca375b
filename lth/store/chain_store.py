"""An IMP chain's runs in MLflow (:class:`ChainStore`): found by its configuration, written by one process that
holds a claim (tags with a heartbeat), its levels marked complete only once everything is written."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.errors import ConfigError, StoreError
from lth.store.claims import (
    CLAIM_TIMEOUT,
    HEARTBEAT,
    HOST,
    OWNER,
    PID,
    ChainBusyError,
    Heartbeat,
    claim_is_stale,
    claim_tags,
    heartbeat_age,
    locked,
    utc_now,
)
from lth.store.tracking import (
    NOTE,
    check_tracking_uri,
    experiment_id,
    metric_batch,
    missing_store,
    quoted,
    tag_query,
)

TRAIN_SECONDS = "train_seconds"
"""A chain run's metric at step = level: the wall seconds its level runs 0..level took. The chain run's own
duration in the UI is the time from its first start to its last finish, idle time between a kill and the
resume included."""


def _train_seconds(finished: Mapping[int, Any]) -> dict[int, float]:
    """Per finished level, the summed durations (start to end) of the level runs up to it."""
    total, out = 0.0, {}
    for level, run in sorted(finished.items()):
        total += max(0, (run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
        out[level] = total
    return out


def chain_run_name(condition: str, seed: int | str) -> str:
    """A chain run's name, ``mask/weights s0`` (its level runs add `` L3``): short, and sorting by condition."""
    return f"{condition} s{seed}"


@dataclass(frozen=True)
class ChainShown:
    """What a reader of a chain run sees beyond its identity, rewritten at every open of the chain: its
    description (the UI's run description), informative tags (e.g. the level count asked for, the lth version),
    text artifacts (the command's ``config.yaml``), and its experiment's description if that has none."""

    note: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    experiment_note: str = ""
    experiment_tags: Mapping[str, str] = field(default_factory=dict)  # e.g. saved views (written when they differ)


class ChainStore:
    """The MLflow records of one IMP chain: a parent run tagged with the chain, a nested child run per level.

    A level counts as finished only once its child run carries the tag ``lth.level_complete``, which is set
    after every artifact is written; resuming discards children that never got it. The parent's per-level
    metrics (:attr:`PARENT_METRICS`, step = level) are written after that mark, and a resume writes those a
    kill left out (:meth:`fill_parent_metrics`): one point per level, whatever the moment of a kill.

    **Identity.** :meth:`open` finds a chain by its tags and ``lth.chain_hash``, the hash of its configuration
    (:mod:`lth.store.chain_identity`); a new chain stores that configuration flattened as params and as
    ``chain.json``, so that the next different configuration can name what differs.

    **One writer.** A chain being trained carries a claim, the tags ``lth.claim.owner`` (an id per
    :meth:`open`), ``.host``, ``.pid`` and ``.heartbeat`` (UTC, ISO 8601). It is taken when the chain is
    opened, in the same critical section that finds or creates the parent run (and its experiment): for the
    embedded sqlite store that section holds the store's file lock, so two launches cannot both take it. A
    daemon thread refreshes the heartbeat every :data:`HEARTBEAT_INTERVAL` seconds, independent of how long a
    level or an evaluation takes; a claim is stale after :data:`CLAIM_TIMEOUT` seconds without one, or at once
    when its process is gone from this host (a rerun after ``kill -9`` needs no wait), and is then taken over.
    Every write of a level (start, discard, finish) first checks that the claim is still this store's.
    :meth:`release` (call it in a ``finally``) removes the claim. An http store is locked through the Ray
    cluster's lock actor (:mod:`lth.store.claims`) when Ray runs in the process (``--executor ray``); launches on
    different Ray clusters, or without Ray, can still race between reading and writing the claim: a server-side
    compare-and-set belongs in :meth:`_locked` / :meth:`_take_claim` (issue 14).
    """

    COMPLETE = "lth.level_complete"
    HASH = "lth.chain_hash"
    OWNER, HOST, PID, HEARTBEAT = OWNER, HOST, PID, HEARTBEAT  # the claim's tags (lth.store.claims)
    PARENT_METRICS = ("ticket/best_return", "density")

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.owner: str | None = None  # the claim this store holds, if it was opened for training
        self.created = False  # whether open() created the parent run
        self.closest: tuple[str, list[tuple[str, str, str]]] | None = None  # (chain id, differences) when created
        self.took_over: str | None = None  # the stale claim taken over, described
        #: Options the resumed chain's stored params lack (new since it was stored; at their defaults, as the
        #: identity matched).
        self.added: list[str] = []
        self._beat: Heartbeat | None = None

    @classmethod
    def of_run(cls, tracking_uri: str, parent_id: str) -> ChainStore:
        """An existing chain, by its parent run id."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if missing_store(tracking_uri):  # MLflow's client would create an empty store to look in
            raise ConfigError(f"no chain run {parent_id!r} in {tracking_uri}: the store does not exist")
        try:
            run = MlflowClient(tracking_uri).get_run(parent_id)
        except MlflowException as exc:
            raise ConfigError(f"no chain run {parent_id!r} in {tracking_uri}") from exc
        if run.data.tags.get("lth.role") != "chain":
            raise ConfigError(f"run {parent_id!r} is not an IMP chain's parent run")
        return cls(tracking_uri, run.info.experiment_id, parent_id)

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, tags: dict[str, str], resume: bool,
             description: Mapping[str, Any] | None = None, shown: ChainShown | None = None,
             identity: Mapping[str, Any] | None = None) -> ChainStore:
        """The chain's parent run, claimed by this process: when resuming, the newest with the same tags and
        (given a ``description``) the same configuration hash, else a new one. The hash and the stored
        ``chain.json`` are of ``identity`` (default: the description), the run's params of the whole description.
        ``shown`` (what a reader of the run sees: its description, informative tags, text artifacts) is written at
        every open.

        Raises :class:`ChainBusyError` when a live process holds the chain's claim.
        """
        from lth.store.chain_identity import canonical_json, chain_hash, flatten

        check_tracking_uri(tracking_uri)
        shown = shown or ChainShown()
        chain_tags = dict(tags)
        flat: dict[str, str] = {}
        identity = description if identity is None else identity
        if description is not None:
            chain_tags[cls.HASH] = chain_hash(identity)
            flat = flatten(description)
        with cls._locked(tracking_uri):
            store = cls._find_or_create(tracking_uri, experiment, tags, chain_tags, flat, resume, shown)
        try:
            if store.created and description is not None:
                store.client.log_text(store.parent_id, canonical_json(identity), "chain.json")
            store._show(shown)
            beating = ChainStore(tracking_uri, store.experiment_id, store.parent_id)  # its own client, for its thread
            beating.owner = store.owner
            store._beat = Heartbeat(f"lth-claim-{store.parent_id[:8]}", beating.heartbeat)
            store._beat.start()
        except BaseException:
            store.release()
            raise
        return store

    def _show(self, shown: ChainShown) -> None:
        """Write what a reader of the chain run sees: description, informative tags, text artifacts."""
        from mlflow.entities import RunTag

        tags = {**shown.tags, **({NOTE: shown.note} if shown.note else {})}
        if tags:
            self.client.log_batch(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        for name, text in shown.texts.items():
            self.client.log_text(self.parent_id, text, name)

    @classmethod
    def _find_or_create(cls, tracking_uri: str, experiment: str, tags: dict[str, str], chain_tags: dict[str, str],
                        flat: dict[str, str], resume: bool, shown: ChainShown) -> ChainStore:
        """The critical section of :meth:`open`: experiment, parent run and claim (under :meth:`_locked`)."""
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient(tracking_uri)
        exp_id = experiment_id(client, experiment, shown.experiment_note, shown.experiment_tags)
        closest = None
        if resume:
            runs = client.search_runs([exp_id], f"{tag_query(chain_tags)} and tags.`lth.role` = 'chain'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                store = cls(tracking_uri, exp_id, runs[0].info.run_id)
                store._take_claim(runs[0].data.tags)
                if flat and runs[0].data.params:
                    store.added = sorted(set(flat) - set(runs[0].data.params))
                return store
            if flat:
                closest = cls._closest(client, exp_id, tags, flat)
        store = cls(tracking_uri, exp_id, "")
        store.owner = uuid.uuid4().hex
        name = chain_run_name(tags["condition"], tags["seed"])
        run = client.create_run(exp_id, run_name=name, tags={**chain_tags, "lth.role": "chain", **claim_tags(store.owner)})
        store.parent_id, store.created, store.closest = run.info.run_id, True, closest
        params = [Param(k[:250], v if len(v) <= 6000 else v[:5990] + "...") for k, v in flat.items()]
        for start in range(0, len(params), 100):
            client.log_batch(store.parent_id, params=params[start:start + 100])
        return store

    @classmethod
    def _closest(cls, client: Any, exp_id: str, tags: dict[str, str],
                 flat: dict[str, str]) -> tuple[str, list[tuple[str, str, str]]] | None:
        """The chain of the same env, algo, condition and seed whose stored configuration differs least."""
        from lth.store.chain_identity import differences

        same = {k: v for k, v in tags.items() if k in ("env", "algo", "condition", "seed")}
        runs = client.search_runs([exp_id], f"{tag_query(same)} and tags.`lth.role` = 'chain'",
                                  order_by=["attributes.start_time DESC"], max_results=1000)
        found = [(run.info.run_id, differences(run.data.params, flat)) for run in runs
                 if cls.HASH in run.data.tags and run.data.params]
        return min(found, key=lambda f: len(f[1]), default=None)

    #: The critical section of claims (:func:`lth.store.claims.locked`).
    _locked = staticmethod(locked)

    def _take_claim(self, tags: Mapping[str, str]) -> None:
        """Claim the chain (under the lock), refusing if a live process holds it, taking over a stale claim."""
        holder = tags.get(self.OWNER)
        if holder:
            age = heartbeat_age(tags)
            who = f"pid {tags.get(self.PID, '?')} on host {tags.get(self.HOST, '?')}"
            if not claim_is_stale(tags):
                raise ChainBusyError(
                    f"chain {self.parent_id} is being trained by another process ({who}, last heartbeat "
                    f"{age:.0f} s ago); run again when it has finished (a claim without a heartbeat for "
                    f"{CLAIM_TIMEOUT:.0f} s is taken over), or use --no_resume for a new chain",
                    self.tracking_uri, self.parent_id)
            self.took_over = f"{who}, last heartbeat {age:.0f} s ago"
        self.owner = uuid.uuid4().hex
        for key, value in claim_tags(self.owner).items():
            self.client.set_tag(self.parent_id, key, value)

    def holds_claim(self) -> bool:
        """Whether the parent run still carries this store's claim."""
        return self.owner is not None and self.client.get_run(self.parent_id).data.tags.get(self.OWNER) == self.owner

    def _require_claim(self) -> None:
        if not self.holds_claim():
            raise ChainBusyError(f"this process no longer holds the claim of chain {self.parent_id} "
                                 "(another process took it over); stopping without writing to it",
                                 self.tracking_uri, self.parent_id)

    def heartbeat(self) -> None:
        """Refresh the claim's heartbeat; :class:`ChainBusyError` if the claim was lost."""
        with self._locked(self.tracking_uri):
            self._require_claim()
            self.client.set_tag(self.parent_id, self.HEARTBEAT, utc_now())

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, if this store still holds it (idempotent)."""
        from mlflow.exceptions import MlflowException

        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        if self.owner is None:
            return
        with self._locked(self.tracking_uri):
            if self.holds_claim():
                for key in (self.OWNER, self.HOST, self.PID, self.HEARTBEAT):
                    with contextlib.suppress(MlflowException):  # a tag already gone
                        self.client.delete_tag(self.parent_id, key)
        self.owner = None

    def abandon(self) -> None:
        """Release the claim, and delete the parent run if this process created it and it holds no level run: a
        launch that stops while opening its chains (one of them busy) leaves no empty chain behind."""
        empty = self.created and not self._children()
        self.release()
        if empty:
            self.client.delete_run(self.parent_id)

    def _children(self) -> list[Any]:
        return self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'")

    def finished_runs(self) -> dict[int, Any]:
        """The finished child runs by level, from one search."""
        return {int(r.data.tags["level"]): r for r in self._children() if r.data.tags.get(self.COMPLETE) == "true"}

    def discard_unfinished(self) -> None:
        """Delete the level runs that never finished, and the models they logged (a kill can come after a level's
        policy was logged, before the level was marked finished); only on a chain whose claim this store holds."""
        self._require_claim()
        for run in self._children():
            if run.data.tags.get(self.COMPLETE) != "true":
                for model in self.client.search_logged_models(
                        [self.experiment_id], filter_string=f"source_run_id = {quoted(run.info.run_id)}"):
                    self.client.delete_logged_model(model.model_id)
                self.client.delete_run(run.info.run_id)

    def fill_parent_metrics(self, finished: Mapping[int, Any]) -> None:
        """Log the parent's per-level metrics a kill left out (after a level's completion mark), from the
        finished level runs: afterwards every finished level has exactly one point per parent metric."""
        seconds = _train_seconds(finished)
        for key in (*self.PARENT_METRICS, TRAIN_SECONDS):
            logged = {m.step for m in self.client.get_metric_history(self.parent_id, key)}
            for level, run in sorted(finished.items()):
                value = seconds[level] if key == TRAIN_SECONDS else run.data.metrics.get(key)
                if level not in logged and value is not None:
                    self.client.log_metric(self.parent_id, key, value, step=level)

    def start_level(self, level: int, tags: dict[str, str]) -> str:
        self._require_claim()
        run = self.client.create_run(
            self.experiment_id, run_name=f"{chain_run_name(tags['condition'], tags['seed'])} L{level}",
            tags={**tags, "level": str(level), "mlflow.parentRunId": self.parent_id},
        )
        return run.info.run_id

    def finish_level(self, run_id: str, level: int, metrics: dict[str, float], parent_metrics: dict[str, float],
                     files: dict[str, Callable[[Path], None]]) -> None:
        """Log a level's metrics and artifacts (each written by ``files[name](path)``), mark it finished, then
        log the parent's metrics at step = level (a kill before them is repaired by :meth:`fill_parent_metrics`)."""
        self.client.log_batch(run_id, metrics=metric_batch(metrics))
        self.log_files(files, run_id)
        self._require_claim()
        self.client.set_tag(run_id, self.COMPLETE, "true")
        self.client.set_terminated(run_id, "FINISHED")
        parent_metrics = {**parent_metrics, TRAIN_SECONDS: _train_seconds(self.finished_runs())[level]}
        self.client.log_batch(self.parent_id, metrics=metric_batch(parent_metrics, level))

    def load(self, run_id: str, name: str) -> Any:
        """An artifact of a run, read with ``torch.load(weights_only=True)`` (tensors and plain data only: a shared
        store's files cannot run code here). A missing, empty or corrupt file is a :class:`StoreError` naming the
        chain, the level and what to do."""
        import pickle
        import tempfile

        import torch
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp,
                                          tracking_uri=self.tracking_uri)
                with torch.serialization.safe_globals(_stored_number_types()):
                    return torch.load(path, weights_only=True)
            except (MlflowException, OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
                level = self.client.get_run(run_id).data.tags.get("level", "?")
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise StoreError(
                    f"level {level}'s {name} of chain {self.parent_id} is unreadable ({reason}): rerun with "
                    f"--no_resume for a new chain, or delete level run {run_id} and the chain's later levels to redo "
                    "them") from exc

    def finish_chain(self) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED")

    def log_files(self, files: dict[str, Callable[[Path], None]], run_id: str | None = None) -> None:
        """Write files to the artifacts of a run (default: the chain run), each by ``files[name](path)``; a file
        of the same name is replaced."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for name, write in files.items():
                path = Path(tmp) / name
                write(path)
                self.client.log_artifact(run_id or self.parent_id, str(path))


def _stored_number_types() -> list[type]:
    """jsonargparse's restricted numbers (``OpenUnitInterval``, ``PositiveInt``, ...: int and float subclasses), which
    lth stored in ``next_state.pt`` before it saved plain numbers: safe to unpickle, so older stores still load."""
    import jsonargparse.typing as types

    return [kind for kind in vars(types).values()
            if isinstance(kind, type) and issubclass(kind, (int, float)) and kind not in (int, float, bool)]


