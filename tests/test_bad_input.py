"""Every bad input ends before anything runs: exit code 2, one ``lth: error:`` line naming the option and its valid
values, and no MLflow run in the store (issue 11, defects 2-4). The fuzz test draws its malformed values from the
domains the options declare (their annotations), so a new option with a domain is fuzzed without a hand list."""

from __future__ import annotations

import sqlite3
import time
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from mlflow import MlflowClient

from lth.cli import main
from lth.cli.parsing import parse
from lth.cli.study_cli import ImpCLI
from lth.datamodules import ExpertDataModule, OnPolicyDataModule, ReplayDataModule
from lth.modules import DQN, PPO, Distill
from lth.rl.domains import describe
from lth.study.settings import ImpSettings
from tests.conftest import CONFIGS, local_store

PPO_CONFIG = str(CONFIGS / "cartpole" / "ppo.yaml")
DQN_CONFIG = str(CONFIGS / "cartpole" / "dqn.yaml")
DISTILL_CONFIG = str(CONFIGS / "cartpole" / "distill.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--data.init_args.total_frames", "1024", "--data.init_args.eval_every", "512",
        "--data.init_args.eval_episodes", "2", *QUIET]


def store_is_untouched(folder: Path) -> bool:
    """No store was left in the folder: a command that fails on bad input creates none (and removes one it opened)."""
    return not (folder / "mlruns" / "mlflow.db").exists()


def holds_no_run(folder: Path) -> bool:
    """No run and no experiment but MLflow's ``Default`` in the folder's default store (or no store at all)."""
    db = folder / "mlruns" / "mlflow.db"
    if not db.exists():
        return True
    with sqlite3.connect(db) as conn:
        runs = conn.execute("select count(*) from runs").fetchone()[0]
        experiments = [name for (name,) in conn.execute("select name from experiments")]
    return runs == 0 and experiments in ([], ["Default"])


def fails_cleanly(capsys: pytest.CaptureFixture[str], folder: Path, argv: list[str], *named: str) -> str:
    """Run ``lth argv`` in-process; assert exit 2, one stderr line ``lth: error: ...`` naming ``named``, no run."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("lth: error: "), (argv, err)
    for text in named:
        assert text in lines[0], (argv, lines[0], text)
    assert store_is_untouched(folder), argv
    return lines[0]


# ----------------------------------------------------------------------------------------------- one per bad input
@pytest.mark.parametrize(("extra", "named"), [
    (["--imp.rewind", "-1"], ["imp.rewind", "an integer >= 0 or 'init'"]),
    (["--imp.amount", "1.5"], ["imp.amount", "(0, 1)"]),
    (["--imp.amount", "-0.1"], ["imp.amount", "(0, 1)"]),
    (["--imp.prune_from", "worst"], ["imp.prune_from", "'best', 'last'"]),
    (["--imp.levels", "0"], ["imp.levels", "> 0"]),
    (["--imp.conditions", "nonsense"], ["imp.conditions", "mask/weights"]),
    (["--imp.condition", "nonsense"], ["imp.condition", "mask/weights"]),
    (["--imp.modules", "[nosuchmodule]"], ["imp.modules", "nosuchmodule", "'actor', 'critic'"]),
    (["--imp.branch_from", "0" * 32], ["imp.branch_from", "no chain run"]),
    (["--imp.rewind", "100000"], ["imp.rewind", "[0, 32]"]),  # 2 rollouts x 4 epochs x 4 minibatches
    (["--data.init_args.total_frames", "0"], ["data.init_args.total_frames", "> 0"]),
    (["--data.init_args.total_frames", "-100"], ["data.init_args.total_frames", "> 0"]),
    (["--data.init_args.num_envs", "0"], ["data.init_args.num_envs", "> 0"]),
    (["--data.init_args.rollout_steps", "0"], ["data.init_args.rollout_steps", "> 0"]),
    (["--data.init_args.eval_episodes", "0"], ["data.init_args.eval_episodes", "> 0"]),
    (["--data.init_args.eval_every", "0"], ["data.init_args.eval_every", "> 0"]),
    (["--model.init_args.lr", "-1"], ["model.init_args.lr", "> 0"]),
    (["--model.init_args.lr", "0"], ["model.init_args.lr", "> 0"]),
    (["--model.init_args.gamma", "1.5"], ["model.init_args.gamma", "(0, 1]"]),
    (["--model.init_args.gamma", "0"], ["model.init_args.gamma", "(0, 1]"]),
    (["--model.init_args.clip_epsilon", "0"], ["model.init_args.clip_epsilon", "> 0"]),
    (["--model.init_args.epochs", "0"], ["model.init_args.epochs", "> 0"]),
    (["--model.init_args.minibatches", "0"], ["model.init_args.minibatches", "> 0"]),
    (["--model.init_args.max_grad_norm", "0"], ["model.init_args.max_grad_norm", "> 0"]),
    (["--model.init_args.gae_lambda", "1.1"], ["model.init_args.gae_lambda", "[0, 1]"]),
    (["--model.init_args.actor_hidden", "[0]"], ["model.init_args.actor_hidden", "> 0"]),
    (["--seeds", "abc"], ["--seeds:", "0,1,2", "0-4"]),
    (["--population", "0"], ["population", "an integer > 0"]),
    (["--trainer.logger.init_args.tracking_uri", "bogus://nowhere"], ["cannot open MLflow tracking URI"]),
])
def test_a_bad_imp_value_is_one_line_before_any_run(in_tmp: Path, capsys, extra: list[str], named: list[str]) -> None:
    fails_cleanly(capsys, in_tmp, ["imp", "--config", PPO_CONFIG, *TINY, "--imp.levels", "2", *extra], *named)


@pytest.mark.parametrize(("extra", "named"), [
    (["--data.init_args.batch_size", "0"], ["data.init_args.batch_size", "> 0"]),
    (["--data.init_args.buffer_size", "-5"], ["data.init_args.buffer_size", "> 0"]),
    (["--data.init_args.replay_ratio", "0"], ["data.init_args.replay_ratio", "> 0"]),
    (["--data.init_args.warmup_frames", "-1"], ["data.init_args.warmup_frames", ">= 0"]),
    (["--data.init_args.alpha", "1.5"], ["data.init_args.alpha", "[0, 1]"]),
    (["--data.init_args.beta_start", "-0.1"], ["data.init_args.beta_start", "[0, 1]"]),
    (["--data.init_args.beta_end", "2"], ["data.init_args.beta_end", "[0, 1]"]),
    (["--model.init_args.eps_start", "1.5"], ["model.init_args.eps_start", "[0, 1]"]),
    (["--model.init_args.eps_eval", "-1"], ["model.init_args.eps_eval", "[0, 1]"]),
    (["--model.init_args.target_update_interval", "0"], ["model.init_args.target_update_interval", "> 0"]),
    (["--data.init_args.warmup_frames", "10"], ["warmup_frames", "batch_size"]),  # a cross-option check
])
def test_a_bad_replay_or_dqn_value_is_one_line(in_tmp: Path, capsys, extra: list[str], named: list[str]) -> None:
    fails_cleanly(capsys, in_tmp, ["imp", "--config", DQN_CONFIG, *QUIET, *extra], *named)


def test_a_bad_expert_eps_is_one_line(in_tmp: Path, capsys) -> None:
    fails_cleanly(capsys, in_tmp, ["fit", "--config", DISTILL_CONFIG, "--data.init_args.expert", "expert.ckpt",
                                   "--data.init_args.expert_eps", "2"], "data.init_args.expert_eps", "[0, 1]")


def test_rewind_from_the_command_line_is_an_int(in_tmp: Path) -> None:
    cli = parse(["--config", PPO_CONFIG, *TINY, "--imp.rewind", "30"], ImpCLI)
    assert cli.config.imp.rewind == 30 and isinstance(cli.config.imp.rewind, int)
    assert cli.settings.rewind == 30
    assert parse(["--config", PPO_CONFIG, *TINY], ImpCLI).config.imp.rewind == "init"
    assert holds_no_run(in_tmp)  # parsed, not run


def test_a_late_rewind_beyond_the_first_fit_in_yaml_is_refused_before_training(in_tmp: Path, capsys) -> None:
    config = in_tmp / "late.yaml"
    config.write_text("imp:\n  rewind: 100\n  levels: 2\n")
    line = fails_cleanly(capsys, in_tmp, ["imp", "--config", PPO_CONFIG, "--config", str(config), *TINY],
                         "imp.rewind", "[0, 32]", "got 100")
    assert "total_frames" in line


def test_an_empty_yaml_says_so(in_tmp: Path, capsys) -> None:
    (in_tmp / "empty.yaml").write_text("\n")
    fails_cleanly(capsys, in_tmp, ["imp", "--config", "empty.yaml"], "--config empty.yaml", "empty")
    (in_tmp / "list.yaml").write_text("- 1\n")
    fails_cleanly(capsys, in_tmp, ["fit", "--config", "list.yaml"], "--config list.yaml", "mapping")
    (in_tmp / "latin1.yaml").write_bytes("# Schlüssel\nseed_everything: 1\n".encode("latin-1"))
    fails_cleanly(capsys, in_tmp, ["imp", "--config", "latin1.yaml"], "--config latin1.yaml", "not UTF-8", "byte 6")


def test_a_wrong_type_in_yaml_names_the_value_given_not_its_section(in_tmp: Path, capsys) -> None:
    (in_tmp / "lr.yaml").write_text("model:\n  init_args:\n    lr: [1, 2]\n")
    line = fails_cleanly(capsys, in_tmp, ["imp", "--config", PPO_CONFIG, "--config", "lr.yaml", *TINY],
                         "model.init_args.lr must be a number > 0, got [1, 2]")
    assert "init_args" not in line.split("got", 1)[1] and "actor_hidden" not in line  # not the whole model dict
    (in_tmp / "levels.yaml").write_text("imp:\n  levels: [1, 2]\n")
    fails_cleanly(capsys, in_tmp, ["imp", "--config", PPO_CONFIG, "--config", "levels.yaml", *TINY],
                  "imp.levels must be an integer > 0, got [1, 2]")


def test_an_experiment_name_mlflow_refuses_is_one_short_line_with_mlflows_reason(in_tmp: Path, capsys) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["imp", "--config", PPO_CONFIG, *TINY, "--trainer.logger.init_args.experiment_name", "x" * 100_000])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and len(lines[0]) < 300, lines[0][:300]
    assert "(100,000 characters)" in lines[0] and "exceeds the maximum length of 500 characters" in lines[0]
    assert holds_no_run(in_tmp)


def test_expert_without_a_monitoring_checkpoint_is_refused_before_the_fit(in_tmp: Path, capsys) -> None:
    fails_cleanly(capsys, in_tmp, ["expert", "--config", PPO_CONFIG, *TINY, "--trainer.callbacks", "null"],
                  "trainer.callbacks", "ModelCheckpoint")


def test_report_with_an_unopenable_tracking_uri_is_one_line(in_tmp: Path, capsys) -> None:
    fails_cleanly(capsys, in_tmp, ["report", "--experiment", "x", "--tracking_uri", "bogus://nowhere"],
                  "cannot open MLflow tracking URI 'bogus://nowhere'")
    fails_cleanly(capsys, in_tmp, ["report", "--experimentz", "x"], "lth report", "--experiment")


def test_an_unreachable_server_fails_in_seconds(in_tmp: Path, capsys) -> None:
    start = time.monotonic()
    fails_cleanly(capsys, in_tmp, ["imp", "--config", PPO_CONFIG, *TINY,
                                   "--trainer.logger.init_args.tracking_uri", "http://127.0.0.1:9"],
                  "cannot open MLflow tracking URI 'http://127.0.0.1:9'")
    assert time.monotonic() - start < 30
    import os

    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # set for the probe only


def test_transfer_checks_its_ticket_and_level_before_training(in_tmp: Path, capsys) -> None:
    start = time.monotonic()
    fails_cleanly(capsys, in_tmp, ["transfer", "--config", PPO_CONFIG, *TINY, "--ticket", "0" * 32, "--level", "1"],
                  "ticket", "no chain run")
    fails_cleanly(capsys, in_tmp, ["transfer", "--config", PPO_CONFIG, "--level", "abc", "--ticket", "x"],
                  "--level", "invalid int value")
    assert time.monotonic() - start < 60  # nothing trained
    client = MlflowClient(local_store())
    assert [e.name for e in client.search_experiments()] == ["Default"]
    exp = client.create_experiment("CartPole-v1/ppo/mlp64x64")
    chain = client.create_run(exp, tags={"lth.role": "chain"}).info.run_id  # a chain without finished levels
    not_chain = client.create_run(exp).info.run_id
    for level in ("1", "-1"):
        line = fails_cleanly_keeping(capsys, ["transfer", "--config", PPO_CONFIG, *TINY, "--ticket", chain,
                                              "--level", level])
        assert "level" in line and "no finished level" in line
    line = fails_cleanly_keeping(capsys, ["transfer", "--config", PPO_CONFIG, *TINY, "--ticket", not_chain,
                                          "--level", "0"])
    assert "not an IMP chain" in line
    assert len(client.search_runs([exp])) == 2 and client.get_experiment_by_name(
        "CartPole-v1/ppo/mlp64x64/transfer") is None  # no transfer run, not even an experiment


def fails_cleanly_keeping(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Like :func:`fails_cleanly` for a store that already holds runs (checked by the caller)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("lth: error: "), lines
    return lines[0]


# ----------------------------------------------------------------------------------------------- the fuzz test
def _restricted(hint: Any) -> Any:
    """The jsonargparse restricted number type in ``hint`` (itself, a list's items, a union's member), if any."""
    if getattr(hint, "_restrictions", None):
        return hint
    for arg in typing.get_args(hint):
        found = _restricted(arg)
        if found is not None:
            return found
    return None


def _outside(hint: Any) -> list[str]:
    """Values outside the domain ``hint`` declares: each bound's wrong side, and values of the wrong type."""
    restricted = _restricted(hint)
    literals = [a for a in typing.get_args(hint) if typing.get_origin(a) is Literal] or (
        [hint] if typing.get_origin(hint) is Literal else [])
    bad: list[str] = []
    if restricted is not None:
        integer = issubclass(restricted._type, int)
        step = 1 if integer else 0.5
        for op, bound in restricted._restrictions:
            name = op.__name__
            if name in ("gt", "ge"):
                bad += [str(bound - step)] + ([str(bound)] if name == "gt" else [])
            elif name in ("lt", "le"):
                bad += [str(bound + step)] + ([str(bound)] if name == "lt" else [])
        bad.append("abc")
        if integer:
            bad.append("1.5")
    elif literals:
        bad.append("no-such-choice")
    if typing.get_origin(hint) is list:
        bad = [f"[{value}]" if value != "abc" else "abc" for value in bad]
    return list(dict.fromkeys(bad))


def _domains(target: Any, prefix: str) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    return [(f"{prefix}{name}", hint) for name, hint in hints.items()
            if name != "return" and (_restricted(hint) is not None or typing.get_origin(hint) is Literal
                                     or any(typing.get_origin(a) is Literal for a in typing.get_args(hint)))]


#: (command and config, the classes whose declared domains are fuzzed and their option prefixes)
SETUPS = [
    (["imp", "--config", PPO_CONFIG, *TINY], [(ImpSettings, "imp."), (PPO, "model.init_args."),
                                             (OnPolicyDataModule, "data.init_args.")]),
    (["imp", "--config", DQN_CONFIG, *QUIET], [(DQN, "model.init_args."), (ReplayDataModule, "data.init_args.")]),
    (["fit", "--config", DISTILL_CONFIG, "--data.init_args.expert", "expert.ckpt"],
     [(Distill, "model.init_args."), (ExpertDataModule, "data.init_args.")]),
]
FUZZ = [(argv, option, value, hint) for argv, targets in SETUPS for target, prefix in targets
        for option, hint in _domains(target, prefix) for value in _outside(hint)]


def test_the_fuzz_covers_every_declared_domain() -> None:
    options = {option for _, option, _, _ in FUZZ}
    assert len(FUZZ) >= 30 and len(options) >= 30
    assert {"imp.rewind", "imp.amount", "imp.levels", "imp.prune_from", "model.init_args.lr",
            "model.init_args.gamma", "data.init_args.total_frames", "data.init_args.alpha"} <= options
    assert ("imp.rewind", "-1") in {(o, v) for _, o, v, _ in FUZZ}


def test_fuzz_every_malformed_value_of_a_declared_domain_is_one_line_before_any_run(in_tmp: Path, capsys) -> None:
    seen = 0
    for argv, option, value, hint in FUZZ:
        line = fails_cleanly(capsys, in_tmp, [*argv, f"--{option}", value], option)
        assert describe(hint) in line or option.startswith("imp.rewind"), line
        seen += 1
    assert seen == len(FUZZ) >= 30


@pytest.mark.parametrize("args", [
    # 3 rollouts of 6 x 50 = 300 frames in 7 minibatches of 42 (+ a remainder of 6): 8 steps per epoch
    ["--config", PPO_CONFIG, "--data.init_args.num_envs", "6", "--data.init_args.rollout_steps", "50",
     "--data.init_args.total_frames", "900", "--model.init_args.minibatches", "7", "--model.init_args.epochs", "2",
     "--model.init_args.actor_hidden", "[8]", "--model.init_args.critic_hidden", "[8]"],
    ["--config", DQN_CONFIG, "--data.init_args.total_frames", "1600", "--data.init_args.warmup_frames", "1000",
     "--model.init_args.hidden", "[8]"],
], ids=["ppo", "dqn"])
def test_the_rewind_check_counts_the_optimizer_steps_a_fit_makes(in_tmp: Path, args: list[str]) -> None:
    """The late-rewind check predicts a fit's optimizer steps; a real fit makes exactly that many."""
    from lth.cli.parsing import LthCLI
    from lth.cli.study_cli import fit_optimizer_steps

    cli = parse([*args, *QUIET, "--data.init_args.eval_every", "100000", "--data.init_args.eval_episodes", "1",
                 "--trainer.logger", "false", "--trainer.callbacks", "null", "--trainer.enable_checkpointing",
                 "false"], LthCLI)
    expected = fit_optimizer_steps(cli.model, cli.datamodule, cli.trainer)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert expected == cli.trainer.global_step > 0


def test_a_late_rewind_from_the_command_line_runs(in_tmp: Path) -> None:
    """``--imp.rewind 10`` (an int from the command line) rewinds survivors to the weights after 10 steps."""
    import torch
    from mlflow.artifacts import download_artifacts

    from lth.cli.runner import run_imp

    args = ["--config", PPO_CONFIG, *TINY, "--model.init_args.actor_hidden", "[8]",
            "--model.init_args.critic_hidden", "[8]", "--seeds", "3"]
    run = run_imp([*args, "--imp.levels", "2", "--imp.rewind", "10"])
    assert [r.level for r in run.results] == [0, 1]
    client = MlflowClient(run.tracking_uri)
    exp = client.get_experiment_by_name(run.experiment).experiment_id
    (level0,) = client.search_runs([exp], "tags.level = '0'")
    ticket = torch.load(download_artifacts(run_id=level0.info.run_id, artifact_path="ticket.pt", dst_path=str(in_tmp),
                                           tracking_uri=run.tracking_uri), weights_only=False)
    init = parse(args, ImpCLI).model.state_dict()
    name = "actor.module.0.module.0.layers.0.weight"
    name = name if name in ticket["rewind_state"] else next(n for n in ticket["rewind_state"] if n.endswith("weight"))
    assert not torch.equal(ticket["rewind_state"][name], init[name])  # not the initial weights: 10 steps later


@pytest.mark.parametrize(("cls", "kwargs", "named"), [
    (OnPolicyDataModule, {"num_envs": 0}, "num_envs"),
    (OnPolicyDataModule, {"rollout_steps": -1}, "rollout_steps"),
    (ReplayDataModule, {"alpha": 1.5}, "alpha"),
    (ExpertDataModule, {"expert": "x.ckpt", "expert_eps": -0.5}, "expert_eps"),
    (PPO, {"lr": -1.0}, "lr"),
    (PPO, {"actor_hidden": [64, 0]}, "actor_hidden"),
    (DQN, {"gamma": 1.5}, "gamma"),
    (Distill, {"epochs": 0}, "epochs"),
])
def test_modules_and_datamodules_built_in_python_check_the_same_domains(cls: type, kwargs: dict[str, Any], named: str) -> None:
    from lth.errors import ConfigError

    with pytest.raises(ConfigError, match=named):
        cls(**kwargs)
