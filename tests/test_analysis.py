"""Input-layer analysis on hand-made masks, and ``lth report`` end to end on a small study."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lth.analysis import alive_inputs, dead_inputs, input_mass, input_names, input_report, last_alive_level
from lth.analysis.per_seed import PerSeed
from lth.cli import main
from lth.envs.maze_board import CHANNELS
from lth.report.chains import load_chains
from studies.store import export
from tests.conftest import CONFIGS, local_store


def test_a_fully_pruned_column_is_a_dead_input() -> None:
    weight = torch.randn(5, 4)
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[:, 1] = False  # cart velocity cut off
    mask[:4, 0] = False  # cart position keeps one weight
    report = input_report({"actor.0.weight": weight}, {"actor.0.weight": mask}, "CartPole-v1", (4,))["actor"]
    assert report.names == ("cart position", "cart velocity", "pole angle", "pole angular velocity")
    assert dead_inputs(report.mass).tolist() == [False, True, False, False]
    assert report.alive == 3
    assert report.mass[0].item() == pytest.approx(weight[4, 0].abs().item())
    assert report.channel_mass()["pole angle"] == pytest.approx(weight[:, 2].abs().sum().item())


def test_image_inputs_map_back_to_channel_height_width_with_channel_names() -> None:
    weight = torch.rand(8, 6 * 10 * 20) + 0.1
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask[:, 2 * 200 + 3 * 20 + 7] = False  # enemy_a channel, row 3, column 7
    mask[:, 5 * 200:] = False  # the whole poison channel
    mass = input_mass(weight, mask, (6, 10, 20))
    assert mass.shape == (6, 10, 20)
    dead = dead_inputs(mass)
    assert dead[2, 3, 7] and dead[5].all() and dead.sum() == 1 + 200
    assert input_names("lth/MazeGrid-v0", (6, 10, 20)) == CHANNELS
    assert input_names("MinAtar/Breakout-v1", (4, 10, 10)) == ("paddle", "ball", "trail", "brick")
    conv = input_mass(torch.ones(16, 4, 3, 3), torch.ones(16, 4, 3, 3), (4, 10, 10))
    assert conv.tolist() == [144.0] * 4  # a conv input layer: per-channel mass only


def test_last_alive_level_per_input() -> None:
    layer = "actor.0.weight"
    levels = [{layer: torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)},
              {layer: torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.bool)},
              {layer: torch.tensor([[0, 0, 1], [0, 0, 0]], dtype=torch.bool)}]
    assert last_alive_level(levels, layer, (3,)).tolist() == [0, 1, 2]
    image = torch.zeros(2, 2 * 1 * 3, dtype=torch.bool)
    image[1, 4] = True  # channel 1, pixel (0, 1)
    assert alive_inputs(image, (2, 1, 3)).nonzero().tolist() == [[1, 0, 1]]


def test_report_writes_every_figure_and_a_summary_from_a_small_study(in_tmp: Path, capsys) -> None:
    tiny = ["--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--data.init_args.total_frames", "512",
            "--data.init_args.eval_every", "512", "--data.init_args.eval_episodes", "2",
            "--model.init_args.actor_hidden", "[8]", "--model.init_args.critic_hidden", "[8]",
            "--model.init_args.network.input_scale", "0.1", "--imp.amount", "0.5",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for seed in (0, 1):
        main(["imp", *tiny, "--imp.levels", "4", "--imp.conditions", "mask/weights,random/reinit", "--seeds", str(seed)])
    main(["report", "--experiment", "CartPole-v1/ppo/mlp64x64", "--out", "report"])
    assert "wrote report/summary.md" in capsys.readouterr().out
    files = {p.name for p in Path("report").iterdir()}
    # the config prunes the actor only (the paper's AP), so only the actor's input layer is analysed
    assert files == {"summary.md", "return_vs_density.png", "layer_density.png", "inputs_actor.png",
                     "input_masks_actor.png"}
    summary = Path("report/summary.md").read_text()
    assert "| mask/weights | 3 | 0.125 |" in summary and "| random/reinit | 0 | 1.000 |" in summary
    assert "| seed | cart position | cart velocity | pole angle | pole angular velocity |" in summary
    main(["report", "--experiment", "CartPole-v1/ppo/mlp64x64", "--out", "report"])  # again: the same report run
    client = MlflowClient(local_store())
    exp = client.get_experiment_by_name("CartPole-v1/ppo/mlp64x64")
    assert {r.data.tags.get("lth.role") for r in client.search_runs([exp.experiment_id])} == {"chain", None}
    reports = client.search_runs([client.get_experiment_by_name("lth reports").experiment_id])
    assert len(reports) == 1 and "return_vs_density.png" in {a.path for a in client.list_artifacts(
        reports[0].info.run_id)}
    assert reports[0].data.tags["lth.report.chains.experiments"] == "CartPole-v1/ppo/mlp64x64"

    # The study's per-seed export (studies/, docs/RESULTS.md's data): one row per chain and level, the values
    # MLflow holds, and what the chains ran with read back from their params.
    meta = export(local_store(), "CartPole-v1/ppo/mlp64x64", Path("export"), paper_frames=80_000)
    assert {k: meta[k] for k in ("env", "algo", "modules", "frames", "amount", "seeds", "levels")} == {
        "env": "CartPole-v1", "algo": "ppo", "modules": ["actor"], "frames": 512, "amount": 0.5, "seeds": [0, 1],
        "levels": 4}
    table = PerSeed.read(Path("export/per_seed.csv"))
    chains = load_chains(local_store(), ["CartPole-v1/ppo/mlp64x64"])
    assert sum(len(table.levels(c)) * len(table.seeds(c)) for c in table.conditions()) == 2 * 2 * 4
    for chain in chains:
        for level, metrics in chain.levels.items():
            assert table.returns(chain.condition, level)[chain.seed] == metrics["ticket/best_return"]
    assert table.density("mask/weights", 3) == 0.125
    assert "inputs/actor/pole angle" in table.inputs("mask/weights")

    # Two experiments (e.g. two init schemes) share the return plot and get one input section each.
    # (one named with an apostrophe: MLflow's search filters take no escapes, so lth quotes it with ")
    main(["imp", *tiny, "--imp.levels", "2", "--model.init_args.network.init", "xavier",
          "--trainer.logger.init_args.experiment_name", "CartPole-v1/ppo/Bob's xavier"])
    main(["report", "--experiment", "CartPole-v1/ppo/mlp64x64", "--experiment", "CartPole-v1/ppo/Bob's xavier",
          "--out", "both"])
    both = Path("both/summary.md").read_text()
    assert "## Inputs of the actor: CartPole-v1/ppo/mlp64x64" in both
    assert "## Inputs of the actor: CartPole-v1/ppo/Bob's xavier" in both
    assert "| CartPole-v1/ppo/Bob's xavier: mask/weights | 1 |" in both
    assert {"inputs_actor_0.png", "inputs_actor_1.png", "input_masks_actor_1.png"} <= {
        p.name for p in Path("both").iterdir()}


def test_a_report_reads_each_chain_with_its_own_env_options(in_tmp: Path, capsys) -> None:
    """A chain trained on MazeGrid's RGB pixels is read back with its env options, so its input masks are drawn
    per colour plane (600 inputs), not against the default encoding's six object maps (1200)."""
    experiment = "lth/MazeGrid-v0/dqn/mlp256x256"
    main(["imp", "--config", str(CONFIGS / "mazegrid" / "dqn.yaml"), "--data.init_args.env_kwargs", "{obs_type: rgb}",
          "--data.init_args.total_frames", "256", "--data.init_args.warmup_frames", "64",
          "--data.init_args.batch_size", "16", "--data.init_args.buffer_size", "256", "--data.init_args.num_envs", "4",
          "--data.init_args.eval_every", "256", "--data.init_args.eval_episodes", "1",
          "--model.init_args.hidden", "[8]", "--model.init_args.network.obs_scale", "0.0039", "--imp.levels", "2",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    (chain,) = load_chains(local_store(), [experiment])
    assert chain.env_kwargs == {"obs_type": "rgb"} and sorted(chain.levels) == [0, 1]
    main(["report", "--experiment", experiment, "--out", "report", "--no_mlflow"])
    assert "wrote report/summary.md" in capsys.readouterr().out
    assert (Path("report") / "input_masks_q_net.png").is_file()
    assert "| seed | red | green | blue |" in Path("report/summary.md").read_text()


def test_search_filter_literals_take_either_quote_and_refuse_both() -> None:
    from lth.errors import ConfigError
    from lth.store.tracking import quoted, tag_query

    assert quoted("mask/weights") == "'mask/weights'"
    assert quoted("Bob's study") == '"Bob\'s study"'
    assert tag_query({"a": "x", "b": 'say "hi"'}) == "tags.`a` = 'x' and tags.`b` = 'say \"hi\"'"
    with pytest.raises(ConfigError, match="both"):
        quoted("Bob's \"study\"")
