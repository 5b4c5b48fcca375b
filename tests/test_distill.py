"""Distillation: the three losses, a frozen expert that alone generates the data, and a student that learns."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tensordict import TensorDict
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from lth.datamodules import ExpertDataModule, OnPolicyDataModule
from lth.errors import ConfigError
from lth.modules import PPO, Distill
from lth.modules.distill import categorical_kl, gaussian_kl, q_huber
from lth.store.experts import load_agent


def _trainer(**kwargs) -> L.Trainer:
    defaults = dict(max_epochs=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False)
    return L.Trainer(**{**defaults, **kwargs})


def test_each_loss_is_zero_for_an_identical_student_and_positive_otherwise() -> None:
    # one member (the leading dim) of 8 frames
    logits, other = torch.randn(1, 8, 3), torch.randn(1, 8, 3)
    assert categorical_kl(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert categorical_kl(logits, other).item() > 1e-3
    assert categorical_kl(logits, logits + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # same policy, shifted logits
    loc, scale = torch.randn(1, 8, 2), torch.rand(1, 8, 2) + 0.1
    assert gaussian_kl(loc, scale, loc.clone(), scale.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert gaussian_kl(loc, scale, loc + 0.5, scale).item() > 1e-3
    assert gaussian_kl(loc, scale, loc, scale * 2).item() > 1e-3
    q = torch.randn(1, 8, 4)
    assert q_huber(q, q.clone()).item() == 0.0
    assert q_huber(q, q + 0.1).item() > 0


def test_kl_losses_are_kl_from_expert_to_student_as_torch_computes_it() -> None:
    """Independent references, direction included: KL(expert || student), never KL(student || expert)."""
    # by hand: KL([.5, .5] || [.9, .1]) = .5 ln(.5/.9) + .5 ln(.5/.1) = 0.5108; the reverse would be 0.3681
    assert categorical_kl(torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.9, 0.1]]).log()).item() == \
        pytest.approx(0.5108256, abs=1e-5)
    # by hand: KL(N(0, 1) || N(1, 2)) = ln 2 + (1 + 1) / 8 - 1/2 = 0.4431; the reverse would be 1.3069
    one = torch.ones(1, 1)
    assert gaussian_kl(0 * one, one, one, 2 * one).item() == pytest.approx(0.4431472, abs=1e-5)

    g = torch.Generator().manual_seed(0)
    expert, student = 2 * torch.randn(16, 5, generator=g), 2 * torch.randn(16, 5, generator=g)
    forward = kl_divergence(Categorical(logits=expert), Categorical(logits=student)).mean()
    backward = kl_divergence(Categorical(logits=student), Categorical(logits=expert)).mean()
    assert abs(forward - backward) > 0.1  # asymmetric enough to tell the directions apart
    torch.testing.assert_close(categorical_kl(expert[None], student[None]), forward[None])  # one member

    loc, scale = torch.randn(16, 3, generator=g), 0.2 + torch.rand(16, 3, generator=g)
    loc2, scale2 = torch.randn(16, 3, generator=g), 0.2 + 2 * torch.rand(16, 3, generator=g)
    diagonal = lambda m, s: Independent(Normal(m, s), 1)  # noqa: E731 - KL summed over the action dims
    forward = kl_divergence(diagonal(loc, scale), diagonal(loc2, scale2)).mean()
    backward = kl_divergence(diagonal(loc2, scale2), diagonal(loc, scale)).mean()
    assert abs(forward - backward) > 0.1
    torch.testing.assert_close(gaussian_kl(loc[None], scale[None], loc2[None], scale2[None]), forward[None])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_distillation_loss_is_the_kl_from_the_experts_outputs_to_the_students_policy(env_id: str) -> None:
    student = Distill(env_id, hidden=[16])
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(1, 32, 4 if env_id == "CartPole-v1" else 3, generator=g)  # one member's 32 frames
    with torch.no_grad():
        own = student.student(TensorDict(observation=obs, batch_size=[1, 32]))
    if env_id == "CartPole-v1":
        expert_logits = 3 * torch.randn(1, 32, 2, generator=g)
        batch = TensorDict(observation=obs, logits=expert_logits, batch_size=[1, 32])
        expert, mine = Categorical(logits=expert_logits), Categorical(logits=own["logits"])
    else:
        loc, scale = torch.randn(1, 32, 1, generator=g), 0.1 + 0.3 * torch.rand(1, 32, 1, generator=g)
        batch = TensorDict(observation=obs, loc=loc, scale=scale, batch_size=[1, 32])
        expert, mine = Independent(Normal(loc, scale), 1), Independent(Normal(own["loc"], own["scale"]), 1)
    forward, backward = kl_divergence(expert, mine).mean(), kl_divergence(mine, expert).mean()
    assert abs(forward - backward) > 0.1
    with torch.no_grad():
        torch.testing.assert_close(student.distillation_loss(batch)[0], forward)


def _expert_checkpoint(tmp_path: Path, frames: int, seed: int = 0) -> tuple[str, float]:
    """Train a PPO expert on CartPole for ``frames`` frames; return its best checkpoint and score."""
    L.seed_everything(seed)
    dm = OnPolicyDataModule("CartPole-v1", total_frames=frames, eval_every=2_048, eval_episodes=5, seed=seed)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="eval/return", mode="max")
    model = PPO("CartPole-v1", gae_lambda=0.8)
    _trainer(callbacks=[best], enable_checkpointing=True, val_check_interval=dm.eval_interval).fit(model, dm)
    return best.best_model_path, float(best.best_model_score)


def test_the_expert_generates_the_data_and_stays_frozen(tmp_path: Path) -> None:
    path, _ = _expert_checkpoint(tmp_path, 1_024)
    dm = ExpertDataModule(path, total_frames=1_024, eval_every=1_024, eval_episodes=2)
    expert = dm.expert
    before = {n: p.detach().clone() for n, p in expert.named_parameters()}
    student = Distill("CartPole-v1", hidden=[16])
    _trainer(val_check_interval=dm.eval_interval).fit(student, dm)
    assert student.frames == 1_024
    for name, param in expert.named_parameters():
        assert torch.equal(param, before[name]) and param.grad is None and not param.requires_grad

    rollout = next(iter(dm.train_dataloader()))
    obs = rollout["observation"]
    with torch.no_grad():
        expert_logits = expert.actor.module[0].module(obs[None])[0]  # populations of one
        student_logits = student.student.module[0].module(obs[None])[0]
    torch.testing.assert_close(rollout["logits"], expert_logits)  # the expert acted and wrote its outputs
    assert not torch.allclose(rollout["logits"], student_logits, atol=1e-3)


def test_a_missing_or_mismatched_expert_is_a_clear_error(tmp_path: Path, in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="neither a checkpoint file nor an MLflow run"):
        load_agent("no-such-run")
    path, _ = _expert_checkpoint(tmp_path, 512)
    dm = ExpertDataModule(path, total_frames=512, eval_every=512, eval_episodes=2)
    student = Distill("CartPole-v1", imitate="q_values", hidden=[16])
    with pytest.raises(ConfigError, match="imitate='policy'"):
        _trainer(val_check_interval=dm.eval_interval).fit(student, dm)


def test_a_student_distilled_from_a_fresh_expert_solves_cartpole_within_10k_steps(tmp_path: Path) -> None:
    """Paper Table 2: a 128,128 student, lr 1e-3, 10k env steps of expert data from 4 workers (seed 0)."""
    path, expert_score = _expert_checkpoint(tmp_path, 80_000)
    assert expert_score >= 475
    L.seed_everything(0)
    dm = ExpertDataModule(path, total_frames=10_000, eval_every=1_000, eval_episodes=10, seed=0)
    student = Distill("CartPole-v1", hidden=[128, 128], lr=1e-3)
    _trainer(val_check_interval=dm.eval_interval).fit(student, dm)
    assert student.frames <= 10_240 and student.best_returns[0].item() >= 475


def _untrained_expert(agent: L.LightningModule, path: Path) -> str:
    """An agent checkpoint as Lightning writes it, without training (the expert's quality does not matter here)."""
    checkpoint = {"state_dict": agent.state_dict(), "hyper_parameters": dict(agent.hparams),
                  "pytorch-lightning_version": L.__version__}
    agent.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("env_id, expert_kind, imitate, key", [
    ("Pendulum-v1", "ppo", "policy", "loc"),  # tanh-Gaussian expert: Gaussian KL
    ("CartPole-v1", "dqn", "q_values", "action_value"),  # value expert: Huber on Q-values
])
def test_students_of_gaussian_and_value_experts_move_towards_them(tmp_path: Path, env_id, expert_kind, imitate,
                                                                  key) -> None:
    from lth.modules import DQN

    expert = PPO(env_id, actor_hidden=[16], critic_hidden=[16]) if expert_kind == "ppo" else DQN(env_id, hidden=[16])
    dm = ExpertDataModule(_untrained_expert(expert, tmp_path / "expert.ckpt"), env_id=env_id, total_frames=2_048,
                          expert_eps=0.1, eval_every=2_048, eval_episodes=1)
    probe = next(iter(dm.train_dataloader()))
    assert key in probe.keys()
    student = Distill(env_id, imitate=imitate, hidden=[32], lr=3e-3)
    before = student.distillation_loss(probe.reshape(1, -1))[0].item()  # a population of one
    _trainer(val_check_interval=dm.eval_interval).fit(student, dm)
    assert student.distillation_loss(probe.reshape(1, -1))[0].item() < 0.5 * before
