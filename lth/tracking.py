"""MLflow plumbing: the default store, a check that a tracking URI opens, and the config as a run artifact."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from lth.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` with a relative sqlite path made absolute (``sqlite:///mlruns/x.db`` -> ``sqlite:////cwd/mlruns/x.db``).

    MLflow caches one store per URI string, so a relative URI would keep pointing at the first working
    directory's database after a ``chdir`` (a long-lived process, or tests in temporary folders).
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def check_tracking_uri(uri: str) -> None:
    """Open ``uri`` once (creating a local sqlite store's folder) or raise a :class:`ConfigError` that says why.

    A new sqlite store is created under a file lock: MLflow's schema migration fails when two processes (say
    two ``lth imp`` seeds started together) create the same database at once.
    """
    from mlflow import MlflowClient

    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with _creation_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure to open the store is the user's to fix
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot open MLflow tracking URI {uri!r}: {first_line}. "
            f"Use a writable local store such as {DEFAULT_TRACKING_URI!r} or a server such as 'http://host:5000'."
        ) from exc
    finally:
        quiet.setLevel(level)


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """For a local sqlite store, create its folder and hold an exclusive lock beside the database."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f"{db.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def experiment_id(client: Any, name: str) -> str:
    """The id of the MLflow experiment ``name``, created if it does not exist yet."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def tag_query(tags: Mapping[str, str]) -> str:
    """An MLflow search filter matching runs that carry every one of ``tags``."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def log_folder(tracking_uri: str, experiment: str, folder: Path, run_name: str, tags: dict[str, str]) -> str:
    """Log every file of ``folder`` as the artifacts of a new, finished run of ``experiment``; returns its id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id(client, experiment), run_name=run_name, tags=tags)
    client.log_artifacts(run.info.run_id, str(folder))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


class SaveConfigToMLflow(SaveConfigCallback):
    """Stores the resolved CLI config as ``config.yaml`` in each MLflow run (Lightning's stock callback
    asserts on ``trainer.log_dir``, which MLflow loggers do not have)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, "config.yaml")


class ChainStore:
    """The MLflow records of one IMP chain: a parent run tagged with the chain, a nested child run per level.

    A level counts as finished only once its child run carries the tag ``lth.level_complete``, which is set
    after every artifact is written; resuming discards children that never got it.
    """

    COMPLETE = "lth.level_complete"

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_id = parent_id

    @classmethod
    def of_run(cls, tracking_uri: str, parent_id: str) -> ChainStore:
        """An existing chain, by its parent run id."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            run = MlflowClient(tracking_uri).get_run(parent_id)
        except MlflowException as exc:
            raise ConfigError(f"no chain run {parent_id!r} in {tracking_uri}") from exc
        if run.data.tags.get("lth.role") != "chain":
            raise ConfigError(f"run {parent_id!r} is not an IMP chain's parent run")
        return cls(tracking_uri, run.info.experiment_id, parent_id)

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, tags: dict[str, str], resume: bool) -> ChainStore:
        """The chain's parent run: the newest with the same tags when resuming, else a new one."""
        from mlflow import MlflowClient

        check_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri)
        exp_id = experiment_id(client, experiment)
        if resume:
            runs = client.search_runs([exp_id], f"{tag_query(tags)} and tags.`lth.role` = 'chain'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                return cls(tracking_uri, exp_id, runs[0].info.run_id)
        name = f"{tags['condition']} seed {tags['seed']}"
        run = client.create_run(exp_id, run_name=name, tags={**tags, "lth.role": "chain"})
        return cls(tracking_uri, exp_id, run.info.run_id)

    def _children(self) -> list[Any]:
        return self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}'")

    def finished_runs(self) -> dict[int, Any]:
        """The finished child runs by level, from one search."""
        return {int(r.data.tags["level"]): r for r in self._children() if r.data.tags.get(self.COMPLETE) == "true"}

    def discard_unfinished(self) -> None:
        for run in self._children():
            if run.data.tags.get(self.COMPLETE) != "true":
                self.client.delete_run(run.info.run_id)

    def find_level_run(self, level: int) -> str | None:
        """The finished child run of ``level``, if there is one."""
        run = self.finished_runs().get(level)
        return None if run is None else run.info.run_id

    def start_level(self, level: int, tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=f"level {level}",
            tags={**tags, "level": str(level), "mlflow.parentRunId": self.parent_id},
        )
        return run.info.run_id

    def finish_level(self, run_id: str, level: int, metrics: dict[str, float], parent_metrics: dict[str, float],
                     files: dict[str, Callable[[Path], None]]) -> None:
        """Log a level's metrics and artifacts (each written by ``files[name](path)``), then mark it finished."""
        import tempfile

        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            for name, write in files.items():
                path = Path(tmp) / name
                write(path)
                self.client.log_artifact(run_id, str(path))
        for key, value in parent_metrics.items():
            self.client.log_metric(self.parent_id, key, value, step=level)
        self.client.set_tag(run_id, self.COMPLETE, "true")
        self.client.set_terminated(run_id, "FINISHED")

    def load(self, run_id: str, name: str) -> Any:
        """``torch.load`` an artifact of a run."""
        import tempfile

        import torch
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp, tracking_uri=self.tracking_uri)
            return torch.load(path, weights_only=False)

    def finish_chain(self) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED")
