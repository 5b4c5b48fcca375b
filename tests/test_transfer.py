"""Input-mask transfer: which inputs a ticket keeps, envs that hide the rest, and ``lth transfer`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lth.cli import TransferCLI, build_cli, main
from lth.cli.parsing import parse
from lth.envs import make_env
from lth.errors import ConfigError
from lth.store.chain_store import ChainStore
from lth.study.transfer import kept_inputs
from tests.conftest import CONFIGS, local_store


def _mask(rows: int, dead_columns: list[int], columns: int = 4) -> torch.Tensor:
    mask = torch.ones(rows, columns, dtype=torch.bool)
    mask[:, dead_columns] = False
    return mask


def test_kept_inputs_are_the_union_over_the_chosen_input_layers() -> None:
    masks = {"actor.0.weight": _mask(3, [0, 1]), "actor.2.weight": torch.zeros(2, 3, dtype=torch.bool),
             "critic.0.weight": _mask(3, [0])}
    assert kept_inputs(masks) == [1, 2, 3]
    assert kept_inputs(masks, ["actor"]) == [2, 3]  # only the first layer of a sub-module counts
    with pytest.raises(ConfigError, match="no input layer in sub-modules"):
        kept_inputs(masks, ["policy"])
    with pytest.raises(ConfigError, match="convolution"):
        kept_inputs({"q_net.0.layers.0.weight": torch.ones(16, 4, 3, 3, dtype=torch.bool)})


def test_env_shows_only_the_kept_inputs_in_every_observation_final_ones_included() -> None:
    env = make_env("CartPole-v1", 3, seed=0, keep_inputs=[2, 3])
    data = env.rollout(300, break_when_any_done=False)  # CartPole episodes under random actions end often
    assert bool(data["next", "done"].any())
    for obs in (data["observation"], data["next", "observation"]):
        assert obs[..., :2].abs().max() == 0
        assert obs[..., 2:].abs().max() > 0
    with pytest.raises(ConfigError, match=r"flat indices in \[0, 4\)"):
        make_env("CartPole-v1", 1, keep_inputs=[4])


def test_transfer_trains_both_arms_on_a_stored_ticket_and_reports_them(in_tmp: Path, capsys, monkeypatch) -> None:
    tiny = ["--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--data.init_args.total_frames", "1024",
            "--data.init_args.eval_every", "512", "--data.init_args.eval_episodes", "2",
            "--model.init_args.actor_hidden", "[8]", "--model.init_args.critic_hidden", "[8]",
            "--model.init_args.network.input_scale", "0.1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["imp", *tiny, "--imp.levels", "3", "--imp.amount", "0.6"])
    client = MlflowClient(local_store())
    experiment = client.get_experiment_by_name("CartPole-v1/ppo/mlp64x64")
    (chain,) = client.search_runs([experiment.experiment_id], "tags.`lth.role` = 'chain'")
    ticket = chain.info.run_id
    assert ticket in capsys.readouterr().out  # lth imp prints the id that lth transfer takes
    store = ChainStore.of_run(local_store(), ticket)
    expected = kept_inputs(store.load(store.finished_runs()[2].info.run_id, "ticket.pt")["masks"])

    cli = build_cli([*tiny, "--transfer.ticket", ticket, "--transfer.level", "2", "--transfer.arm", "ticket"],
                    run=False, cli_class=TransferCLI)
    assert cli.datamodule.hparams.env_kwargs["keep_inputs"] == expected
    assert cli.model.hparams.env_kwargs["keep_inputs"] == expected

    args = ["transfer", *tiny, "--ticket", ticket, "--level", "2", "--seeds", "0-1", "--out", "report"]
    import lth.cli.runner as runner

    parsed = []  # the arguments are parsed once; every fit is that spec with its arm and seed, as data
    monkeypatch.setattr(runner, "parse", lambda what, *a, **k: parsed.append(type(what).__name__) or parse(what, *a, **k))
    main(args)
    assert parsed == ["list"] + ["Namespace"] * 4
    transfer = client.get_experiment_by_name("CartPole-v1/ppo/mlp64x64/transfer")
    runs = client.search_runs([transfer.experiment_id], "tags.`lth.role` = 'transfer'")
    assert sorted((r.data.tags["inputs"], r.data.tags["seed"]) for r in runs) == [
        ("all", "0"), ("all", "1"), ("ticket", "0"), ("ticket", "1")]
    assert all(r.info.status == "FINISHED" and r.data.metrics["eval/best_return"] > 0 for r in runs)
    summary = (in_tmp / "report" / "summary.md").read_text()
    assert "| all | all | 2 |" in summary and "| ticket |" in summary
    assert (in_tmp / "report" / "learning_curves.png").stat().st_size > 10_000
    (report_run,) = client.search_runs([transfer.experiment_id], "tags.`lth.role` = 'report'")
    assert {a.path for a in client.list_artifacts(report_run.info.run_id)} == {"learning_curves.png", "summary.md"}

    capsys.readouterr()
    main(args)  # a second call finds every fit finished and only redraws the report
    assert capsys.readouterr().out.count("already finished, skipped") == 4


def test_transfer_of_a_missing_level_is_a_clear_error(in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["transfer", "--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--ticket", "0" * 32, "--level", "1"])
    assert "no chain run" in capsys.readouterr().err


def test_transfer_takes_seeds_and_modules_in_lth_imps_grammar(monkeypatch, capsys) -> None:
    """``--seeds 0-2,7`` and ``--modules [actor,critic]`` as ``lth imp`` takes them (space-separated still read);
    bad seeds are one line before anything runs."""
    from types import SimpleNamespace

    import lth.cli.runner as runner

    calls = []

    def run_transfer(rest, ticket, level, seeds, modules, out):
        calls.append((seeds, modules))
        return SimpleNamespace(summary="summary.md", experiment="e")

    monkeypatch.setattr(runner, "run_transfer", run_transfer)
    main(["transfer", "--ticket", "t", "--level", "1", "--seeds", "0-2,7", "--modules", "[actor,critic]"])
    main(["transfer", "--ticket", "t", "--level", "1", "--seeds", "0", "3", "--modules", "actor", "critic"])
    main(["transfer", "--ticket", "t", "--level", "1"])
    assert calls == [([0, 1, 2, 7], ["actor", "critic"]), ([0, 3], ["actor", "critic"]), ([0, 1, 2], None)]
    with pytest.raises(SystemExit) as stop:
        main(["transfer", "--ticket", "t", "--level", "1", "--seeds", "2-0"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("lth: error: --seeds") and "\n" not in err and len(calls) == 3
