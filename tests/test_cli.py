"""The CLI parses the shipped configs, trains into MLflow, and turns bad input into one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from lth.cli import build_cli, main
from lth.cli.parsing import parse
from lth.cli.study_cli import ImpCLI
from lth.errors import ConfigError
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


def test_the_store_is_the_argument_else_mlflow_tracking_uri_else_the_local_one(in_tmp: Path, monkeypatch) -> None:
    """MLflow's and Lightning's rule for every command (no shipped config pins a store): lth fit's logger and
    lth imp's study write where ``--trainer.logger.init_args.tracking_uri`` says, else ``$MLFLOW_TRACKING_URI``,
    else ``sqlite:///mlruns/mlflow.db`` in the working folder."""
    from lth.cli.runner import imp_study

    assert not [p.name for p in CONFIGS.rglob("*.yaml") if "tracking_uri" in p.read_text()]

    def stores(*extra: str) -> tuple[str, str]:
        fit = build_cli(["--config", PPO_CONFIG, *extra], run=False)
        return fit.trainer.logger._tracking_uri, imp_study(parse(["--config", PPO_CONFIG, *extra], ImpCLI)).tracking_uri

    assert stores() == (local_store(),) * 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///shared/s.db")
    assert stores() == (f"sqlite:///{in_tmp / 'shared' / 's.db'}",) * 2
    assert stores("--trainer.logger.init_args.tracking_uri", "sqlite:///mine.db") == (f"sqlite:///{in_tmp / 'mine.db'}",) * 2


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

    code = ("from lth.store.tracking import check_tracking_uri, resolve_tracking_uri;"
            "check_tracking_uri(resolve_tracking_uri('sqlite:///mlruns/mlflow.db'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert MlflowClient(local_store()).search_experiments()  # the store holds its default experiment


def test_ctrl_c_outside_a_fit_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lth.cli.runner.run_imp", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["imp", "--config", "whatever.yaml"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["lth: interrupted; the same command resumes where this one stopped"]


# ----------------------------------------------------------------------------------------------- lth imp --seeds
@pytest.mark.parametrize(("text", "seeds"), [
    ("3", [3]),
    (3, [3]),
    (0, [0]),
    ("0,1,2", [0, 1, 2]),
    ("0-4", [0, 1, 2, 3, 4]),
    ("0-2,7", [0, 1, 2, 7]),
    ("7,0-2", [7, 0, 1, 2]),  # the given order
    ("5,3,1", [5, 3, 1]),
    ("2-2", [2]),
    (" 0 , 1 - 3 ,  7 ", [0, 1, 2, 3, 7]),  # whitespace tolerated
    ("\t4\n", [4]),
    ("0-3,2,1-5", [0, 1, 2, 3, 4, 5]),  # repeats dropped, first occurrence kept
    ("1,1", [1]),
])
def test_parse_seeds_reads_every_accepted_form_in_order(text: str | int, seeds: list[int]) -> None:
    from lth.cli.seeds import parse_seeds

    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", " ", "a", "-1", -1, "4-2", "1,,2", ",1", "1,", "1-", "-", "1.5", "0x3",
                                  "+3", "1 2", "1-2-3", "0..4", "[0, 1]", "٣", "0-1000000000000", True, 1.0, None, [0, 1]])
def test_parse_seeds_refuses_anything_else_in_one_line_naming_the_forms(text: object) -> None:
    from lth.cli.seeds import parse_seeds

    with pytest.raises(ConfigError) as refused:
        parse_seeds(text)  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("--seeds:") and "\n" not in message
    assert all(form in message for form in ("3", "0,1,2", "0-4", "0-2,7"))


def test_study_seeds_are_the_parsed_seeds_or_seed_everything() -> None:
    from jsonargparse import Namespace

    from lth.cli.seeds import study_seeds

    assert study_seeds(Namespace(seeds="2-4,0", seed_everything=2)) == [2, 3, 4, 0]
    assert study_seeds(Namespace(seeds=None, seed_everything=7)) == [7]
    assert study_seeds(Namespace(seeds=None, seed_everything=False)) == [0]
    assert study_seeds(Namespace(seed_everything=5)) == [5]  # a config without the option


def test_imp_builds_the_first_seeds_model_and_data_and_keeps_all_seeds(in_tmp: Path) -> None:
    import torch

    from lth.cli.seeds import study_seeds

    cli = parse(["--config", PPO_CONFIG, *TINY, "--seeds", "5-6, 2", "--population", "2"], ImpCLI)
    assert cli.config.seeds == "5-6, 2" and cli.config.population == 2  # the raw option, as given
    assert study_seeds(cli.config) == cli.seeds == [5, 6, 2]
    assert cli.config.seed_everything == 5 and cli.config.data.init_args.seed == 5
    single = parse(["--config", PPO_CONFIG, *TINY, "--seeds", "5"], ImpCLI)
    other = parse(["--config", PPO_CONFIG, *TINY, "--seeds", "6"], ImpCLI)
    weights = [dict(c.model.named_parameters()) for c in (cli, single, other)]
    name = next(iter(weights[0]))
    assert torch.equal(weights[0][name], weights[1][name])  # the model of the first seed
    assert not torch.equal(weights[0][name], weights[2][name])
    default = parse(["--config", PPO_CONFIG, *TINY], ImpCLI)
    assert default.config.seeds is None and default.config.population is None
    assert default.seeds == study_seeds(default.config) == [default.config.seed_everything] == [0]


def test_imp_seeds_in_a_yaml_config(in_tmp: Path) -> None:
    (in_tmp / "one.yaml").write_text("seeds: 3\npopulation: 4\n")
    (in_tmp / "range.yaml").write_text("seeds: 0-2\n")
    one = parse(["--config", PPO_CONFIG, "--config", "one.yaml", *TINY], ImpCLI)
    assert one.seeds == [3] and one.config.seed_everything == 3 and one.config.population == 4
    assert parse(["--config", PPO_CONFIG, "--config", "range.yaml", *TINY], ImpCLI).seeds == [0, 1, 2]


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``lth argv``; assert exit code 2 and a single ``lth: error:`` line on stderr, without a traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lth: error: "), err
    return lines[0]


@pytest.mark.parametrize("bad", ["x", "-1", "4-2", "1,,2", ""])
def test_imp_with_bad_seeds_exits_2_with_one_line(in_tmp: Path, capsys, bad: str) -> None:
    line = _one_error_line(capsys, ["imp", "--config", PPO_CONFIG, *TINY, "--imp.levels", "2", "--seeds", bad])
    assert line.startswith("lth: error: --seeds: ") and "0-4" in line and "0,1,2" in line
    assert not (in_tmp / "mlruns").exists()  # refused before anything was built or stored


def test_seed_is_no_longer_an_imp_option(in_tmp: Path, capsys) -> None:
    for argv in (["--seed", "3"], ["--seed=3"]):
        line = _one_error_line(capsys, ["imp", "--config", PPO_CONFIG, *TINY, "--imp.levels", "2", *argv])
        assert "--seed" in line and "--seeds" in line  # jsonargparse: not an option (an abbreviation of two)
    with pytest.raises(ConfigError, match="--seed"):
        parse(["--config", PPO_CONFIG, *TINY, "--seed", "3"], ImpCLI)


def test_only_imp_takes_seeds_and_population_and_transfer_keeps_seed() -> None:
    from lth.cli.parsing import _parser_of
    from lth.cli.study_cli import TransferCLI

    transfer = _parser_of(TransferCLI).parse_args(["--seed", "3", "--transfer.ticket", "x", "--transfer.level", "1"])
    assert transfer.seed == 3
    imp = _parser_of(ImpCLI).parse_args(["--seeds", "0-2", "--population", "2"])
    assert imp.seeds == "0-2" and imp.population == 2
    for option in ("--seeds", "--population"):
        assert option not in _parser_of(TransferCLI)._option_string_actions
    assert "--seed" not in _parser_of(ImpCLI)._option_string_actions


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "1.5"])
def test_imp_refuses_a_population_that_is_not_a_positive_integer(in_tmp: Path, capsys, bad: str) -> None:
    line = _one_error_line(capsys, ["imp", "--config", PPO_CONFIG, *TINY, "--imp.levels", "2", "--population", bad])
    assert "population" in line and "an integer > 0" in line
    assert not (in_tmp / "mlruns").exists()


@pytest.mark.parametrize("conditions", ["[mask/weights, random/reinit]", "mask/weights,random/reinit"])
def test_imp_conditions_are_a_list_as_imp_modules_is_or_a_comma_string(in_tmp: Path, conditions: str) -> None:
    cli = parse(["--config", PPO_CONFIG, "--imp.conditions", conditions], ImpCLI)
    assert cli.settings.chain_conditions() == ["mask/weights", "random/reinit"]


def test_imp_condition_is_a_deprecated_alias_of_imp_conditions(in_tmp: Path, capsys) -> None:
    cli = parse(["--config", PPO_CONFIG, "--imp.condition", "mask/permuted"], ImpCLI)
    assert cli.settings.chain_conditions() == ["mask/permuted"]
    err = capsys.readouterr().err.strip()
    assert err == "lth: warning: --imp.condition is deprecated: --imp.conditions NAME says the same"
    assert parse(["--config", PPO_CONFIG], ImpCLI).settings.chain_conditions() == ["mask/weights"]
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="give imp.conditions only"):
        parse(["--config", PPO_CONFIG, "--imp.condition", "mask/permuted", "--imp.conditions", "all"], ImpCLI)
