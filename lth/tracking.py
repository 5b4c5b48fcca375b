"""MLflow plumbing: the default store, a check that a tracking URI opens, and the config as a run artifact."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from lth.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def check_tracking_uri(uri: str) -> None:
    """Open ``uri`` once (creating a local sqlite store's folder) or raise a :class:`ConfigError` that says why."""
    from mlflow import MlflowClient

    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure to open the store is the user's to fix
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot open MLflow tracking URI {uri!r}: {first_line}. "
            f"Use a writable local store such as {DEFAULT_TRACKING_URI!r} or a server such as 'http://host:5000'."
        ) from exc
    finally:
        quiet.setLevel(level)


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
