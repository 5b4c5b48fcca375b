"""``lth imp --executor ray``: each population of a study is a Ray task; the records equal those of the local
executor, and a unit whose worker is SIGKILLed is retried by Ray and resumes its chains from MLflow.

Each test runs the study with the local executor in this process and with Ray (a local Ray on this machine's
CPUs) in a child ``lth imp`` process, each in its own folder (its own sqlite store), and compares the stores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mlflow import MlflowClient

from lth.cli import main
from lth.cli.runner import run_imp
from lth.errors import ConfigError
from lth.store.chain_store import ChainStore
from lth.study.executors import LocalExecutor, Refused, _check_one_machine, file_store, run_unit
from tests.conftest import child_env, local_store
from tests.test_population_imp import STUDY

UNITS = [*STUDY, "--population", "2"]  # 2 seeds x 2 conditions x 3 levels: two units of two chains
EXPERIMENT = "CartPole-v1/ppo/mlp64x64"
WORKER_LEVEL = re.compile(r"^\(run_unit pid=(\d+)\) \[(\S+) seed (\d+)\] level (\d+):")


def folder_store(folder: Path) -> str:
    """The sqlite store ``lth imp`` run in ``folder`` writes."""
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def store_records(uri: str, experiment_name: str = EXPERIMENT) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Per (condition, seed, level; level -1: the chain run) of the study stored in experiment ``experiment_name``
    of ``uri``: run name, stable tags, artifact names and (for a level) the ticket's masks; asserts one chain run
    per chain, finished levels 0-2 and no other child run."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    records: dict[tuple[str, str, int], dict[str, Any]] = {}
    chains = client.search_runs([experiment.experiment_id], "tags.`lth.role` = 'chain'")
    assert len(chains) == 4
    for chain in chains:
        key = (chain.data.tags["condition"], chain.data.tags["seed"])
        assert (*key, -1) not in records  # one chain run per chain
        assert chain.info.status == "FINISHED" and "lth.claim.owner" not in chain.data.tags  # released
        records[(*key, -1)] = _record(client, chain)
        store = ChainStore(uri, experiment.experiment_id, chain.info.run_id)
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{chain.info.run_id}'")
        assert sorted(int(run.data.tags["level"]) for run in children) == [0, 1, 2], key  # no duplicate or orphan
        for run in children:
            assert run.info.status == "FINISHED" and "lth.level_complete" in run.data.tags
            record = _record(client, run)
            record["masks"] = store.load(run.info.run_id, "ticket.pt")["masks"]
            records[(*key, int(run.data.tags["level"]))] = record
    return records


def _record(client: MlflowClient, run: Any) -> dict[str, Any]:
    stable = ("condition", "seed", "level", "env", "algo", "lth.population.size", "mlflow.source.name")
    return {"name": run.info.run_name, "tags": {k: run.data.tags.get(k) for k in stable},
            "tag_keys": {k for k in run.data.tags if not k.startswith("lth.claim.")},
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id))}


def assert_same_study(expected: dict[tuple[str, str, int], dict[str, Any]],
                      got: dict[tuple[str, str, int], dict[str, Any]]) -> None:
    """Two studies' :func:`store_records` hold the same chains and level runs, names, tags, artifacts and
    bit-identical masks."""
    assert expected.keys() == got.keys() and len(expected) == 16
    for key, record in expected.items():
        other = got[key]
        assert (other["name"], other["tags"], other["tag_keys"], other["artifacts"]) == \
            (record["name"], record["tags"], record["tag_keys"], record["artifacts"]), key
        if "masks" in record:
            assert record["masks"].keys() == other["masks"].keys()
            assert all(torch.equal(record["masks"][n], other["masks"][n]) for n in record["masks"]), key
    # a unit holds one seed's two chains: one dense level-0 fit, then both chains in one population
    assert got[("mask/weights", "0", 0)]["tags"]["lth.population.size"] == "1"
    assert got[("mask/weights", "0", 1)]["tags"]["lth.population.size"] == "2"


def _run_local(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder.mkdir()
    monkeypatch.chdir(folder)
    main(["imp", *UNITS])


def _ray_command(folder: Path) -> subprocess.Popen:
    """``lth imp --executor ray`` in a child process (its own local Ray), in ``folder``, its output piped."""
    folder.mkdir()
    code = f"from lth.cli import main; main({['imp', *UNITS, '--executor', 'ray']!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=child_env(PYTHONUNBUFFERED="1"))


def test_ray_executor_records_the_study_the_local_executor_records(tmp_path: Path, monkeypatch) -> None:
    _run_local(tmp_path / "local", monkeypatch)
    proc = _ray_command(tmp_path / "ray")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "unit 1/2 finished: mask/weights s0, random/reinit s0" in out
    assert "unit 2/2 finished: mask/weights s1, random/reinit s1" in out
    levels = [m.groups() for m in map(WORKER_LEVEL.match, out.splitlines()) if m]
    assert len(levels) == 12  # every worker's level line reached the driver, none folded by Ray's deduplication
    pids = {seed: {pid for pid, _, s, _ in levels if s == seed} for seed in ("0", "1")}
    assert len(pids["0"]) == len(pids["1"]) == 1 and pids["0"] != pids["1"]  # each unit in its own worker
    assert "\x1b[" not in out  # no colour codes in a pipe
    assert_same_study(store_records(folder_store(tmp_path / "local")), store_records(folder_store(tmp_path / "ray")))


@pytest.mark.slow  # 35-60 s on two cores: a local run, Ray, a killed worker and its retry
def test_a_unit_whose_ray_worker_is_killed_is_retried_to_the_masks_of_an_uninterrupted_run(
        tmp_path: Path, monkeypatch) -> None:
    _run_local(tmp_path / "local", monkeypatch)
    proc = _ray_command(tmp_path / "ray")
    lines, killed = [], None
    for line in proc.stdout:  # kill the worker of the first level-1 line, mid-way through its unit's levels
        lines.append(line)
        match = WORKER_LEVEL.match(line)
        if killed is None and match and match.group(4) == "1":
            killed, seed = int(match.group(1)), match.group(3)
            os.kill(killed, signal.SIGKILL)
    out = "".join(lines)
    assert proc.wait(timeout=300) == 0, out[-3000:]
    assert killed is not None
    assert "took over the stale claim" in out  # the retry found its chains claimed by the dead worker's pid
    levels = [m.groups() for m in map(WORKER_LEVEL.match, out.splitlines()) if m]
    assert {pid for pid, _, s, _ in levels if s == seed} - {str(killed)}  # another worker finished the unit
    assert_same_study(store_records(folder_store(tmp_path / "local")), store_records(folder_store(tmp_path / "ray")))


def test_executors_run_units_in_order_and_refuse_what_they_cannot_run(tmp_path: Path, monkeypatch) -> None:
    assert LocalExecutor().map_units(lambda unit: unit * 2, [3, 1, 2]) == [6, 2, 4]

    def refuse(unit: int) -> int:
        raise ConfigError(f"bad unit {unit}")

    assert run_unit(refuse, 5) == Refused("bad unit 5")  # returned: Ray does not retry a configuration problem
    assert file_store(local_store()) and file_store(str(tmp_path)) and not file_store("http://host:5000")
    here = SimpleNamespace(util=SimpleNamespace(get_node_ip_address=lambda: "10.0.0.1"))
    _check_one_machine(SimpleNamespace(**vars(here), nodes=lambda: [
        {"NodeManagerAddress": "10.0.0.1", "Alive": True}, {"NodeManagerAddress": "10.0.0.2", "Alive": False}]))
    with pytest.raises(ConfigError, match=r"nodes \['10.0.0.2'\] are not"):
        _check_one_machine(SimpleNamespace(**vars(here), nodes=lambda: [
            {"NodeManagerAddress": "10.0.0.1", "Alive": True}, {"NodeManagerAddress": "10.0.0.2", "Alive": True}]))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="need --executor ray"):
        run_imp([*UNITS, "--ray.address", "auto"])
    with pytest.raises(ConfigError, match="executor"):
        run_imp([*UNITS, "--executor", "dask"])


def test_a_ray_unit_waits_while_another_live_process_holds_a_chain_then_runs(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lth.study.executors.BUSY_POLL_S", 0.05)
    uri = local_store()
    store = ChainStore.open(uri, "waits", {"condition": "mask/weights", "seed": "0"}, resume=True)  # held here
    calls: list[float] = []

    def unit(value: int) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            ChainStore.open(uri, "waits", {"condition": "mask/weights", "seed": "0"}, resume=True)  # busy: raises
        return value * 2

    releaser = threading.Timer(0.5, store.release)
    releaser.start()
    assert run_unit(unit, 21) == 42
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.45  # tried again only once the claim was released
    assert f"waiting for another process: chain {store.parent_id} is being trained" in capsys.readouterr().out
