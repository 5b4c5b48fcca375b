"""DQN: the double-Q target, importance-weighted Huber loss, exploration, masking of the target net, learning."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from tensordict import TensorDict

import lth.modules.base as base
from lth.callbacks import PruningCallback
from lth.callbacks.seeding import evaluation_seed
from lth.datamodules import ReplayDataModule
from lth.modules import DQN
from lth.rl.agents import EpsilonGreedyActing
from lth.rl.schedules import linear_schedule
from tests.conftest import CONFIGS


def _batch(n: int = 32, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(n, 1, generator=g) < 0.3
    return TensorDict({
        "observation": torch.randn(n, 4, generator=g),
        "action": torch.randint(2, (n,), generator=g),
        "priority_weight": torch.rand(n, generator=g) + 0.1,
        "next": {"observation": torch.randn(n, 4, generator=g), "reward": torch.randn(n, 1, generator=g),
                 "done": terminated.clone(), "terminated": terminated},
    }, batch_size=[n])


def test_double_q_target_uses_online_argmax_and_target_value_with_weighted_huber() -> None:
    model = DQN("CartPole-v1", hidden=[16], gamma=0.9)
    model.target_updater.init_()
    target_net = copy.deepcopy(model.q_net)
    with torch.no_grad():
        for p in model.q_net.parameters():  # the online net moves away from the target
            p.add_(torch.randn_like(p) * 0.5)
    batch = _batch().unsqueeze(0)  # a population of one: [1, batch]
    per_transition = model.loss_module(batch)["loss"]
    with torch.no_grad():
        q = model.q_net(batch["observation"]).gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)
        next_online = model.q_net(batch["next", "observation"])
        next_target = target_net(batch["next", "observation"])
        not_done = (~batch["next", "terminated"]).float().squeeze(-1)
        bootstrap = next_target.gather(-1, next_online.argmax(-1, keepdim=True)).squeeze(-1)
        target = batch["next", "reward"].squeeze(-1) + 0.9 * not_done * bootstrap
        vanilla = batch["next", "reward"].squeeze(-1) + 0.9 * not_done * next_target.max(-1).values
    assert not torch.allclose(target, vanilla)  # the batch tells double Q from plain max-target Q
    torch.testing.assert_close(batch["td_error"].squeeze(-1), (q - target) ** 2)
    weights = batch["priority_weight"]
    expected = (weights * F.smooth_l1_loss(q, target, reduction="none", beta=1.0)).mean()
    torch.testing.assert_close(per_transition.mean(), expected)  # what DQN.training_step minimises


def test_epsilon_greedy_acting_is_greedy_at_zero_and_uniform_at_one() -> None:
    net = torch.nn.Linear(3, 4)
    obs = TensorDict({"observation": torch.randn(4000, 3)}, [4000])
    greedy = EpsilonGreedyActing(net, 4, eps=0.0)(obs.clone())["action"]
    assert torch.equal(greedy, net(obs["observation"]).argmax(-1))
    uniform = EpsilonGreedyActing(net, 4, eps=1.0)(obs.clone())["action"]
    counts = torch.bincount(uniform, minlength=4).float() / 4000
    assert torch.all((counts - 0.25).abs() < 0.04)


def _fit(model: DQN, *callbacks, frames: int = 640, seed: int = 0, eval_every: int = 320) -> ReplayDataModule:
    L.seed_everything(seed)
    dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=frames, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=eval_every, eval_episodes=2,
                          seed=seed)
    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval,
              callbacks=list(callbacks)).fit(model, dm)
    return dm


def test_linear_schedule_matches_hand_values() -> None:
    # 1.0 -> 0.1 over 1000 frames: 1 - 0.9 * t / 1000, then flat; before 0 it is the start value
    for t, eps in [(-10, 1.0), (0, 1.0), (250, 0.775), (500, 0.55), (999, 0.1009), (1_000, 0.1), (5_000, 0.1)]:
        assert linear_schedule(1.0, 0.1, 1_000, t) == pytest.approx(eps, abs=1e-9), t
    assert linear_schedule(0.4, 1.0, 200, 50) == pytest.approx(0.55)  # it may also rise
    assert linear_schedule(1.0, 0.1, 0, 0) == 0.1  # no annealing: the end value at once


class EpsilonProbe(L.Callback):
    """Records (env frames, exploring epsilon) after every training step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: DQN, outputs, batch, batch_idx: int) -> None:
        self.seen.append((module.frames, module.policy.eps.item()))


def test_exploration_follows_its_schedule_and_evaluation_uses_eps_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    model = DQN("CartPole-v1", hidden=[16], eps_start=1.0, eps_end=0.1, eps_frames=600, eps_eval=0.001)
    evaluations = []  # (epsilon evaluation acted with, exploring epsilon at that time, mean return)
    real = base.evaluate_episodes

    def spy(env, policy):
        returns = real(env, policy)
        evaluations.append((policy.eps.item(), model.policy.eps.item(), returns.mean().item()))
        return returns

    monkeypatch.setattr(base, "evaluate_episodes", spy)
    probe = EpsilonProbe()
    _fit(model, probe, eval_every=160)
    assert model.frames == 640
    seen = dict(probe.seen)  # by hand: 1 - 0.9 * frames / 600 = 1 - 0.0015 * frames up to 600 frames, then 0.1
    for frames, eps in [(288, 0.568), (320, 0.52), (384, 0.424), (480, 0.28), (576, 0.136), (608, 0.1), (640, 0.1)]:
        assert seen[frames] == pytest.approx(eps, abs=1e-6), (frames, seen[frames])
    assert min(seen) == 288  # the first update comes with the first collection after 256 warmup frames
    assert all(0.1 - 1e-6 <= eps <= 0.568 + 1e-6 for _, eps in probe.seen)
    assert len(evaluations) == 2  # every 160 frames after the 256 warmup frames: at 416 and 576 frames
    assert all(acted == pytest.approx(0.001) for acted, _, _ in evaluations)
    assert [exploring for _, exploring, _ in evaluations] == pytest.approx([0.376, 0.136])  # not the exploring one
    assert model.best_returns[0].item() == max(mean for _, _, mean in evaluations)  # the best of the greedy evaluations


class TargetMaskProbe(L.Callback):
    """Checks, at the end of each fit's training (before the next pruning), that both nets obey the masks."""

    def __init__(self, pruning: PruningCallback) -> None:
        self.pruning = pruning
        self.checked = 0

    def on_train_end(self, trainer: L.Trainer, model: DQN) -> None:
        online = dict(model.named_parameters())
        # the target copy of q_net.<layer>.weight is module.0.module.<layer>.weight in TorchRL's QValueActor layout
        targets = model.loss_module.target_value_network_params.flatten_keys(".")
        for name, mask in self.pruning.masks.items():
            target = targets["module.0.module." + name.removeprefix("q_net.")]
            assert torch.all(online[name][~mask] == 0) and torch.all(target[~mask] == 0)
            assert not torch.equal(target, online[name])  # a separate copy: 48 updates per fit, last sync before
            self.checked += 1


def test_target_network_stays_masked_after_pruning() -> None:
    model = DQN("CartPole-v1", hidden=[32, 32], target_update_interval=10)
    pruning = PruningCallback(amount=0.5, seed=0)
    probe = TargetMaskProbe(pruning)
    for _ in range(3):  # levels 0 (dense), 1 and 2 (pruned): the target syncs at the start and every ~10 updates
        _fit(model, probe, pruning)
    assert pruning.level == 3 and probe.checked == 3 * 3


def test_minatar_cnn_q_network_is_pruned_like_an_mlp() -> None:
    model = DQN("MinAtar/Breakout-v1", hidden=[32, 16], network={"arch": "minatar_cnn"})
    conv = model.q_net[0].layers[0]
    assert isinstance(conv, torch.nn.Conv2d) and (conv.in_channels, conv.out_channels) == (4, 16)
    L.seed_everything(0)
    dm = ReplayDataModule("MinAtar/Breakout-v1", num_envs=4, collect_steps=8, total_frames=640, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=640, eval_episodes=2)
    pruning = PruningCallback(amount=0.5, seed=0)
    for _ in range(2):
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval,
                  callbacks=[pruning]).fit(model, dm)
    assert "q_net.0.layers.0.weight" in pruning.masks  # the conv filters are prunable weights too
    assert torch.all(conv.weight[~pruning.masks["q_net.0.layers.0.weight"]] == 0)
    kept = sum(int(m.sum()) for m in pruning.masks.values()) / sum(m.numel() for m in pruning.masks.values())
    assert kept == pytest.approx(0.25, abs=1e-3)


def _random_walker_return(env_id: str, episodes: int, seed: int, **env_kwargs) -> float:
    from lth.envs import make_env
    from lth.rl.evaluation import evaluate_episodes

    env = make_env(env_id, episodes, seed=seed, **env_kwargs)
    walker = EpsilonGreedyActing(torch.nn.Sequential(torch.nn.Flatten(-3, -1), torch.nn.LazyLinear(4)), 4, eps=1.0)
    return evaluate_episodes(env, walker).mean().item()


def test_dqn_collects_clearly_more_mazegrid_reward_than_a_random_walker() -> None:
    """The short learning test of the default run: 60k frames of MazeGrid (object maps), seed 0."""
    L.seed_everything(0)
    dm = ReplayDataModule("lth/MazeGrid-v0", num_envs=16, collect_steps=4, total_frames=60_000,
                          buffer_size=60_000, batch_size=64, replay_ratio=4, warmup_frames=5_000, eval_every=10_000,
                          eval_episodes=10, seed=0)
    model = DQN("lth/MazeGrid-v0", hidden=[256, 256], lr=5e-4, target_update_interval=250, eps_end=0.05,
                eps_frames=30_000)
    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval).fit(model, dm)
    random_walker = _random_walker_return("lth/MazeGrid-v0", 10, evaluation_seed(0))
    assert random_walker < 2.0
    assert model.best_returns[0].item() >= random_walker + 3.0


@pytest.mark.slow
def test_dqn_solves_cartpole_within_100k_frames_for_3_of_5_seeds() -> None:
    """``configs/cartpole/dqn.yaml`` as shipped, five seeds."""
    config = yaml.safe_load((CONFIGS / "cartpole" / "dqn.yaml").read_text())
    solved = []
    for seed in range(5):
        L.seed_everything(seed)
        dm = ReplayDataModule(**{**config["data"]["init_args"], "seed": seed})
        model = DQN(env_id=dm.hparams.env_id, **config["model"]["init_args"])
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, num_sanity_val_steps=0,
                  val_check_interval=dm.eval_interval).fit(model, dm)
        solved.append(model.best_returns[0].item() >= 475)
    assert sum(solved) >= 3, solved
