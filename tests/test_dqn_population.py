"""DQN populations with prioritized replay: K agents trained as one batched Q-network are K independent agents.

Each member's update equals an ordinary agent's on its own minibatch, samples only its own transitions with its
own priorities, and has its own best return; population env seeds reach every env (MazeGrid, MinAtar).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from tensordict import TensorDict

from lth.datamodules import ReplayDataModule
from lth.datamodules.envs import member_copy_seeds
from lth.datamodules.replay import ReplayStream
from lth.envs import make_env
from lth.modules import DQN
from lth.rl.batched import member_tensors, write_member
from tests.conftest import CONFIGS
from tests.test_population import solo_state

K, N = 3, 32  # members, transitions per member minibatch
NUM_ENVS, STEPS = 2, 8  # fake collector chunks: per member


def _member_batch(seed: int) -> TensorDict:
    """A CartPole-shaped float64 minibatch as a buffer samples it (``index`` 0..N-1, importance weights)."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(N, 1, generator=g) < 0.3
    return TensorDict({
        "observation": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "action": torch.randint(2, (N,), generator=g),
        "priority_weight": torch.rand(N, generator=g, dtype=torch.float64) + 0.1,
        "index": torch.arange(N),
        "next": {"observation": torch.randn(N, 4, generator=g, dtype=torch.float64),
                 "reward": torch.randn(N, 1, generator=g, dtype=torch.float64),
                 "done": terminated.clone(), "terminated": terminated},
    }, batch_size=[N])


def _buffer_holding(batch: TensorDict):
    """A prioritized buffer whose slots 0..N-1 hold ``batch``'s transitions (fresh priorities)."""
    dm = ReplayDataModule(buffer_size=64, batch_size=N, warmup_frames=N)
    buffer = dm.make_buffer()
    buffer.extend(batch.exclude("index", "priority_weight"))
    return buffer


class _Once:
    """A one-item replay stream: the fixed ``sample`` and the buffers the learner writes priorities to."""

    def __init__(self, sample: TensorDict, buffers: list) -> None:
        self.item = TensorDict({"sample": sample, "new_frames": torch.tensor(sample.numel())}, batch_size=[])
        self.buffers = buffers

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.item


def _step(agent: DQN, sample: TensorDict, buffers: list) -> None:
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
              ).fit(agent, train_dataloaders=_Once(sample, buffers))


def _stored(buffer, n: int = N) -> torch.Tensor:
    """The sampler's stored priorities (p + eps) ** alpha of slots 0..n-1."""
    tree = buffer.sampler._sum_tree
    return torch.tensor([tree[i] for i in range(n)])


def test_a_dqn_population_update_equals_each_members_solo_update_on_its_slice() -> None:
    hparams = {"hidden": [16, 16], "gamma": 0.9, "lr": 3e-3, "max_grad_norm": 0.5}  # clipping active: per member
    solos = []
    for k in range(K):
        torch.manual_seed(100 + k)
        solos.append(DQN(**hparams).double())
    population = DQN(**hparams, members=K).double()
    params = dict(population.named_parameters())
    for k, solo in enumerate(solos):
        write_member(params, k, solo_state(solo))
    before = {n: p.detach().clone() for n, p in population.named_parameters()}
    batches = [_member_batch(k) for k in range(K)]
    population_buffers = [_buffer_holding(b) for b in batches]
    fresh = _stored(population_buffers[0])
    _step(population, torch.stack(batches), population_buffers)
    for k, (solo, batch) in enumerate(zip(solos, batches, strict=True)):
        solo_buffer = _buffer_holding(batch)
        _step(solo, batch.clone().unsqueeze(0), [solo_buffer])  # a population of one: [1, batch]
        member = member_tensors(dict(population.named_parameters()), k)
        for name, value in solo_state(solo).items():
            torch.testing.assert_close(member[name], value, atol=1e-6, rtol=0, msg=name)
        assert max((member[n] - before[n][k]).abs().max().item() for n in member) > 1e-3  # the update did something
        # member k's new priorities went to member k's buffer, as the solo's went to its own
        torch.testing.assert_close(_stored(population_buffers[k]), _stored(solo_buffer), rtol=1e-5, atol=1e-7)
        assert not torch.allclose(_stored(solo_buffer), fresh)


def _member_chunks(n: int, members: int) -> list[TensorDict]:
    """``n`` fake member-major collector batches ``[members * NUM_ENVS, STEPS]``; observation = member * 10_000 +
    the member's running transition id, so every transition names its member."""
    out = []
    for c in range(n):
        ids = torch.arange(c * NUM_ENVS * STEPS, (c + 1) * NUM_ENVS * STEPS, dtype=torch.float32)
        obs = torch.stack([10_000 * k + ids for k in range(members)]).reshape(members * NUM_ENVS, STEPS, 1)
        flag = torch.zeros(members * NUM_ENVS, STEPS, 1, dtype=torch.bool)
        out.append(TensorDict({
            "observation": obs, "action": torch.zeros(members * NUM_ENVS, STEPS, dtype=torch.int64),
            "next": {"observation": obs + 1, "reward": torch.ones(members * NUM_ENVS, STEPS, 1), "done": flag,
                     "terminated": flag},
        }, batch_size=[members * NUM_ENVS, STEPS]))
    return out


def _replay_dm(chunks: int, seed) -> ReplayDataModule:
    return ReplayDataModule(num_envs=NUM_ENVS, collect_steps=STEPS, total_frames=chunks * NUM_ENVS * STEPS,
                            buffer_size=1024, batch_size=8, replay_ratio=4, warmup_frames=32, seed=seed)


def _priority(obs: torch.Tensor) -> torch.Tensor:
    """What a learner might write: large for every fifth transition of its member, small for the others."""
    return torch.where(obs.reshape(-1) % 5 == 0, torch.tensor(10.0), torch.tensor(0.1))


def test_each_member_samples_only_its_own_transitions_with_its_own_priorities() -> None:
    chunks = 12
    dm = _replay_dm(chunks, seed=[0, 1, 2])
    generators = [torch.Generator().manual_seed(50 + k) for k in range(K)]
    stream = ReplayStream(_member_chunks(chunks, K), [dm.make_buffer(g) for g in generators], dm)
    # each member's own solo stream: its own chunks, a buffer sampling with the same generator seed
    solo_dm = _replay_dm(chunks, seed=0)
    solos = []
    for k in range(K):
        own = [chunk[k * NUM_ENVS:(k + 1) * NUM_ENVS] for chunk in _member_chunks(chunks, K)]
        solos.append(ReplayStream(own, [solo_dm.make_buffer(torch.Generator().manual_seed(50 + k))], solo_dm))
    items = 0
    for item, *solo_items in zip(stream, *solos, strict=True):
        sample = item["sample"]
        assert sample.batch_size == torch.Size([K, 8])
        assert int(item["new_frames"]) == sum(int(s["new_frames"]) for s in solo_items)  # all members' frames
        for k, (buffer, solo_item) in enumerate(zip(stream.buffers, solo_items, strict=True)):
            obs = sample["observation"][k].reshape(-1)
            assert torch.all(obs // 10_000 == k)  # member k's transitions only ...
            torch.testing.assert_close(buffer[sample["index"][k]]["observation"].reshape(-1), obs)  # ... its buffer's
            # the same transitions and importance weights as the member sampling alone with the same priorities
            assert (sample[k] == solo_item["sample"][0]).all()
            assert buffer.sampler.beta == solos[k].buffers[0].sampler.beta
            buffer.update_priority(sample["index"][k], _priority(obs))
            solos[k].buffers[0].update_priority(solo_item["sample"]["index"][0], _priority(obs))
        items += 1
    assert items == len(stream) == len(solos[0]) == dm.total_updates
    assert [len(b) for b in stream.buffers] == [chunks * NUM_ENVS * STEPS] * K
    for k, buffer in enumerate(stream.buffers):  # member k's collected transitions, in its solo order
        assert torch.equal(buffer[:len(buffer)]["observation"], solos[k].buffers[0][:len(buffer)]["observation"])
    # priorities written for one member change only that member's buffer
    trees = [_stored(b, len(b)) for b in stream.buffers]
    index = torch.arange(16)
    stream.buffers[1].update_priority(index, torch.full((16,), 123.0))
    after = [_stored(b, len(b)) for b in stream.buffers]
    assert torch.equal(after[0], trees[0]) and torch.equal(after[2], trees[2])
    assert not torch.equal(after[1][:16], trees[1][:16]) and torch.equal(after[1][16:], trees[1][16:])


def test_a_short_dqn_population_fit_on_cartpole_gives_each_member_its_best_return() -> None:
    config = yaml.safe_load((CONFIGS / "cartpole" / "dqn.yaml").read_text())
    L.seed_everything(0)
    dm = ReplayDataModule(**{**config["data"]["init_args"], "total_frames": 5_000, "eval_every": 2_000,
                             "eval_episodes": 3, "seed": [0, 1]})
    model = DQN(env_id=dm.hparams.env_id, **{**config["model"]["init_args"], "hidden": [64, 64]}, members=2)
    model.seed_members([7, 8])
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval)
    trainer.fit(model, dm)
    assert model.frames == dm.total_frames  # per member
    assert trainer.global_step == dm.total_updates
    buffers = trainer.train_dataloader.buffers
    assert [len(b) for b in buffers] == [dm.total_frames] * 2  # each member's frames in its own buffer
    assert model.best_returns.shape == (2,) and torch.all(model.best_returns >= 8)  # CartPole returns >= 8
    assert all(f"eval/return/{k}" in trainer.callback_metrics for k in range(2))
    assert model.member_diverged_at == [None, None]


def test_a_dqn_population_fit_gives_each_member_its_solo_fit() -> None:
    """With member generators (acting, replay sampling, evaluation's exploration) and per-member env seeds, a
    member's whole fit -- data, buffer, priorities, target syncs, evaluations -- is the fit it makes alone."""
    hparams = {"hidden": [32, 32], "target_update_interval": 20}

    def data(seed) -> ReplayDataModule:
        return ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=1280, buffer_size=2_000,
                                batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=320, eval_episodes=2,
                                seed=seed)

    def fit(model: DQN, dm: ReplayDataModule) -> None:
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval,
                  ).fit(model, dm)

    solos = []
    for k in range(2):
        torch.manual_seed(100 + k)
        solos.append(DQN(**hparams))
    population = DQN(**hparams, members=2)
    params = dict(population.named_parameters())
    for k, solo in enumerate(solos):
        write_member(params, k, solo_state(solo))
    population.seed_members([7, 8])
    fit(population, data([0, 1]))
    for k, solo in enumerate(solos):
        solo.seed_members([7 + k])
        fit(solo, data(k))
        member = member_tensors(dict(population.named_parameters()), k)
        for name, value in solo_state(solo).items():
            torch.testing.assert_close(member[name], value, atol=1e-5, rtol=0, msg=name)
        assert population.best_returns[k] == solo.best_returns[0].item()
    assert population.best_returns[0] != population.best_returns[1]  # different agents (the evaluations differ)


class _PoisonMember(L.Callback):
    """Makes member 1's Q-values NaN before the first update: its loss and TD errors are NaN, and stay so (its
    last good weights, which it keeps, are these)."""

    def on_train_batch_start(self, trainer: L.Trainer, model: DQN, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            with torch.no_grad():
                model.q_net[-1].bias[1].fill_(float("nan"))


def test_a_diverged_member_freezes_and_writes_no_priorities_while_the_others_train_on() -> None:
    L.seed_everything(0)
    dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=512, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=512, eval_episodes=1,
                          seed=[0, 1])
    model = DQN(hidden=[16], members=2)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[_PoisonMember()])
    with pytest.warns(UserWarning, match="member 1: training diverged"):
        trainer.fit(model, dm)
    assert model.member_diverged_at[0] is None and model.member_diverged_at[1] is not None
    assert trainer.global_step == dm.total_updates  # member 0 trained on to the end
    buffers = trainer.train_dataloader.buffers
    assert all(torch.isfinite(_stored(b, len(b))).all() for b in buffers)  # no NaN priority in either buffer


def test_mazegrid_objects_take_a_populations_per_copy_env_seeds() -> None:
    seeds = member_copy_seeds([0, 5], 2)
    env = make_env("lth/MazeGrid-v0", 4, seeds, obs_type="objects")
    solo = make_env("lth/MazeGrid-v0", 4, 0, obs_type="objects")
    first = env.reset()
    assert torch.equal(first["observation"], solo.reset()["observation"])  # a deterministic game
    rollout = env.rollout(20, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([4, 20])
    env.seed_copies(seeds)  # evaluation re-seeds its env before every evaluation
    env.reset()
    with pytest.raises(ValueError, match="4 copies"):
        env.seed_copies([0, 1])


def test_a_minatar_cnn_dqn_population_trains_a_few_updates() -> None:
    L.seed_everything(0)
    dm = ReplayDataModule("MinAtar/Breakout-v1", num_envs=2, collect_steps=8, total_frames=384, buffer_size=512,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=384, eval_episodes=1,
                          seed=[0, 1])
    model = DQN("MinAtar/Breakout-v1", hidden=[32], network={"arch": "minatar_cnn"}, members=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, val_check_interval=dm.eval_interval).fit(model, dm)
    assert model.frames == 384 and torch.isfinite(model.best_returns).all()
    for name, p in model.named_parameters():  # both members' conv and linear layers learned
        moved = (p.detach() - before[name]).reshape(2, -1).abs().amax(1)
        assert torch.all(moved > 0), name
