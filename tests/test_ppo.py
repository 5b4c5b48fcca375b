"""PPO: evaluation bookkeeping, both action heads training, and (fixed seed) real learning on CartPole."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lth.modules.base as base
from lth.callbacks.seeding import evaluation_seed
from lth.datamodules import OnPolicyDataModule
from lth.envs import make_env
from lth.modules import PPO
from lth.rl.evaluation import evaluate_episodes


def _trainer(**kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False)
    return L.Trainer(**{**defaults, **kwargs})


def _fit(env_id: str, frames: int, seed: int, callbacks=(), eval_every: int = 5_000, eval_episodes: int = 10,
         **model_kwargs) -> tuple[PPO, L.Trainer]:
    L.seed_everything(seed)
    dm = OnPolicyDataModule(env_id, num_envs=4, rollout_steps=128, total_frames=frames, eval_every=eval_every,
                            eval_episodes=eval_episodes, seed=seed)
    model = PPO(env_id, **model_kwargs)
    trainer = _trainer(val_check_interval=dm.eval_interval, callbacks=list(callbacks),
                       enable_checkpointing=bool(callbacks))
    trainer.fit(model, dm)
    return model, trainer


def test_best_return_is_the_running_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    model = PPO("CartPole-v1")
    scores = iter([torch.tensor([10.0, 12.0]), torch.tensor([30.0, 34.0]), torch.tensor([20.0, 20.0])])
    monkeypatch.setattr(base, "evaluate_episodes", lambda env, policy: next(scores))
    for _ in range(3):
        model.validation_step(None, 0)
    assert model.best_returns[0].item() == 32.0


def test_frames_and_best_return_survive_a_checkpoint() -> None:
    model = PPO("CartPole-v1")
    model.frames, model.best_returns = 4096, torch.tensor([123.0])
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    restored = PPO("CartPole-v1")
    restored.on_load_checkpoint(checkpoint)
    assert (restored.frames, restored.best_returns.tolist()) == (4096, [123.0])


def test_best_checkpoint_reproduces_the_best_return(tmp_path) -> None:
    best = ModelCheckpoint(dirpath=tmp_path, monitor="eval/return", mode="max")
    model, _ = _fit("CartPole-v1", 6_144, seed=1, callbacks=[best], eval_every=1_024, eval_episodes=3)
    assert model.frames == 6_144
    assert best.best_model_score.item() == pytest.approx(model.best_returns[0].item())
    reloaded = PPO.load_from_checkpoint(best.best_model_path)
    eval_env = make_env("CartPole-v1", 3, seed=evaluation_seed(1))
    assert evaluate_episodes(eval_env, reloaded.policy).mean().item() == pytest.approx(model.best_returns[0].item())


class FirstRollout(L.Callback):
    """Keeps the first rollout and the weights that collected it, before the update changes either."""

    def on_train_batch_start(self, trainer: L.Trainer, module: PPO, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.batch = batch.clone()
            self.state = copy.deepcopy(module.state_dict())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "HopperBulletEnv-v0"])  # categorical and tanh-Gaussian actions
def test_one_update_moves_the_policy_towards_the_actions_with_positive_advantage(env_id: str) -> None:
    """One training step (one rollout, 4 epochs x 4 minibatches) raises the clipped surrogate of its own rollout:
    log-probabilities of actions with positive advantage go up, those with negative advantage go down."""
    L.seed_everything(0)
    model = PPO(env_id, actor_hidden=[32], critic_hidden=[32], lr=3e-3, entropy_coef=0.0)
    first = FirstRollout()
    dm = OnPolicyDataModule(env_id, num_envs=2, rollout_steps=64, total_frames=128, eval_every=128,
                            eval_episodes=1, seed=0)
    _trainer(val_check_interval=dm.eval_interval, limit_val_batches=0, callbacks=[first]).fit(model, dm)
    assert model.frames == 128
    before = PPO(env_id, actor_hidden=[32], critic_hidden=[32], lr=3e-3, entropy_coef=0.0)
    before.load_state_dict(first.state)
    batch = before.estimate_advantage(first.batch)  # GAE with the critic the update started from, as it computed it
    with torch.no_grad():
        advantage = batch["advantage"].squeeze(-1)
        old, new = before.actor.log_prob(batch.clone()), model.actor.log_prob(batch.clone())
    torch.testing.assert_close(old, batch["action_log_prob"], rtol=1e-4, atol=1e-4)  # the collecting weights
    assert (advantage > 0).any() and (advantage < 0).any()
    moved = new - old
    assert moved[advantage > 0].mean() > 0.005 and moved[advantage < 0].mean() < -0.005
    assert ((moved.exp() * advantage).mean() - advantage.mean()).item() > 0.005  # the surrogate went up


def _solves_cartpole(seed: int) -> float:
    model, _ = _fit("CartPole-v1", 80_000, seed=seed, gae_lambda=0.8)
    return model.best_returns[0].item()


def test_ppo_solves_cartpole_within_80k_frames() -> None:
    assert _solves_cartpole(seed=0) >= 475


@pytest.mark.slow
def test_ppo_solves_cartpole_for_four_of_five_seeds() -> None:
    returns = [_solves_cartpole(seed) for seed in range(5)]
    assert sum(r >= 475 for r in returns) >= 4, returns
