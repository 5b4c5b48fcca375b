"""Distillation populations: K students trained as one batched network on the expert's one data stream are K
independent students, each updated as it would be alone on that stream."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from tensordict import TensorDict

from lth.datamodules import ExpertDataModule
from lth.modules import PPO, Distill
from lth.modules.distill import categorical_kl, gaussian_kl, q_huber
from lth.rl.batched import member_tensors
from tests.test_population import population_of, solo_agents, solo_state, train_on

K, COPIES, STEPS = 3, 4, 16


def _expert_rollout(key: str, generator: torch.Generator, obs_dim: int = 4, actions: int = 2) -> TensorDict:
    """A synthetic CartPole-shaped expert rollout ``[copies, steps]`` (float64) with the expert's outputs."""
    shape = (COPIES, STEPS)
    return TensorDict({
        "observation": torch.randn(*shape, obs_dim, generator=generator, dtype=torch.float64),
        "action": torch.randint(actions, shape, generator=generator),
        key: 2 * torch.randn(*shape, actions, generator=generator, dtype=torch.float64),
    }, batch_size=shape)


@pytest.mark.parametrize("imitate, key", [("policy", "logits"), ("q_values", "action_value")])
def test_a_distill_population_update_equals_each_members_solo_update_on_the_shared_batch(imitate, key) -> None:
    hparams = {"imitate": imitate, "hidden": [16, 16], "lr": 3e-3, "max_grad_norm": 0.05}  # clipping active
    solos = [student.double() for student in solo_agents(Distill, K, **hparams)]
    population = population_of(solos, **hparams).double()
    before = {n: p.detach().clone() for n, p in population.named_parameters()}
    batch = _expert_rollout(key, torch.Generator().manual_seed(0))
    train_on(population, batch.clone(), seeds=[7, 8, 9])
    assert population.frames == COPIES * STEPS  # every member saw the shared frames once
    for k, solo in enumerate(solos):
        train_on(solo, batch.clone(), seeds=[7 + k])
        member = member_tensors(dict(population.named_parameters()), k)
        for name, value in solo_state(solo).items():
            assert torch.allclose(member[name], value, atol=1e-9, rtol=0), name
        moved = max((member[n] - before[n][k]).abs().max().item() for n in member)
        assert moved > 1e-3  # the update did something
    after = member_tensors(dict(population.named_parameters()), 0)
    other = member_tensors(dict(population.named_parameters()), 1)
    assert not all(torch.allclose(after[n], other[n]) for n in after)  # the members stay different students


def test_member_losses_are_each_members_mean_over_its_own_frames() -> None:
    g = torch.Generator().manual_seed(3)
    expert, student = torch.randn(K, 8, 3, generator=g), torch.randn(K, 8, 3, generator=g)
    # member k's loss is a population of one's on its own frames
    torch.testing.assert_close(categorical_kl(expert, student),
                               torch.cat([categorical_kl(expert[k:k + 1], student[k:k + 1]) for k in range(K)]))
    loc, scale = torch.randn(K, 8, 2, generator=g), 0.1 + torch.rand(K, 8, 2, generator=g)
    loc2, scale2 = torch.randn(K, 8, 2, generator=g), 0.1 + torch.rand(K, 8, 2, generator=g)
    torch.testing.assert_close(gaussian_kl(loc, scale, loc2, scale2),
                               torch.cat([gaussian_kl(loc[k:k + 1], scale[k:k + 1], loc2[k:k + 1], scale2[k:k + 1])
                                          for k in range(K)]))
    torch.testing.assert_close(q_huber(expert, student, 0.5),
                               torch.cat([q_huber(expert[k:k + 1], student[k:k + 1], 0.5) for k in range(K)]))
    # the mean over each member's own frames, not over the population's
    torch.testing.assert_close(q_huber(expert, expert + 0.1 * torch.arange(K).reshape(K, 1, 1), 0.5),
                               0.5 * (0.1 * torch.arange(K)) ** 2)


class _Recorder(Logger):
    """A logger that keeps every metric it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))


def test_a_distill_population_fits_on_one_shared_expert_stream_and_scores_each_member() -> None:
    torch.manual_seed(0)
    expert = PPO("CartPole-v1", actor_hidden=[16], critic_hidden=[16])
    dm = ExpertDataModule("in-memory", num_envs=2, rollout_steps=64, total_frames=512, eval_every=256,
                          eval_episodes=2, seed=[0, 1], loader=lambda reference, uri: expert)
    assert dm.members == 2
    probe = next(iter(dm.train_dataloader()))
    assert probe.shape == (2, 64)  # the expert's num_envs copies, shared by all members
    student = Distill("CartPole-v1", hidden=[16], lr=3e-3, members=2)
    student.seed_members([0, 1])
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    recorder = _Recorder()
    trainer = L.Trainer(max_epochs=1, num_sanity_val_steps=0, logger=recorder, log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        val_check_interval=dm.eval_interval)
    trainer.fit(student, dm)
    assert student.frames == 512  # per member: the shared stream's frames, counted once each
    assert student.best_returns.shape == (2,)
    assert all(math.isfinite(r) and r > 0 for r in student.best_returns.tolist())
    for name, value in student.named_parameters():
        assert not torch.equal(value.detach()[0], before[name][0]) and not torch.equal(value.detach()[1], before[name][1])
    logged = {name for metrics in recorder.metrics for name in metrics}
    assert {"train/distillation_loss/0", "train/distillation_loss/1", "eval/best_return/0",
            "eval/best_return/1"} <= logged
