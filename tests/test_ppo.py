"""PPO: evaluation bookkeeping, both action heads training, and (fixed seed) real learning on CartPole."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lth.modules.base as base
from lth.datamodules import OnPolicyDataModule
from lth.envs import make_env
from lth.evaluation import evaluate_episodes
from lth.modules import PPO


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
    assert model.best_return == 32.0


def test_frames_and_best_return_survive_a_checkpoint() -> None:
    model = PPO("CartPole-v1")
    model.frames, model.best_return = 4096, 123.0
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    restored = PPO("CartPole-v1")
    restored.on_load_checkpoint(checkpoint)
    assert (restored.frames, restored.best_return) == (4096, 123.0)


def test_best_checkpoint_reproduces_the_best_return(tmp_path) -> None:
    best = ModelCheckpoint(dirpath=tmp_path, monitor="eval/return", mode="max")
    model, trainer = _fit("CartPole-v1", 6_144, seed=1, callbacks=[best], eval_every=1_024, eval_episodes=3)
    assert model.frames == 6_144
    assert best.best_model_score.item() == pytest.approx(model.best_return)
    reloaded = PPO.load_from_checkpoint(best.best_model_path)
    eval_env = make_env("CartPole-v1", 3, seed=trainer.datamodule.eval_seed)
    assert evaluate_episodes(eval_env, reloaded.policy).mean().item() == pytest.approx(model.best_return)


def test_continuous_actions_train_on_pybullet() -> None:
    model = PPO("HopperBulletEnv-v0", actor_hidden=[32], critic_hidden=[32])
    before = [p.detach().clone() for p in model.actor.parameters()]
    L.seed_everything(0)
    dm = OnPolicyDataModule("HopperBulletEnv-v0", num_envs=2, rollout_steps=64, total_frames=256,
                            eval_every=256, eval_episodes=1)
    _trainer(val_check_interval=dm.eval_interval, limit_val_batches=0).fit(model, dm)
    assert model.frames == 256
    assert all(not torch.equal(a, b) for a, b in zip(before, model.actor.parameters()))


def _solves_cartpole(seed: int) -> float:
    model, _ = _fit("CartPole-v1", 80_000, seed=seed, gae_lambda=0.8)
    return model.best_return


def test_ppo_solves_cartpole_within_80k_frames() -> None:
    assert _solves_cartpole(seed=0) >= 475


@pytest.mark.slow
def test_ppo_solves_cartpole_for_four_of_five_seeds() -> None:
    returns = [_solves_cartpole(seed) for seed in range(5)]
    assert sum(r >= 475 for r in returns) >= 4, returns
