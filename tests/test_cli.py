"""The CLI parses the shipped configs, trains into MLflow, and turns bad input into one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from lth.cli import build_cli, main
from lth.modules import PPO
from tests.conftest import CONFIGS, local_store

PPO_CONFIG = str(CONFIGS / "cartpole" / "ppo.yaml")
TINY = ["--data.init_args.total_frames", "1024", "--data.init_args.eval_every", "512",
        "--data.init_args.eval_episodes", "2", "--trainer.enable_progress_bar", "false"]


def test_config_parses_into_paper_hyperparameters(in_tmp: Path) -> None:
    cli = build_cli(["--config", PPO_CONFIG, "--data.init_args.env_id", "Acrobot-v1"], run=False)
    assert isinstance(cli.model, PPO)
    assert cli.model.hparams.gae_lambda == 0.8 and cli.model.hparams.lr == 5e-4
    assert cli.model.hparams.env_id == "Acrobot-v1"  # linked from the datamodule
    assert cli.trainer.val_check_interval == 10  # eval every 5000 frames / 512 frames per rollout


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data.init_args.env_id", "CartPol-v1"], "unknown env id 'CartPol-v1'"),
        (["--model.init_args.distribution", "tanh_normal"], "valid: ['categorical']"),
        (["--model.init_args.learning_rate", "0.1"], "learning_rate"),
        (["--trainer.logger.init_args.tracking_uri", "bogus://nowhere"], "cannot open MLflow tracking URI"),
        (["--trainer.logger.init_args.tracking_uri", "sqlite:////proc/no/mlflow.db"], "sqlite:///mlruns"),
    ],
)
def test_bad_input_ends_with_one_clear_message(in_tmp: Path, capsys, extra: list[str], expected: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", PPO_CONFIG, *TINY, *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_fit_logs_learning_curve_config_and_checkpoint_to_mlflow(in_tmp: Path) -> None:
    main(["fit", "--config", PPO_CONFIG, *TINY])
    client = MlflowClient(local_store())
    experiment = client.get_experiment_by_name("CartPole-v1/ppo/mlp64x64")
    (run,) = client.search_runs([experiment.experiment_id])
    curve = client.get_metric_history(run.info.run_id, "eval/return")
    assert [m.step for m in curve] == [512, 1024]  # x-axis: env frames
    assert run.data.metrics["eval/best_return"] == max(m.value for m in curve)
    assert run.data.params["gae_lambda"] == "0.8"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts
    assert any(p.endswith("last.ckpt") for p in _walk(client, run.info.run_id, ""))
    assert not (in_tmp / experiment.experiment_id).exists()  # checkpoints stay under mlruns/


def _walk(client: MlflowClient, run_id: str, path: str) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path or None):
        out += _walk(client, run_id, item.path) if item.is_dir else [item.path]
    return out


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_instantiates(in_tmp: Path, config: Path) -> None:
    # distillation configs name their expert on the command line (loaded lazily, at the first rollout)
    expert = ["--data.init_args.expert", "expert.ckpt"] if "ExpertDataModule" in config.read_text() else []
    cli = build_cli(["--config", str(config), *expert], run=False)
    assert cli.model.hparams.env_id == cli.datamodule.hparams.env_id
    assert cli.trainer.val_check_interval == cli.datamodule.eval_interval
    assert cli.config.trainer.logger.init_args.experiment_name.startswith(cli.datamodule.hparams.env_id)


def test_processes_that_create_one_new_store_together_all_open_it(in_tmp: Path) -> None:
    """Two ``lth imp`` seeds started at once on a fresh store must not collide in MLflow's schema migration."""
    import subprocess
    import sys

    code = ("from lth.tracking import check_tracking_uri, resolve_tracking_uri;"
            "check_tracking_uri(resolve_tracking_uri('sqlite:///mlruns/mlflow.db'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert MlflowClient(local_store()).search_experiments()  # the store holds its default experiment


def test_ctrl_c_outside_a_fit_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lth.cli.run_imp", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["imp", "--config", "whatever.yaml"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["lth: interrupted; the same command resumes where this one stopped"]
