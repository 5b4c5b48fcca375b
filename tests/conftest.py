"""Shared test fixtures: repository paths and an isolated working directory for MLflow stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def local_store() -> str:
    """The default store of the current folder, as lth resolves it (absolute: MLflow caches stores per URI)."""
    from lth.store.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

    return resolve_tracking_uri(DEFAULT_TRACKING_URI)


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty folder so ``sqlite:///mlruns/mlflow.db`` lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def child_env(**extra: str) -> dict[str, str]:
    """The environment for an lth child process: this one's without ``MLFLOW_TRACKING_*`` (MLflow's client sets
    ``MLFLOW_TRACKING_URI`` in the process that logged, which would send a child in another folder to that store)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}, **extra}


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_the_shell() -> Iterator[None]:
    """lth follows ``$MLFLOW_TRACKING_URI`` when no argument names a store: the tests' stores are their own. Cleared
    before and after every test: MLflow's client sets it in a process once it logs, which would send the next test,
    or a module fixture set up before it (tests/test_cluster.py), to this test's store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# Tiny networks gain nothing from intra-op threads, and on two cores they contend with the env's work.
torch.set_num_threads(1)
