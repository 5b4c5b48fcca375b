"""The library behind ``lth imp`` and ``lth transfer``: called from Python, it returns what it did and raises
:class:`ConfigError` (never ``SystemExit``) on a bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from lth.cli.runner import TransferFit, run_imp, run_transfer
from lth.errors import ConfigError
from tests.conftest import CONFIGS, local_store

PPO_CONFIG = str(CONFIGS / "cartpole" / "ppo.yaml")
TINY = ["--config", PPO_CONFIG, "--data.init_args.total_frames", "512", "--data.init_args.eval_every", "512",
        "--data.init_args.eval_episodes", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--data.init_args.env_id", "CartPol-v1"], "unknown env id 'CartPol-v1'"),
    (["--trainer.logger", "false"], "lth imp records its runs in MLflow"),
    (["--imp.levelz", "3"], "unrecognized arguments: --imp.levelz"),  # raised, not printed with an exit
])
def test_a_bad_study_config_raises_one_config_error(in_tmp: Path, args: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        run_imp(["--config", PPO_CONFIG, *args])


def test_a_transfer_of_a_missing_chain_raises_a_config_error(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="no chain run"):
        run_transfer(["--config", PPO_CONFIG], ticket="0" * 32, level=1, seeds=[0])
    with pytest.raises(ConfigError, match="at least one seed"):
        run_transfer(["--config", PPO_CONFIG], ticket="0" * 32, level=1, seeds=[])


def test_imp_and_transfer_return_their_results_and_resume(in_tmp: Path, capsys) -> None:
    study = run_imp([*TINY, "--imp.levels", "2", "--imp.amount", "0.6", "--seeds", "1"])
    assert [(r.condition, r.level) for r in study.results] == [("mask/weights", 0), ("mask/weights", 1)]
    assert study.results[1].density == pytest.approx(0.4, abs=0.01)
    assert study.tracking_uri == local_store() and study.experiment == "CartPole-v1/ppo/mlp64x64"
    capsys.readouterr()
    assert run_imp([*TINY, "--imp.levels", "2", "--imp.amount", "0.6", "--seeds", "1"]).results == study.results
    assert "best return" not in capsys.readouterr().out  # both levels read back from MLflow, none retrained

    chain_id = _chain_id(study.tracking_uri, study.experiment)
    transfer = run_transfer(TINY, ticket=chain_id, level=1, seeds=[0], out=in_tmp / "report", log_to_mlflow=False)
    assert [(f.arm, f.seed) for f in transfer.fits] == [("all", 0), ("ticket", 0)]
    assert all(f.best_return is not None and f.best_return > 0 for f in transfer.fits)
    assert transfer.fits[0].kept == "all" and transfer.fits[1].kept != "all"
    assert transfer.experiment == "CartPole-v1/ppo/mlp64x64/transfer"
    assert (transfer.settings.ticket, transfer.settings.level) == (chain_id, 1)
    assert transfer.summary == in_tmp / "report" / "summary.md" and "| ticket |" in transfer.summary.read_text()

    again = run_transfer(TINY, ticket=chain_id, level=1, seeds=[0], out=in_tmp / "report", log_to_mlflow=False)
    assert again.fits == [TransferFit(f.arm, f.seed, f.kept, None) for f in transfer.fits]  # skipped, not refit


def _chain_id(tracking_uri: str, experiment: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    (chain,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  "tags.`lth.role` = 'chain'")
    return chain.info.run_id


def test_torch_threads_follow_lth_num_threads_else_omp_num_threads_else_one(monkeypatch) -> None:
    import torch

    from lth.cli.runner import configure_process

    before = torch.get_num_threads()
    try:
        for lth, omp, expected in ((None, None, 1), (None, "2", 2), ("3", "2", 3)):
            for name, value in (("LTH_NUM_THREADS", lth), ("OMP_NUM_THREADS", omp)):
                if value is None:
                    monkeypatch.delenv(name, raising=False)
                else:
                    monkeypatch.setenv(name, value)
            configure_process()
            assert torch.get_num_threads() == expected, (lth, omp)
    finally:
        torch.set_num_threads(before)
