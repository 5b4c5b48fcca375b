"""Populations: K agents trained as one batched network are K independent agents.

Each member's update, evaluation and data equal those of an ordinary agent holding its weights and seeds.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from lth.datamodules.envs import member_copy_seeds
from lth.envs import make_env
from lth.modules import PPO, AgentModule
from lth.rl.batched import member_tensors, write_member
from lth.rl.evaluation import evaluate_episodes

K, COPIES, STEPS = 3, 4, 16


def solo_agents(cls: type[AgentModule], count: int, **hparams) -> list[AgentModule]:
    """``count`` ordinary agents (populations of one) of ``cls``, agent k built under seed 100 + k."""
    agents = []
    for k in range(count):
        torch.manual_seed(100 + k)
        agents.append(cls(**hparams))
    return agents


def population_of(agents: list[AgentModule], **hparams) -> AgentModule:
    """A population of the agents' class whose member k holds agent k's weights."""
    population = type(agents[0])(**hparams, members=len(agents))
    params = dict(population.named_parameters())
    for k, agent in enumerate(agents):
        write_member(params, k, solo_state(agent))
    return population


def solo_state(agent: AgentModule) -> dict[str, torch.Tensor]:
    """An ordinary agent's parameters (its one member's) in solo shapes."""
    return member_tensors(dict(agent.named_parameters()), 0)


def _rollout(generator: torch.Generator, obs_dim: int = 4) -> TensorDict:
    """A synthetic CartPole-shaped rollout ``[copies, steps]`` (float64), as a collector returns it."""
    shape = (COPIES, STEPS)
    done = torch.rand(*shape, 1, generator=generator) < 0.1
    return TensorDict({
        "observation": torch.randn(*shape, obs_dim, generator=generator, dtype=torch.float64),
        "action": torch.randint(2, shape, generator=generator),
        "action_log_prob": -torch.rand(shape, generator=generator, dtype=torch.float64),
        "next": {
            "observation": torch.randn(*shape, obs_dim, generator=generator, dtype=torch.float64),
            "reward": torch.randn(*shape, 1, generator=generator, dtype=torch.float64),
            "done": done, "terminated": done, "truncated": torch.zeros_like(done),
        },
    }, batch_size=shape)


class OneBatch:
    """A loader of one fixed batch."""

    def __init__(self, batch: TensorDict) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


def train_on(agent: AgentModule, batch: TensorDict, seeds: list[int]) -> None:
    """One training step of ``agent`` on ``batch``, its members acting and shuffling with generators of ``seeds``."""
    agent.seed_members(seeds)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(agent, train_dataloaders=OneBatch(batch))


def test_a_ppo_population_update_equals_each_members_solo_update_on_its_slice() -> None:
    hparams = {"max_grad_norm": 0.5, "lr": 3e-3}  # clipping active: per member, not over the population
    solos = [agent.double() for agent in solo_agents(PPO, K, **hparams)]
    population = population_of(solos, **hparams).double()
    before = {n: p.detach().clone() for n, p in population.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    rollouts = [_rollout(generator) for _ in range(K)]
    batch = torch.stack(rollouts).reshape(K * COPIES, STEPS)  # member-major env copies, time last
    train_on(population, batch, seeds=[7, 8, 9])
    for k, (solo, rollout) in enumerate(zip(solos, rollouts, strict=True)):
        train_on(solo, rollout, seeds=[7 + k])
        member = member_tensors(dict(population.named_parameters()), k)
        for name, value in solo_state(solo).items():
            assert torch.allclose(member[name], value, atol=1e-9, rtol=0), name
        moved = max((member[n] - before[n][k]).abs().max().item() for n in member)
        assert moved > 1e-3  # the update did something


def _continuous_rollout(generator: torch.Generator) -> TensorDict:
    """A synthetic Hopper-shaped rollout ``[copies, steps]``: 15 observations, 3 actions inside (-1, 1)."""
    rollout = _rollout(generator, obs_dim=15).apply(lambda t: t.float() if t.is_floating_point() else t)
    rollout.set("action", torch.rand(COPIES, STEPS, 3, generator=generator) * 1.8 - 0.9)
    return rollout


def test_a_continuous_ppo_members_update_depends_on_its_own_seed_and_data_only() -> None:
    """The tanh-Gaussian has no closed-form entropy, so TorchRL's loss samples it: member 0's update (entropy bonus
    on) is the same bit for bit whatever its mate's seed, data and weights, and a mate that is its copy (same
    weights, data and seed) ends the update where it does."""
    hparams = {"env_id": "HopperBulletEnv-v0", "actor_hidden": [16], "critic_hidden": [16], "entropy_coef": 0.01}
    solos = solo_agents(PPO, 3, **hparams)
    generator = torch.Generator().manual_seed(0)
    mine, theirs = _continuous_rollout(generator), _continuous_rollout(generator)

    def member_0_after(mate: int, mate_data: TensorDict, mate_seed: int) -> tuple[dict, dict]:
        population = population_of([solos[0], solos[mate]], **hparams)
        train_on(population, torch.stack([mine, mate_data]).reshape(2 * COPIES, STEPS), seeds=[7, mate_seed])
        params = dict(population.named_parameters())
        return member_tensors(params, 0), member_tensors(params, 1)

    first, _ = member_0_after(1, theirs, 8)
    second, _ = member_0_after(2, mine, 9)
    twin, copy = member_0_after(0, mine, 7)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
        assert torch.equal(value, twin[name]), name
        torch.testing.assert_close(copy[name], value, atol=1e-6, rtol=0)  # scalar tails round the last member apart
    assert any(not torch.equal(value, solo_state(solos[0])[name]) for name, value in first.items())


def test_evaluating_a_population_gives_each_members_solo_returns() -> None:
    solos = solo_agents(PPO, K)
    population = population_of(solos)
    episodes, seeds = 3, [0, 1, 2]
    solo_returns = []
    for agent, seed in zip(solos, seeds, strict=True):
        env = make_env("CartPole-v1", episodes, seed + 10_000)
        solo_returns.append(evaluate_episodes(env, agent.eval_policy))
    env = make_env("CartPole-v1", K * episodes, member_copy_seeds([s + 10_000 for s in seeds], episodes))
    together = evaluate_episodes(env, population.eval_policy).reshape(K, episodes)
    assert torch.equal(together, torch.stack(solo_returns))
    assert len({tuple(r.tolist()) for r in solo_returns}) > 1  # the members are different agents


def test_a_population_needs_data_for_as_many_members() -> None:
    from lth.datamodules import OnPolicyDataModule
    from lth.errors import ConfigError

    population = PPO(members=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="2 member"):
        trainer.fit(population, OnPolicyDataModule(seed=[0, 1, 2], total_frames=512))


class _PoisonMember(L.Callback):
    """Sets member ``k``'s actor output bias to NaN before training batch ``at`` (a member that diverges mid-fit)."""

    def __init__(self, k: int, at: int) -> None:
        self.k, self.at = k, at
        self.after: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at:
            with torch.no_grad():
                pl_module.actor.module[0].module[-1].bias[self.k].fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at:
            self.after = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def test_a_member_that_diverges_mid_fit_freezes_and_the_others_train_on() -> None:
    from lth.datamodules import OnPolicyDataModule

    population = PPO(members=2, actor_hidden=[16], critic_hidden=[16])
    population.seed_members([0, 1])
    poison = _PoisonMember(k=1, at=2)
    data = OnPolicyDataModule(seed=[0, 1], num_envs=2, rollout_steps=32, total_frames=64 * 6, eval_every=64 * 3,
                              eval_episodes=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        callbacks=[poison], val_check_interval=data.eval_interval)
    with pytest.warns(UserWarning, match="member 1: training diverged"):
        trainer.fit(population, data)
    assert population.member_diverged_at == [None, 192]  # its frames once batch 2 (the third) was collected
    assert population.frames == 64 * 6  # the fit went on for member 0
    final = dict(population.named_parameters())
    for name, value in poison.after.items():
        assert torch.isfinite(final[name][1]).all()  # back at its last good weights, not the NaN it was given
        assert torch.equal(final[name][1], value[1]), name  # frozen from then on
    assert any(not torch.equal(final[n][0], v[0]) for n, v in poison.after.items())  # member 0 kept learning
    assert torch.isfinite(population.best_returns[0])


@pytest.mark.slow
def test_a_population_of_five_cartpole_ppo_agents_solves_it_in_four_of_five_within_80k_frames() -> None:
    from lth.datamodules import OnPolicyDataModule
    from lth.study.population import population_model

    seeds = [0, 1, 2, 3, 4]
    population = population_model(PPO(gae_lambda=0.8), seeds)  # configs/cartpole/ppo.yaml, paper Table 3
    population.seed_members(seeds)
    data = OnPolicyDataModule(seed=seeds, total_frames=80_000)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, val_check_interval=data.eval_interval)
    trainer.fit(population, data)
    returns = population.best_returns.tolist()
    assert population.frames >= 80_000
    assert sum(r >= 475 for r in returns) >= 4, returns
