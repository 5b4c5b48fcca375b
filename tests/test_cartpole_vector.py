"""The numpy-batched CartPole-v1 gives gymnasium's SyncVectorEnv transitions bit for bit and works through TorchRL."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from lth.envs import gym_vector_env, make_env
from lth.envs.cartpole import CartPoleVectorEnv

N = 7
STEPS = 2000


def _sync_cartpole(num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "CartPole-v1",
        num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        **kwargs,
    )


def _assert_same_info(new: dict, old: dict) -> None:
    assert set(new) == set(old)
    if not old:
        return
    np.testing.assert_array_equal(new["_final_obs"], old["_final_obs"])
    np.testing.assert_array_equal(new["_final_info"], old["_final_info"])
    done = old["_final_obs"]
    for a, b in zip(new["final_obs"][done], old["final_obs"][done], strict=True):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b)
    assert all(v is None for v in new["final_obs"][~done])


def _compare(seed, steps: int = STEPS, **kwargs) -> tuple[int, int, int]:
    """Step both envs with the same actions; return (terminations, truncations, full resets) seen."""
    new, old = CartPoleVectorEnv(N, **kwargs), _sync_cartpole(N, **kwargs)
    assert new.single_observation_space == old.single_observation_space
    assert new.single_action_space == old.single_action_space
    assert new.observation_space == old.observation_space and new.action_space == old.action_space
    assert new.metadata["autoreset_mode"] == old.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    noise = np.linspace(0.0, 0.3, N)  # per copy: the noiseless ones reach the 500-step limit
    rng = np.random.default_rng(0)
    counts = np.zeros(2, dtype=np.int64)
    resets = 0
    obs_new, _ = new.reset(seed=seed)
    obs_old, _ = old.reset(seed=seed)
    assert obs_new.dtype == obs_old.dtype == np.float32 and np.array_equal(obs_new, obs_old)
    for t in range(steps):
        if t == steps // 2:  # a later full reset without a seed continues every copy's stream
            obs_new, _ = new.reset()
            obs_old, _ = old.reset()
            assert np.array_equal(obs_new, obs_old)
            resets += 1
        action = np.where(rng.random(N) < noise, rng.integers(0, 2, N), (obs_old[:, 2] + obs_old[:, 3] > 0))
        action = action.astype(np.int64)
        obs_new, rew_new, term_new, trunc_new, info_new = new.step(action)
        obs_old, rew_old, term_old, trunc_old, info_old = old.step(action)
        assert obs_new.dtype == np.float32 and np.array_equal(obs_new, obs_old), t
        assert rew_new.dtype == rew_old.dtype and np.array_equal(rew_new, rew_old), t
        assert np.array_equal(term_new, term_old) and np.array_equal(trunc_new, trunc_old), t
        _assert_same_info(info_new, info_old)
        counts += [term_old.sum(), trunc_old.sum()]
    new.close()
    old.close()
    return int(counts[0]), int(counts[1]), resets


@pytest.mark.parametrize("seed", [11, [5, 900, 3, 3, 12345, 0, 77]], ids=["int", "list"])
def test_matches_sync_vector_env_bit_for_bit(seed) -> None:
    terminations, truncations, _ = _compare(seed)
    assert terminations >= 10 and truncations >= 1


def test_matches_sync_vector_env_with_shorter_time_limit() -> None:
    terminations, truncations, _ = _compare(4, steps=300, max_episode_steps=60)
    assert truncations >= 5


def test_dispatch_and_fallback() -> None:
    assert isinstance(gym_vector_env("CartPole-v1", 3), CartPoleVectorEnv)
    assert isinstance(gym_vector_env("CartPole-v1", 3, max_episode_steps=100), CartPoleVectorEnv)
    fallback = gym_vector_env("CartPole-v1", 3, sutton_barto_reward=True)  # a kwarg the numpy env lacks
    assert not isinstance(fallback, CartPoleVectorEnv)
    assert fallback.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    fallback.close()


def test_rejects_bad_use() -> None:
    env = CartPoleVectorEnv(2)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.array([0, 2]))
    with pytest.raises(ValueError):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError):
        CartPoleVectorEnv(2, autoreset_mode=AutoresetMode.NEXT_STEP)


def test_partial_reset_matches_sync_vector_env() -> None:
    new, old = CartPoleVectorEnv(N), _sync_cartpole(N)
    new.reset(seed=2)
    old.reset(seed=2)
    mask = np.arange(N) % 2 == 0
    obs_new, _ = new.reset(options={"reset_mask": mask.copy()})
    obs_old, _ = old.reset(options={"reset_mask": mask.copy()})
    assert np.array_equal(obs_new, obs_old)


def test_make_env_uses_it_through_torchrl() -> None:
    env = make_env("CartPole-v1", 8, seed=3)
    assert isinstance(env._env, CartPoleVectorEnv)
    torch.manual_seed(0)
    rollout = env.rollout(50, break_when_any_done=False)  # random policy; episodes end and restart
    assert rollout.batch_size == torch.Size([8, 50])
    assert rollout["next", "observation"].dtype == torch.float32
    assert torch.all(rollout["next", "reward"] == 1.0)
    assert bool(rollout["next", "done"].any())
    # the observations after an ended episode are the fresh episode's start (|state| <= 0.05)
    done = rollout["next", "done"].squeeze(-1)
    restarted = rollout["observation"][:, 1:][done[:, :-1]]
    assert restarted.numel() and bool((restarted.abs() <= 0.05).all())
    env.close()
