"""Experts for distillation: load any agent back by checkpoint path or MLflow run id (``lth expert`` stores them:
:class:`lth.cli.parsing.ExportExpert`).

:func:`load_agent` finds the agent's class through the checkpoint's class path, so this module does not import
:mod:`lth.modules` (an :class:`lth.datamodules.ExpertDataModule` uses it as its default expert loader).
"""

from __future__ import annotations

import importlib
import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lth.errors import ConfigError
from lth.store.tracking import default_tracking_uri, resolve_tracking_uri

if TYPE_CHECKING:
    from lth.modules import AgentModule

#: The artifact an expert run stores its best checkpoint under.
EXPERT_ARTIFACT = "expert.ckpt"


def load_agent(ref: str, tracking_uri: str | None = None) -> AgentModule:
    """The agent stored at ``ref``: a Lightning checkpoint path, or the MLflow run id of an ``lth expert`` run in
    ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``, else the local store).

    The agent comes back in eval mode with gradients switched off (an expert is frozen). The checkpoint is read
    with ``weights_only=True`` (tensors and plain data): an expert from a shared store cannot run code here.
    """
    path = Path(ref)
    if not path.is_file():
        path = _download_expert(ref, resolve_tracking_uri(tracking_uri or default_tracking_uri()))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"{ref} is not a readable lth agent checkpoint ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'empty'})") from exc
    class_path = checkpoint.get("agent", {}).get("class_path")
    if class_path is None:
        raise ConfigError(f"{ref} is not an lth agent checkpoint (it has no agent class path)")
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    agent = cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    agent.eval()
    agent.requires_grad_(False)
    return agent


def _download_expert(run_id: str, tracking_uri: str) -> Path:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        folder = tempfile.mkdtemp(prefix="lth-expert-")
        return Path(MlflowClient(tracking_uri).download_artifacts(run_id, EXPERT_ARTIFACT, folder))
    except MlflowException as exc:
        raise ConfigError(
            f"expert {run_id!r} is neither a checkpoint file nor an MLflow run with an {EXPERT_ARTIFACT} artifact "
            f"in {tracking_uri}"
        ) from exc
