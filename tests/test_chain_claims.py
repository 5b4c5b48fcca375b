"""One writer per chain, and one parent metric point per level whatever the moment of a kill."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

import lth.study.imp
from lth.cli import main
from lth.cli.runner import run_imp
from lth.store.chain_store import ChainStore
from lth.store.claims import ChainBusyError
from tests.conftest import CONFIGS, local_store

TINY = ["--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--data.init_args.total_frames", "512",
        "--data.init_args.eval_every", "512", "--data.init_args.eval_episodes", "2",
        "--model.init_args.actor_hidden", "[16, 16]", "--model.init_args.critic_hidden", "[16, 16]",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--seeds", "0"]
EXPERIMENT = "CartPole-v1/ppo/mlp64x64"


class Launch:
    """``lth imp *TINY *args`` in a forked process (no second import of torch), started when ``go`` is set.

    Forked before anything in this process opens the test's store, so no database connection is shared.
    """

    def __init__(self, folder: Path, go, *args: str) -> None:
        self.out, self.err = folder / f"launch{id(self)}.out", folder / f"launch{id(self)}.err"
        self.process = multiprocessing.get_context("fork").Process(target=self._main, args=(go, list(args)))
        self.process.start()

    def _main(self, go, args: list[str]) -> None:
        code = 1
        with open(self.out, "w") as out, open(self.err, "w") as err:
            sys.stdout, sys.stderr = out, err
            try:
                go.wait(120)
                main(["imp", *TINY, *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported through the exit code and the stderr file
                traceback.print_exc()
            finally:
                out.flush()
                err.flush()
        os._exit(code)

    def result(self, timeout: float = 120) -> tuple[int, str, str]:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            raise AssertionError(f"launch did not finish in {timeout} s")
        return self.process.exitcode, self.out.read_text(), self.err.read_text()


def _parents(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'", run_view_type=ViewType.ALL)


def _level_runs(client: MlflowClient, parent) -> list:
    """Every level run of ``parent``, deleted ones included."""
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              run_view_type=ViewType.ALL)


def _assert_each_level_trained_once(client: MlflowClient, parent, levels: int) -> None:
    runs = _level_runs(client, parent)
    assert sorted(int(r.data.tags["level"]) for r in runs) == list(range(levels))  # none deleted, none twice
    assert all(r.info.status == "FINISHED" and r.data.tags[ChainStore.COMPLETE] == "true" for r in runs)
    for key in ChainStore.PARENT_METRICS:
        assert [m.step for m in client.get_metric_history(parent.info.run_id, key)] == list(range(levels)), key


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lth: error:")]


def test_a_second_launch_refuses_a_chain_in_training_and_leaves_its_level_alone(in_tmp: Path, monkeypatch) -> None:
    go = multiprocessing.get_context("fork").Event()
    second = Launch(in_tmp, go, "--imp.levels", "2")
    real_fit = lth.study.imp.L.Trainer.fit
    done: list[tuple[int, str, str]] = []

    def fit_while_another_launch_tries(self, *args, **kwargs):
        if not done:  # level 0 is in training, its run unfinished: the same command starts elsewhere
            go.set()
            done.append(second.result())
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(lth.study.imp.L.Trainer, "fit", fit_while_another_launch_tries)
    try:
        run_imp([*TINY, "--imp.levels", "2"])
    finally:
        second.process.kill()  # a no-op once it has finished

    code, out, err = done[0]
    assert code == 2, err[-3000:]
    (line,) = _error_lines(err)
    assert "is being trained by another process" in line and f"pid {os.getpid()}" in line
    assert "best return" not in out
    client = MlflowClient(local_store())
    (parent,) = _parents(client)
    _assert_each_level_trained_once(client, parent, 2)
    assert ChainStore.OWNER not in client.get_run(parent.info.run_id).data.tags  # released


def test_two_concurrent_launches_train_every_level_exactly_once(in_tmp: Path) -> None:
    go = multiprocessing.get_context("fork").Event()
    launches = [Launch(in_tmp, go, "--imp.levels", "2") for _ in range(2)]
    go.set()  # both start at once, on a store that does not exist yet
    done = [launch.result() for launch in launches]
    codes = sorted(code for code, _, _ in done)
    assert codes in ([0, 0], [0, 2]), [err[-2000:] for _, _, err in done]
    trained = [out.count("best return") for _, out, _ in done]
    assert sorted(trained) == [0, 2]  # the winner trained both levels; the other refused or found them done
    for code, _, err in done:
        if code == 2:
            (line,) = _error_lines(err)
            assert "is being trained by another process" in line
    client = MlflowClient(local_store())
    (parent,) = _parents(client)  # one chain: the experiment and the parent run were made under the lock
    _assert_each_level_trained_once(client, parent, 2)


def _claim(client: MlflowClient, parent_id: str, host: str, pid: int, age: float) -> None:
    beat = (datetime.now(timezone.utc) - timedelta(seconds=age)).isoformat()
    for key, value in {ChainStore.OWNER: "someone-else", ChainStore.HOST: host, ChainStore.PID: str(pid),
                       ChainStore.HEARTBEAT: beat}.items():
        client.set_tag(parent_id, key, value)


def test_a_live_claim_refuses_and_a_stale_one_is_taken_over(in_tmp: Path, capsys) -> None:
    run_imp([*TINY, "--imp.levels", "1"])
    client = MlflowClient(local_store())
    (parent,) = _parents(client)
    theirs = client.create_run(parent.info.experiment_id, run_name="level 1",
                               tags={"level": "1", "mlflow.parentRunId": parent.info.run_id})  # in training

    _claim(client, parent.info.run_id, "another-host", 4242, age=30)
    with pytest.raises(ChainBusyError, match="pid 4242 on host another-host"):
        run_imp([*TINY, "--imp.levels", "2"])
    assert client.get_run(theirs.info.run_id).info.lifecycle_stage == "active"  # nothing of theirs deleted
    assert client.get_run(parent.info.run_id).data.tags[ChainStore.OWNER] == "someone-else"
    # a launch whose second chain is the busy one leaves no empty, claimed or running chain of its first behind
    with pytest.raises(ChainBusyError):
        run_imp([*TINY[:-2], "--seeds", "1,0", "--imp.levels", "2"])
    assert [run.data.tags["seed"] for run in _parents(client) if run.info.lifecycle_stage == "active"] == ["0"]

    _claim(client, parent.info.run_id, "another-host", 4242, age=3600)  # no heartbeat for an hour: stale
    capsys.readouterr()
    run_imp([*TINY, "--imp.levels", "2"])
    assert "took over the stale claim" in capsys.readouterr().out
    assert client.get_run(theirs.info.run_id).info.lifecycle_stage == "deleted"

    gone = subprocess.Popen(["true"])
    gone.wait()
    _claim(client, parent.info.run_id, socket.gethostname(), gone.pid, age=1)  # this host, its process gone
    run_imp([*TINY, "--imp.levels", "3"])
    assert "took over the stale claim" in capsys.readouterr().out
    assert ChainStore.OWNER not in client.get_run(parent.info.run_id).data.tags
    _assert_finished_levels(client, parent, 3)


def _assert_finished_levels(client: MlflowClient, parent, levels: int) -> None:
    finished = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id).finished_runs()
    assert sorted(finished) == list(range(levels))
    for key in ChainStore.PARENT_METRICS:
        history = client.get_metric_history(parent.info.run_id, key)
        assert [m.step for m in history] == list(range(levels)), key
        assert [m.value for m in history] == [finished[k].data.metrics[key] for k in range(levels)], key
    seconds = client.get_metric_history(parent.info.run_id, "train_seconds")  # the level runs' summed durations
    assert [m.step for m in seconds] == list(range(levels)) and all(m.value > 0 for m in seconds)


@pytest.mark.parametrize("kill_at", ["completion mark", "parent metrics"])
def test_a_kill_around_the_parents_metrics_leaves_one_point_per_level(in_tmp: Path, monkeypatch, kill_at) -> None:
    """Killed at level 1 either at the completion mark (before the parent's metrics) or at the parent's metrics
    (one batch, after the mark); the resume leaves exactly one point per level and metric."""
    real_set_tag, real_log_batch = MlflowClient.set_tag, MlflowClient.log_batch
    killed = []

    def set_tag(self, run_id, key, value, *args, **kwargs):
        if (kill_at == "completion mark" and key == ChainStore.COMPLETE and not killed
                and self.get_run(run_id).data.tags.get("level") == "1"):
            killed.append(run_id)
            raise KeyboardInterrupt("killed at the completion mark")
        return real_set_tag(self, run_id, key, value, *args, **kwargs)

    def log_batch(self, run_id, metrics=(), *args, **kwargs):
        if (kill_at == "parent metrics" and any(m.step == 1 for m in metrics) and not killed
                and self.get_run(run_id).data.tags.get("lth.role") == "chain"):
            killed.append(run_id)
            raise KeyboardInterrupt("killed at the parent's metrics")
        return real_log_batch(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", set_tag)
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    with pytest.raises(KeyboardInterrupt):
        run_imp([*TINY, "--imp.levels", "2"])
    assert killed
    monkeypatch.setattr(MlflowClient, "set_tag", real_set_tag)
    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    run_imp([*TINY, "--imp.levels", "2"])  # resumed at once: the killed process released its claim

    client = MlflowClient(local_store())
    (parent,) = [p for p in _parents(client) if p.info.lifecycle_stage == "active"]
    _assert_finished_levels(client, parent, 2)


def test_the_claim_heartbeat_runs_in_the_background(in_tmp: Path, monkeypatch) -> None:
    monkeypatch.setattr("lth.store.claims.HEARTBEAT_INTERVAL", 0.2)
    run_imp([*TINY, "--imp.levels", "1"])
    client = MlflowClient(local_store())
    (parent,) = _parents(client)
    store = ChainStore.open(local_store(), EXPERIMENT, {k: parent.data.tags[k] for k in
                                                        ("env", "algo", "condition", "seed")}, resume=True)
    try:
        first = client.get_run(parent.info.run_id).data.tags[ChainStore.HEARTBEAT]
        time.sleep(1.0)
        assert client.get_run(parent.info.run_id).data.tags[ChainStore.HEARTBEAT] > first
        store.release()
        with pytest.raises(ChainBusyError, match="no longer holds the claim"):
            store.discard_unfinished()  # never deletes anything of a chain it does not hold
    finally:
        store.release()


def _open_at_the_barrier(uri: str, barrier, result: Path) -> None:
    """In a forked process: open the chain, every process stopping at ``barrier`` just before it would create the
    parent run, so without the store lock all of them get there and each creates one."""
    from mlflow.tracking import MlflowClient as Client

    create = Client.create_run

    def create_at_barrier(self, *args, **kwargs):
        # under the lock only one process is ever here: it waits 2 s, then goes on (a broken barrier: the others
        # were kept out, as they should be)
        with contextlib.suppress(Exception):
            barrier.wait(timeout=2)
        return create(self, *args, **kwargs)

    Client.create_run = create_at_barrier
    try:
        store = ChainStore.open(uri, EXPERIMENT, {"condition": "mask/weights", "seed": "0"}, resume=True,
                                description={"seed": 0})
        store.release()
        result.write_text("opened")
    except ChainBusyError:
        result.write_text("busy")
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        result.write_text(repr(exc))
    finally:
        os._exit(0)


def test_racing_opens_of_one_chain_make_one_chain(in_tmp: Path) -> None:
    """Four processes open the same new chain at once: the store lock lets one find-or-create at a time, so there
    is one parent run (the others resume it or find it claimed), never one per process."""
    ctx = multiprocessing.get_context("fork")
    barrier, uri = ctx.Barrier(4), local_store()
    ChainStore.open(uri, EXPERIMENT, {"condition": "mask/weights", "seed": "9"}, resume=True).release()  # the store
    processes = [ctx.Process(target=_open_at_the_barrier, args=(uri, barrier, in_tmp / f"result{i}"))
                 for i in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    outcomes = sorted((in_tmp / f"result{i}").read_text() for i in range(4))
    assert set(outcomes) <= {"opened", "busy"}, outcomes
    client = MlflowClient(uri)
    assert [run.data.tags["seed"] for run in _parents(client)].count("0") == 1
