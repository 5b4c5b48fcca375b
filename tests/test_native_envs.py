"""The numpy-batched CartPole-v1 and Acrobot-v1 give gymnasium's SyncVectorEnv transitions bit for bit and work
through TorchRL."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from lth.envs import gym_vector_env, make_env
from lth.envs.acrobot import AcrobotVectorEnv
from lth.envs.cartpole import CartPoleVectorEnv
from lth.envs.native import SyncLikeVectorEnv

N = 7
STEPS = 2000
ENVS = {"CartPole-v1": CartPoleVectorEnv, "Acrobot-v1": AcrobotVectorEnv}


def _heuristic(env_id: str, obs: np.ndarray) -> np.ndarray:
    """A policy that ends episodes both ways: CartPole balances (the noiseless copies reach the limit); Acrobot
    pumps energy with the joint velocities (swings up within ~100 steps), except copy 0, which hangs still."""
    if env_id == "CartPole-v1":
        return obs[:, 2] + obs[:, 3] > 0
    return np.where(np.arange(len(obs)) == 0, 1, np.where(obs[:, 4] + obs[:, 5] > 0, 2, 0))


def _sync(env_id: str, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    return gym.make_vec(
        env_id,
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


def _compare(env_id: str, seed, steps: int = STEPS, **kwargs) -> tuple[int, int, int]:
    """Step both envs with the same actions; return (terminations, truncations, full resets) seen."""
    new, old = ENVS[env_id](N, **kwargs), _sync(env_id, N, **kwargs)
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
        n = old.single_action_space.n
        action = np.where(rng.random(N) < noise, rng.integers(0, n, N), _heuristic(env_id, obs_old))
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


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("seed", [11, [5, 900, 3, 3, 12345, 0, 77]], ids=["int", "list"])
def test_matches_sync_vector_env_bit_for_bit(env_id: str, seed) -> None:
    terminations, truncations, _ = _compare(env_id, seed)
    assert terminations >= 10 and truncations >= 1


@pytest.mark.parametrize("env_id", ENVS)
def test_matches_sync_vector_env_with_shorter_time_limit(env_id: str) -> None:
    terminations, truncations, _ = _compare(env_id, 4, steps=300, max_episode_steps=60)
    assert truncations >= 5


@pytest.mark.parametrize("env_id", ENVS)
def test_dispatch_and_fallback(env_id: str) -> None:
    assert isinstance(gym_vector_env(env_id, 3), ENVS[env_id])
    assert isinstance(gym_vector_env(env_id, 3, max_episode_steps=100), ENVS[env_id])
    fallback = gym_vector_env(env_id, 3, render_mode="rgb_array")  # a kwarg the numpy envs lack
    assert not isinstance(fallback, SyncLikeVectorEnv)
    assert fallback.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    fallback.close()


@pytest.mark.parametrize("env_id", ENVS)
def test_rejects_bad_use(env_id: str) -> None:
    env = ENVS[env_id](2)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    n = env.single_action_space.n
    for bad in (np.array([0, n]), np.array([0, -1]), np.array([0.5, 0.0]), np.zeros(3, dtype=np.int64)):
        with pytest.raises(ValueError):
            env.step(bad)
    with pytest.raises(ValueError):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError):
        ENVS[env_id](2, autoreset_mode=AutoresetMode.NEXT_STEP)
    with pytest.raises(ValueError):
        ENVS[env_id](2, max_episode_steps=0)


@pytest.mark.parametrize("env_id", ENVS)
def test_partial_reset_matches_sync_vector_env(env_id: str) -> None:
    new, old = ENVS[env_id](N), _sync(env_id, N)
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
