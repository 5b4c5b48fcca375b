"""``lth imp`` end to end: MLflow records of a study, and a killed chain resumed to the same masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import lth.study.imp
import lth.study.recording
from lth.callbacks import condition_names
from lth.callbacks.masks import global_magnitude_masks
from lth.cli import main, study_url
from lth.store.chain_store import ChainStore
from lth.store.ui_views import condition_colour
from tests.conftest import CONFIGS, local_store

TINY = ["--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--data.init_args.total_frames", "512",
        "--data.init_args.eval_every", "512", "--data.init_args.eval_episodes", "2",
        "--model.init_args.actor_hidden", "[16, 16]", "--model.init_args.critic_hidden", "[16, 16]",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _chains(client: MlflowClient, experiment: str) -> dict[str, object]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'")
    return {run.data.tags["condition"]: run for run in runs}


def _levels(client: MlflowClient, parent) -> dict[int, object]:
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {int(run.data.tags["level"]): run for run in children}


def _ticket(parent, level_run) -> dict:
    store = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id)
    return store.load(level_run.info.run_id, "ticket.pt")


def test_imp_study_records_every_ticket_in_mlflow(in_tmp: Path, capsys) -> None:
    main(["imp", *TINY, "--imp.levels", "3", "--imp.conditions", "all", "--seeds", "3"])
    out = capsys.readouterr().out
    assert "| level | density | mask/weights | mask/permuted | permuted/permuted | random/reinit |" in out

    client = MlflowClient(local_store())
    experiment = client.get_experiment_by_name("CartPole-v1/ppo/mlp64x64")
    assert f"(start it with: lth ui):\n  {study_url(local_store(), 'CartPole-v1/ppo/mlp64x64')}" in out
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's runs view, not GenAI
    assert "chains grouped by condition" in experiment.tags["mlflow.note.content"]
    assert {"mlflow.sharedViewState.lth-chains", "mlflow.sharedViewState.lth-levels"} <= set(experiment.tags)
    chains = _chains(client, "CartPole-v1/ppo/mlp64x64")
    assert set(chains) == set(condition_names(paper=True))
    for condition, parent in chains.items():
        assert parent.data.tags["seed"] == "3" and parent.data.tags["env"] == "CartPole-v1"
        assert parent.data.tags["algo"] == "ppo"
        assert parent.info.run_name == f"{condition} s3" and parent.data.tags["imp.levels"] == "3"
        assert f"condition {condition}" in parent.data.tags["mlflow.note.content"]
        assert parent.data.tags["mlflow.runColor"] == condition_colour(condition)  # one colour per condition
        assert parent.data.params["imp.amount"] == "0.2" and parent.data.params["imp.prune_from"] == '"best"'
        assert {"config.yaml", "chain.json", "best_return_vs_density.png", "levels.md"} <= {
            a.path for a in client.list_artifacts(parent.info.run_id)}
        seconds = client.get_metric_history(parent.info.run_id, "train_seconds")
        assert [m.step for m in seconds] == [0, 1, 2] and 0 < seconds[0].value < seconds[1].value < seconds[2].value
        densities = client.get_metric_history(parent.info.run_id, "density")
        assert [m.step for m in densities] == [0, 1, 2]
        assert [m.value for m in densities] == pytest.approx([1.0, 0.8, 0.64], abs=2.5 / 688)  # 688 weights
        best = client.get_metric_history(parent.info.run_id, "ticket/best_return")
        assert [m.step for m in best] == [0, 1, 2] and all(m.value > 0 for m in best)
        levels = _levels(client, parent)
        assert sorted(levels) == [0, 1, 2]
        for level, run in levels.items():
            assert run.data.tags["condition"] == condition and run.info.run_name == f"{condition} s3 L{level}"
            assert run.data.metrics["ticket/best_return"] == best[level].value
            assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/return")] == [512]
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"ticket.pt", "trained.pt", "next_state.pt", "densities.md", "inputs.png"} <= artifacts
            assert run.data.tags["lth.policy_uri"].startswith("models:/m-")  # the level's loadable policy
        ticket = _ticket(parent, levels[2])
        kept = sum(int(m.sum()) for m in ticket["masks"].values())
        total = sum(m.numel() for m in ticket["masks"].values())
        assert kept == total - round(0.2 * total) - round(0.2 * (total - round(0.2 * total)))
        assert not any("bias" in name for name in ticket["masks"])
        if condition == "mask/weights":  # the store alone re-derives a level's mask from its parent's trained.pt
            store = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id)
            trained = store.load(levels[1].info.run_id, "trained.pt")
            assert set(trained) == set(_ticket(parent, levels[1])["rewind_state"])  # every parameter, solo names
            rederived = global_magnitude_masks(trained, _ticket(parent, levels[1])["masks"], 0.2)
            assert all(torch.equal(rederived[n], ticket["masks"][n]) for n in ticket["masks"])


def test_killed_chain_resumes_with_identical_masks(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*TINY, "--imp.levels", "4", "--imp.conditions", "mask/permuted", "--seeds", "1"]
    main(["imp", *args, "--trainer.logger.init_args.experiment_name", "straight"])

    real_fit = lth.study.imp.L.Trainer.fit
    calls = {"n": 0}

    def dies_at_level_2(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real_fit(self, *a, **k)

    monkeypatch.setattr(lth.study.imp.L.Trainer, "fit", dies_at_level_2)
    with pytest.raises(RuntimeError, match="killed"):
        main(["imp", *args, "--trainer.logger.init_args.experiment_name", "resumed"])
    monkeypatch.setattr(lth.study.imp.L.Trainer, "fit", real_fit)
    main(["imp", *args, "--trainer.logger.init_args.experiment_name", "resumed", "--resume"])

    client = MlflowClient(local_store())
    straight = _chains(client, "straight")["mask/permuted"]
    resumed_runs = client.search_runs([client.get_experiment_by_name("resumed").experiment_id],
                                      "tags.`lth.role` = 'chain'")
    assert len(resumed_runs) == 1  # the same chain continued, no second parent
    resumed = resumed_runs[0]
    a, b = _levels(client, straight), _levels(client, resumed)
    assert sorted(b) == [0, 1, 2, 3]  # the killed level's partial run is gone, nothing duplicated
    store = ChainStore(local_store(), straight.info.experiment_id, straight.info.run_id)
    for level in range(4):
        ta, tb = store.load(a[level].info.run_id, "ticket.pt"), store.load(b[level].info.run_id, "ticket.pt")
        assert all(torch.equal(ta["masks"][n], tb["masks"][n]) for n in ta["masks"]), level
    history = client.get_metric_history(resumed.info.run_id, "density")
    assert [m.step for m in history] == [0, 1, 2, 3]


def test_branch_mode_reuses_the_stored_ticket_masks(in_tmp: Path) -> None:
    main(["imp", *TINY, "--imp.levels", "3", "--imp.conditions", "mask/weights"])
    client = MlflowClient(local_store())
    ticket_chain = _chains(client, "CartPole-v1/ppo/mlp64x64")["mask/weights"]
    main(["imp", *TINY, "--imp.levels", "3", "--imp.conditions", "mask/reinit",
          "--imp.branch_from", ticket_chain.info.run_id])
    branch = _chains(client, "CartPole-v1/ppo/mlp64x64")["mask/reinit"]
    assert branch.data.tags["branch_from"] == ticket_chain.info.run_id
    store = ChainStore(local_store(), branch.info.experiment_id, branch.info.run_id)
    a, b = _levels(client, ticket_chain), _levels(client, branch)
    for level in (1, 2):
        ta, tb = store.load(a[level].info.run_id, "ticket.pt"), store.load(b[level].info.run_id, "ticket.pt")
        assert all(torch.equal(ta["masks"][n], tb["masks"][n]) for n in ta["masks"])


def test_unknown_condition_is_a_clear_error(in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["imp", *TINY, "--imp.conditions", "mask/weights,mask/shuffled"])
    assert stop.value.code == 2
    assert "mask/shuffled" in capsys.readouterr().err


def test_imp_runs_dqn_on_mazegrid_with_every_condition(in_tmp: Path) -> None:
    tiny_dqn = ["--config", str(CONFIGS / "mazegrid" / "dqn.yaml"), "--data.init_args.total_frames", "2048",
                "--data.init_args.warmup_frames", "1024", "--data.init_args.batch_size", "64",
                "--data.init_args.buffer_size", "2048", "--data.init_args.eval_every", "1024",
                "--data.init_args.eval_episodes", "2", "--model.init_args.hidden", "[32]",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["imp", *tiny_dqn, "--imp.levels", "2", "--imp.conditions", "all"])
    client = MlflowClient(local_store())
    chains = _chains(client, "lth/MazeGrid-v0/dqn/mlp256x256")
    assert set(chains) == set(condition_names(paper=True))
    for parent in chains.values():
        assert parent.data.tags["algo"] == "dqn" and parent.data.tags["env"] == "lth/MazeGrid-v0"
        levels = _levels(client, parent)
        assert sorted(levels) == [0, 1]
        ticket = _ticket(parent, levels[1])
        assert sorted(ticket["masks"]) == ["q_net.1.weight", "q_net.3.weight"]  # flatten, 1200 -> 32 -> 4 actions
        assert ticket["masks"]["q_net.1.weight"].shape == (32, 1200)
        kept = sum(int(m.sum()) for m in ticket["masks"].values()) / sum(m.numel() for m in ticket["masks"].values())
        assert kept == pytest.approx(0.8, abs=1e-3)
        assert {"ticket.pt", "inputs.png"} <= {a.path for a in client.list_artifacts(levels[1].info.run_id)}


def test_imp_distils_cartpole_students_from_an_expert_run_with_every_condition(in_tmp: Path, capsys) -> None:
    main(["expert", *TINY, "--trainer.logger.init_args.experiment_name", "CartPole-v1/expert/tiny"])
    out = capsys.readouterr().out
    expert_run = out.split("expert stored: run id ")[1].split()[0]
    client = MlflowClient(local_store())
    assert client.get_run(expert_run).data.tags["lth.role"] == "expert"
    assert "expert/return" in client.get_run(expert_run).data.metrics

    main(["imp", "--config", str(CONFIGS / "cartpole" / "distill.yaml"), "--data.init_args.expert", expert_run,
          "--data.init_args.total_frames", "1024", "--data.init_args.eval_every", "1024",
          "--data.init_args.eval_episodes", "2", "--model.init_args.hidden", "[16, 16]",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
          "--imp.levels", "2", "--imp.conditions", "all"])
    chains = _chains(client, "CartPole-v1/distill/mlp128x128")
    assert set(chains) == set(condition_names(paper=True))
    for parent in chains.values():
        assert parent.data.tags["algo"] == "distill"
        levels = _levels(client, parent)
        assert sorted(levels) == [0, 1]
        ticket = _ticket(parent, levels[1])
        assert all(name.startswith("student.") for name in ticket["masks"])  # the expert is not part of the model
        kept = sum(int(m.sum()) for m in ticket["masks"].values()) / sum(m.numel() for m in ticket["masks"].values())
        assert kept == pytest.approx(0.8, abs=2e-3)


@pytest.mark.parametrize("status", ["success", "failed"])
def test_member_logger_buffers_metrics_until_the_fit_ends(in_tmp: Path, status: str) -> None:
    Path("mlruns").mkdir()
    client = MlflowClient(local_store())
    run = client.create_run(client.create_experiment("buffered"))
    logger = lth.study.recording.MemberLogger(0, flush_seconds=3600, tracking_uri=local_store(), run_id=run.info.run_id)
    for step in range(5):
        logger.log_metrics({"a": float(step), "b": -float(step)}, step=step * 512)
    assert client.get_metric_history(run.info.run_id, "a") == []  # nothing written before the flush
    logger.finalize(status)  # Lightning finalizes its loggers when a fit ends, and when it fails
    for key, sign in (("a", 1), ("b", -1)):
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(s * 512, sign * float(s)) for s in range(5)]
    logger = lth.study.recording.MemberLogger(0, flush_seconds=0, tracking_uri=local_store(), run_id=run.info.run_id)
    logger.log_metrics({"c": 1.0}, step=7)  # past flush_seconds: written at once
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "c")] == [(7, 1.0)]


def test_a_level_whose_records_fail_midway_never_reads_as_finished(in_tmp: Path, monkeypatch) -> None:
    """Inject a failure while level 1's artifacts are written (after its metrics, before the rest): the level must
    not read as finished with an artifact or metric missing, and the same command then redoes it completely."""
    experiment = "CartPole-v1/ppo/mlp64x64"
    real = ChainStore.log_files
    calls: list[str] = []

    def failing(self, files, run_id=None):
        if run_id is not None and "ticket.pt" in files:
            calls.append(run_id)
            if len(calls) == 2:  # level 1's records: write one file, then fail as a full disk would
                real(self, dict(list(files.items())[:1]), run_id)
                raise OSError("No space left on device")
        return real(self, files, run_id)

    monkeypatch.setattr(ChainStore, "log_files", failing)
    with pytest.raises(OSError, match="No space left"):
        main(["imp", *TINY, "--imp.levels", "3"])
    monkeypatch.setattr(ChainStore, "log_files", real)
    client = MlflowClient(local_store())
    parent = _chains(client, experiment)["mask/weights"]
    store = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id)
    assert sorted(store.finished_runs()) == [0]  # level 1 is not complete

    main(["imp", *TINY, "--imp.levels", "3"])
    finished = store.finished_runs()
    assert sorted(finished) == [0, 1, 2]
    # the failed level had logged its policy: the resume that discarded its run discarded that model too
    models = client.search_logged_models([parent.info.experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(run.info.run_id for run in finished.values())
    for level, run in finished.items():
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"ticket.pt", "next_state.pt", "trained.pt", "densities.md", "inputs.png"} <= names, level
        assert {"ticket/best_return", "density"} <= set(run.data.metrics), level


@pytest.mark.parametrize("damage", ["empty", "garbage", "deleted"])
def test_an_unreadable_artifact_of_a_finished_level_ends_in_one_error_line(in_tmp: Path, capsys, damage: str) -> None:
    """A resume that needs a finished level's next_state.pt (here: to extend the chain), or a branch study that
    needs its source's ticket.pt, and finds it empty, not a torch file, or gone, stops with one line naming the
    chain, level and file and what to do; nothing is written."""
    from urllib.parse import urlparse

    main(["imp", *TINY, "--imp.levels", "2"])
    client = MlflowClient(local_store())
    parent = _chains(client, "CartPole-v1/ppo/mlp64x64")["mask/weights"]
    store = ChainStore(local_store(), parent.info.experiment_id, parent.info.run_id)
    first, last = store.finished_runs()[0], store.finished_runs()[1]
    # what older lth versions stored (the CLI's restricted number types, float subclasses) still loads
    from jsonargparse.typing import OpenUnitInterval

    older = Path(urlparse(first.info.artifact_uri).path) / "next_state.pt"
    torch.save({**torch.load(older, weights_only=True), "amount": OpenUnitInterval(0.2)}, older)
    assert store.load(first.info.run_id, "next_state.pt")["amount"] == 0.2
    for name in ("next_state.pt", "ticket.pt"):
        path = Path(urlparse(last.info.artifact_uri).path) / name
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(b"" if damage == "empty" else b"not a torch file")
    before = {r.info.run_id: r.info.status for r in client.search_runs([parent.info.experiment_id])}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["imp", *TINY, "--imp.levels", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1, err
    assert err[0].startswith(f"lth: error: level 1's next_state.pt of chain {parent.info.run_id} is unreadable")
    assert "--no_resume" in err[0]
    after = {r.info.run_id: r.info.status for r in client.search_runs([parent.info.experiment_id])}
    assert after == before  # no level run started, no status changed
    assert "lth.claim.owner" not in client.get_run(parent.info.run_id).data.tags  # the claim was released
    # a branch study reads its source's masks first: an unreadable one stops it before any run of its own exists
    with pytest.raises(SystemExit) as exit_:
        main(["imp", *TINY, "--imp.levels", "3", "--imp.conditions", "mask/reinit", "--imp.branch_from",
              parent.info.run_id])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "level 1's ticket.pt of chain" in err[0], err
    assert {r.info.run_id for r in client.search_runs([parent.info.experiment_id])} == set(before)


def test_a_store_that_can_be_read_but_not_written_is_one_line_before_anything_runs(in_tmp: Path, capsys) -> None:
    """An immutable database (chattr +i: read-only even for root, as CI runs) stops lth imp and a logging lth report
    with one line naming the store; lth report --no_mlflow still reads it."""
    import shutil
    import subprocess

    main(["imp", *TINY, "--imp.levels", "1"])
    db = in_tmp / "mlruns" / "mlflow.db"
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (needs root on a filesystem with attributes)")
    try:
        for argv in (["imp", *TINY, "--imp.levels", "2"], ["report", "--experiment", "CartPole-v1/ppo/mlp64x64"]):
            capsys.readouterr()
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            err = capsys.readouterr().err.strip().splitlines()
            assert exit_.value.code == 1 and len(err) == 1, (argv, err)
            assert "can be read but not written" in err[0] and "mlflow.db" in err[0], err
        main(["report", "--experiment", "CartPole-v1/ppo/mlp64x64", "--no_mlflow", "--out", "report"])
        assert (in_tmp / "report" / "summary.md").exists()
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_a_store_whose_creation_was_interrupted_is_named_as_such(in_tmp: Path, capsys) -> None:
    """A database left with some of MLflow's tables and no schema version (what a full disk or a kill during its
    creation leaves) is one line saying so, not a migration error at every run; a file that is not a database too."""
    import sqlite3

    MlflowClient(local_store()).search_experiments()  # a complete store, then cut back to a partial one
    db = in_tmp / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as connection:
        names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in names:
            if name not in ("experiments", "runs", "tags", "params", "metrics"):
                connection.execute(f'DROP TABLE "{name}"')
    for contents in (None, b"not a database, but a file of that name"):
        if contents is not None:
            db.write_bytes(contents)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(["imp", *TINY, "--imp.levels", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 1 and len(err) == 1, err
        expected = "is a partial MLflow store" if contents is None else "is not an MLflow store"
        assert err[0].startswith(f"lth: error: {db} {expected}"), err
