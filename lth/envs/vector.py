"""A thin batched TorchRL env over a gymnasium vector env.

TorchRL's ``GymWrapper`` wraps gymnasium 1.x vector envs too (lth's own included: tests/test_envs.py), but per
batched step it reads the info dict for final observations and runs a ``VecGymEnvTransform``: 16 CartPole copies
took 1.1 ms per step through it against 0.26 ms through this env (measured here in one process, on a busy
machine: the ratio is the point). This env steps ``num_envs`` copies at once (gymnasium's ``SyncVectorEnv`` or
lth's native vector envs) in same-step autoreset mode and builds one TensorDict per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from lth.console import silenced_fd_output


def _box_spec(space: gym.spaces.Box, batch: int) -> Bounded | Unbounded:
    """TorchRL spec for a batched Box: bounded when every bound is finite."""
    shape = torch.Size([batch, *space.shape])
    dtype = torch.float32
    if np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
        low = torch.as_tensor(space.low, dtype=dtype).expand(shape).clone()
        high = torch.as_tensor(space.high, dtype=dtype).expand(shape).clone()
        return Bounded(low=low, high=high, shape=shape, dtype=dtype)
    return Unbounded(shape=shape, dtype=dtype)


def _input_mask(shape: tuple[int, ...], keep: Sequence[int], env_id: str) -> np.ndarray:
    """A 0/1 float32 array of one observation's ``shape`` with ones at the flat indices ``keep``."""
    size = int(np.prod(shape))
    keep = np.asarray(list(keep), dtype=np.int64)
    if keep.size and (keep.min() < 0 or keep.max() >= size):
        raise ValueError(f"{env_id}: keep_inputs must be flat indices in [0, {size}), got {keep.min()}..{keep.max()}")
    visible = np.zeros(size, dtype=np.float32)
    visible[keep] = 1.0
    return visible.reshape(shape)


class GymVectorEnv(EnvBase):
    """A gymnasium vector env (same-step autoreset) as one TorchRL env with batch size ``[num_envs]``.

    Keys: ``observation`` (float32), ``action`` (int64 index for Discrete, float32 for Box), ``reward``,
    ``done``/``terminated``/``truncated``. When a copy's episode ends, ``("next", "observation")`` holds its
    true final observation (needed to bootstrap truncated episodes) and the partial reset that TorchRL issues
    next returns the fresh observation gymnasium already produced.

    ``keep_inputs`` (flat indices into one observation) zeroes every other input in every observation the
    agent sees, final ones included: a dense agent then sees only a ticket's surviving inputs (``lth transfer``).
    """

    def __init__(
        self, vec_env: gym.vector.VectorEnv, env_id: str = "env", keep_inputs: Sequence[int] | None = None
    ) -> None:
        num_envs = vec_env.num_envs
        # Device-less (numpy-backed data on the CPU): TorchRL's collectors then skip a per-step device cast.
        super().__init__(batch_size=torch.Size([num_envs]), device=None)
        if vec_env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError(f"{env_id}: the vector env must autoreset in SAME_STEP mode")
        self.env_id = env_id
        self.num_envs = num_envs
        self._env = vec_env
        self._silent_reset = "BulletEnv" in env_id  # pybullet connects at the first reset; its C code prints "argv[0]="
        obs_space = self._env.single_observation_space
        act_space = self._env.single_action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise TypeError(f"{env_id}: only Box observations are supported, got {obs_space}")
        self.observation_spec = Composite(observation=_box_spec(obs_space, num_envs), shape=self.batch_size)
        if isinstance(act_space, gym.spaces.Discrete):
            self.action_spec = Categorical(int(act_space.n), shape=self.batch_size, dtype=torch.int64)
        elif isinstance(act_space, gym.spaces.Box):
            self.action_spec = _box_spec(act_space, num_envs)
        else:
            raise TypeError(f"{env_id}: unsupported action space {act_space}")
        self.reward_spec = Unbounded(shape=(num_envs, 1), dtype=torch.float32)
        flag = Categorical(2, shape=(num_envs, 1), dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=self.batch_size)
        self._visible = None if keep_inputs is None else _input_mask(obs_space.shape, keep_inputs, env_id)
        self._pending_seed: int | list[int] | None = None
        self._obs = np.zeros((num_envs, *obs_space.shape), dtype=np.float32)
        self._fresh_obs = self._obs.copy()

    def _observed(self, obs: np.ndarray) -> np.ndarray:
        """Observations as float32, with the inputs outside ``keep_inputs`` zeroed."""
        obs = np.asarray(obs, dtype=np.float32)
        return obs if self._visible is None else obs * self._visible

    def _set_seed(self, seed: int | None) -> None:
        self._pending_seed = seed
        if seed is not None:
            self._env.action_space.seed(seed)

    def seed_copies(self, seeds: Sequence[int]) -> None:
        """Seed each copy with its own seed at the next full reset (a population's members: one seed range each)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"{self.env_id}: {len(seeds)} seeds for {self.num_envs} copies")
        self._pending_seed = [int(s) for s in seeds]

    def _done_td(self, obs: np.ndarray, reward: np.ndarray | None, term: np.ndarray, trunc: np.ndarray) -> TensorDict:
        # gymnasium hands out fresh arrays every step, so sharing their memory (from_numpy) is safe
        term_t = torch.from_numpy(np.asarray(term, dtype=bool)).unsqueeze(-1)
        trunc_t = torch.from_numpy(np.asarray(trunc, dtype=bool)).unsqueeze(-1)
        out = {
            "observation": torch.from_numpy(obs),
            "terminated": term_t,
            "truncated": trunc_t,
            "done": term_t | trunc_t,
        }
        if reward is not None:
            out["reward"] = torch.from_numpy(np.asarray(reward, dtype=np.float32)).unsqueeze(-1)
        return TensorDict(out, batch_size=self.batch_size)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDict:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is None or bool(mask.all()):
            with silenced_fd_output() if self._silent_reset else nullcontext():
                obs, _ = self._env.reset(seed=self._pending_seed)
            self._pending_seed = None  # seed once; later full resets continue the seeded RNG stream
            self._obs = self._observed(obs)
        else:
            reset = mask.reshape(self.num_envs).numpy()
            self._obs[reset] = self._fresh_obs[reset]
        zeros = np.zeros(self.num_envs, dtype=bool)
        return self._done_td(self._obs.copy(), None, zeros, zeros)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        action = tensordict.get("action").detach().numpy()  # an actor outside no_grad works too
        obs, reward, term, trunc, info = self._env.step(action)
        obs = self._observed(obs)
        done = np.logical_or(term, trunc)
        next_obs = obs.copy()
        if done.any():
            # Same-step autoreset: ``obs`` already holds the fresh episode's start; keep it for the partial
            # reset and report the real final observation as this transition's next state.
            next_obs[done] = self._observed(np.stack(info["final_obs"][done]))
            self._fresh_obs = obs
        self._obs = obs
        return self._done_td(next_obs, reward, term, trunc)

    def step_and_maybe_reset(self, tensordict: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """Step, then start the next step from the observations gymnasium's autoreset already produced.

        In same-step autoreset the copies that just finished already hold their next episode's first
        observation, so TorchRL's generic partial ``reset`` (the larger share of its per-step cost on cheap
        envs) is skipped, as TorchRL's own ``EnvPoolWrapper`` does for its native autoreset.
        """
        tensordict = self.step(tensordict)
        next_root = self._step_mdp(tensordict)
        done = tensordict.get(("next", "done"))
        if done.any():
            next_root.set("observation", torch.from_numpy(self._obs.copy()))
            for key in ("done", "terminated", "truncated"):
                next_root.set(key, torch.zeros_like(done))
        return tensordict, next_root

    def close(self, *, raise_if_closed: bool = True) -> None:
        self._env.close()
        super().close(raise_if_closed=raise_if_closed)
