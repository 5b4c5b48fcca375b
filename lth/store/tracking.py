"""MLflow plumbing: the default store, a check that a tracking URI opens, experiments shown as model training,
metric batches and tag queries. An IMP chain's runs are :mod:`lth.store.chain_store`'s."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from lth.errors import ConfigError, StoreError

#: The local store every command uses when neither its arguments nor ``$MLFLOW_TRACKING_URI`` name one.
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def default_tracking_uri() -> str:
    """MLflow's own rule for a store no argument names: ``$MLFLOW_TRACKING_URI``, else lth's local
    :data:`DEFAULT_TRACKING_URI` (MLflow's own local default, ``./mlruns`` as files, is a store MLflow 3 refuses)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` with a relative sqlite path made absolute (``sqlite:///mlruns/x.db`` -> ``sqlite:////cwd/mlruns/x.db``).

    MLflow caches one store per URI string, so a relative URI would keep pointing at the first working
    directory's database after a ``chdir`` (a long-lived process, or tests in temporary folders).
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def check_tracking_uri(uri: str, write: bool = True, create: bool = True) -> None:
    """Open ``uri`` once (creating a local sqlite store's folder) or raise a :class:`ConfigError` that says why;
    with ``write``, a local sqlite store must also take writes (:func:`check_writable`). With ``create=False`` a
    local sqlite store that does not exist yet is only checked to be creatable, and nothing is written: commands
    check their store while parsing, and create it only once every other check has passed, so bad input leaves no
    store behind.

    A new sqlite store is created under a file lock: MLflow's schema migration fails when two processes (say
    two ``lth imp`` seeds started together) create the same database at once. A server (``http(s)://``) is
    probed once without retries (MLflow's defaults retry for minutes): nothing listening fails at once, a server
    busy with a cluster's writers gets 30 s. The environment variables ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` are set for the probe only.
    """
    from mlflow import MlflowClient

    if not create and missing_store(uri):
        check_creatable(uri)
        return
    quiet = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils")]  # "Creating tables..."
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    probe_env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    saved = {key: os.environ.get(key) for key in probe_env}
    if uri.startswith(("http://", "https://")):
        os.environ.update(probe_env)
    try:
        with creation_lock(uri):
            check_complete(uri)
            MlflowClient(uri).search_experiments(max_results=1)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to open the store is the user's to fix
        lines = str(exc).strip().splitlines()
        first_line = lines[0] if lines else type(exc).__name__
        raise ConfigError(
            f"cannot open MLflow tracking URI {uri!r}: {first_line}. "
            f"Use a writable local store such as {DEFAULT_TRACKING_URI!r} or a server such as 'http://host:5000'."
        ) from exc
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if write:
        check_writable(uri)


def local_database(uri: str) -> Path | None:
    """The database file of a local sqlite store (``sqlite:///...``), else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def missing_store(uri: str) -> bool:
    """Whether ``uri`` is a local sqlite store whose database does not exist yet."""
    db = local_database(uri)
    return db is not None and not db.exists()


def check_creatable(uri: str) -> None:
    """A local sqlite store could be created at ``uri``: its nearest existing folder takes a new file."""
    import tempfile

    folder = local_database(uri).parent
    while not folder.exists():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot open MLflow tracking URI {uri!r}: the store cannot be created there ({exc}). Use a "
                          f"writable local store such as {DEFAULT_TRACKING_URI!r} or a server such as "
                          "'http://host:5000'.") from exc


def check_complete(uri: str) -> None:
    """A local sqlite file that holds tables but no schema version is a store whose creation was interrupted (a full
    disk, a kill while MLflow created its tables): MLflow would fail on it at every run with a migration error
    ("duplicate column", "table already exists"). Say so, once, before MLflow opens it."""
    import sqlite3

    db = local_database(uri)
    if db is None or not db.is_file() or db.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(db, timeout=60)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            versioned = "alembic_version" in tables and bool(
                connection.execute("SELECT version_num FROM alembic_version").fetchall())
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db} is not an MLflow store ({exc}): move it away, or point the tracking URI elsewhere") \
            from exc
    if tables and not versioned:
        raise StoreError(f"{db} is a partial MLflow store: it holds {len(tables)} tables but no schema version, as its "
                         "creation was interrupted (a full disk, a kill): move it away, or delete it if it holds no "
                         "runs you need, and run again")


def check_writable(uri: str) -> None:
    """For a local sqlite store: a real write to its database, rolled back, and a file created and removed beside
    it (where its artifacts go), so a store that can be read but not written (a read-only file, folder or mount)
    is one :class:`StoreError` before anything runs, not a traceback at the first claim. Servers check their own."""
    import sqlite3
    import tempfile

    db = local_database(uri)
    if db is None:
        return
    try:
        with tempfile.TemporaryFile(dir=db.parent):
            pass
        connection = sqlite3.connect(db, timeout=60, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE lth_write_probe (x)")  # transactional in sqlite: rolled back below
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"the MLflow store {uri!r} can be read but not written ({exc}): lth imp, fit and report "
                         "record runs there; make it writable, or read it with lth report --no_mlflow or lth ui") \
            from exc


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """For a local sqlite store, create its folder and hold an exclusive lock beside the database."""
    db = local_database(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    # filelock (installed with torch): fcntl's flock on POSIX, msvcrt's locking on Windows
    with FileLock(db.parent / f"{db.name}.lock"):
        yield


EXPERIMENT_KIND = "mlflow.experimentKind"
"""The experiment tag MLflow 3's UI reads to choose its layout; without it a new experiment opens in GenAI mode."""
MODEL_TRAINING = "custom_model_development"
"""The value of :data:`EXPERIMENT_KIND` that opens an experiment in the UI's model-training mode (its runs table)."""
NOTE = "mlflow.note.content"
"""The tag the UI shows (and edits) as an experiment's or a run's description."""
VIEW_STATE = "mlflow.sharedViewState."
"""Prefix of the experiment tags holding a saved runs view (filter, grouping, charts) that the UI opens for the URL
query ``viewStateShareKey=<key>``."""
MODEL_TRAINING_QUERY = "workflowType=machine_learning"
"""The UI query that selects its model-training layout: MLflow 3.17's UI decides GenAI vs model training by this
query (else the browser's last choice, else GenAI), not by :data:`EXPERIMENT_KIND`."""


def runs_url(server: str, experiment_id: str, view: str | None = None) -> str:
    """The UI address of an experiment's runs in the model-training layout, opening the saved view ``view``."""
    query = MODEL_TRAINING_QUERY + (f"&viewStateShareKey={view}" if view else "")
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def experiment_id(client: Any, name: str, description: str | None = None,
                  tags: Mapping[str, str] | None = None) -> str:
    """The id of the MLflow experiment ``name``, created if it does not exist yet, as a model-training experiment
    (:func:`mark_model_training`) with ``description`` when it has none and ``tags``.

    Creating is also safe against another process creating it at the same moment (an http store has no
    lock): "already exists" means it is there, so it is looked up again.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        refused = None
        try:
            client.create_experiment(name)
        except MlflowException as exc:
            refused = exc
            logging.getLogger(__name__).debug("experiment %r created concurrently: %s", name, exc)
        found = client.get_experiment_by_name(name)
        if found is None:
            why = str(refused).strip().splitlines()[0][:300] if refused is not None and str(refused).strip() else ""
            raise ConfigError(f"MLflow experiment {shortened(name)} could not be created" + (f": {why}" if why else ""))
    mark_model_training(client, found, description, tags)
    return found.experiment_id


def mark_model_training(client: Any, experiment: Any, description: str | None = None,
                        tags: Mapping[str, str] | None = None) -> None:
    """Tag ``experiment`` as model training (MLflow 3's UI then opens its runs, not a GenAI overview), give it
    ``description`` unless it has one (a user's own edit in the UI stays) and ``tags`` (e.g. saved views, as lth
    defines them); only what differs is written."""
    wanted = {EXPERIMENT_KIND: MODEL_TRAINING, **(tags or {})}
    if description and not experiment.tags.get(NOTE):
        wanted[NOTE] = description
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def metric_batch(values: Mapping[str, float], step: int = 0) -> list[Any]:
    """``values`` as MLflow ``Metric``s at ``step``, stamped now: one ``log_batch`` writes them in one transaction."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()]


def shortened(value: str, width: int = 80) -> str:
    """``repr(value)``, cut to ``width`` characters with its length said when longer (so an error stays one line)."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 4]}...' ({len(value):,} characters)"


def quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's search filters, which take no escapes: in single quotes, or in
    double quotes if it holds a single quote (an experiment named ``Bob's study``); a value with both kinds cannot
    be searched for, a :class:`ConfigError`."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{value!r} holds both ' and \", which MLflow's search filters cannot express: rename it")


def tag_query(tags: Mapping[str, str]) -> str:
    """An MLflow search filter matching runs that carry every one of ``tags``."""
    return " and ".join(f"tags.`{k}` = {quoted(v)}" for k, v in tags.items())


def log_folder(tracking_uri: str, experiment: str, folder: Path, run_name: str, tags: dict[str, str]) -> str:
    """Log every file of ``folder`` as the artifacts of the run of ``experiment`` with these tags (created, finished,
    if there is none; a rerun replaces its files instead of adding a run); returns its id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, experiment)
    found = client.search_runs([exp_id], tag_query(tags), order_by=["attributes.start_time DESC"], max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id)
    return run_id


def source_tags(command: str) -> dict[str, str]:
    """MLflow's source tags for a run made by ``command`` (e.g. ``lth imp``): the program, lth's version, and the
    git commit of lth's source when it runs from a checkout (what a reader needs to rerun it)."""
    import subprocess

    import lth

    tags = {"mlflow.source.name": command, "mlflow.source.type": "LOCAL", "lth.version": lth.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(lth.__file__).parent, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return tags
    return {**tags, "mlflow.source.git.commit": commit}
