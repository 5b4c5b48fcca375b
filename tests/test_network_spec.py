"""The network spec (lth.rl.networks.NetworkSpec) from Python, YAML and the command line, with per-algorithm defaults."""

from __future__ import annotations

import pytest
import torch

from lth.cli import build_cli
from lth.errors import ConfigError
from lth.modules import DQN, PPO, Distill
from lth.rl.networks import NetworkSpec
from tests.conftest import CONFIGS


def test_each_algorithm_keeps_its_network_default_and_a_partial_dict_amends_it() -> None:
    assert PPO.default_network().activation == "tanh" and Distill.default_network().activation == "tanh"
    assert DQN.default_network().activation == "relu"
    assert DQN(hidden=[8], network={"init": "xavier"}).network_spec == NetworkSpec(activation="relu", init="xavier")
    with pytest.raises(ConfigError, match="unknown network option"):
        DQN(hidden=[8], network={"activations": "relu"})
    with pytest.raises(ConfigError, match="activation"):
        NetworkSpec(activation="gelu")


def test_reset_parameters_reinitialises_every_declared_network_with_the_spec() -> None:
    model = PPO(actor_hidden=[8], critic_hidden=[8], network=NetworkSpec(init="xavier", input_scale=0.1))
    before = {n: p.clone() for n, p in model.named_parameters()}
    model.reset_parameters()
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]) or torch.all(p == 0), name  # xavier biases stay zero
    first = model.actor.module[0].module[0].weight
    assert first.abs().max() <= 0.1 * (6 / (4 + 8)) ** 0.5 + 1e-6  # xavier bound scaled by input_scale


def test_the_cli_parses_the_network_block_and_its_flags_over_the_algorithm_default(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(CONFIGS / "cartpole" / "dqn.yaml"), "--model.init_args.network.init", "xavier",
                     "--model.init_args.network.input_scale", "0.1"], run=False)
    assert cli.model.network_spec == NetworkSpec(activation="relu", init="xavier", input_scale=0.1)
    assert cli.model.hparams.network["input_scale"] == 0.1  # plain data in checkpoints and loggers
    cli = build_cli(["--model", "lth.modules.PPO", "--data", "lth.datamodules.OnPolicyDataModule",
                     "--model.init_args.network.activation", "relu"], run=False)
    assert cli.model.network_spec == NetworkSpec(activation="relu")
