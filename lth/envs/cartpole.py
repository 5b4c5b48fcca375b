"""CartPole-v1 vectorised with numpy: gymnasium's ``SyncVectorEnv`` over ``CartPole-v1``, without the per-copy loop.

:class:`CartPoleVectorEnv` steps every copy with array operations (the same float64 arithmetic, in the same
order, as gymnasium's ``CartPoleEnv``) and autoresets in the same step. Seeding follows ``SyncVectorEnv``: every
copy owns a ``np.random.Generator`` seeded with ``seed + i`` (or its own seed from a list) from which its start
states are drawn, automatic resets included, so for the same seeds and actions the transitions are bit-identical
to ``gym.make_vec("CartPole-v1", n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": SAME_STEP})``.
(gymnasium's own ``CartPoleVectorEnv`` draws every copy from one shared generator and autoresets in the next
step, so it matches neither.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import utils
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lth.envs.native import check_vector_options

ENV_ID = "CartPole-v1"
MAX_EPISODE_STEPS = 500  # CartPole-v1's TimeLimit

# CartPoleEnv's constants, computed the same way (the float64 results must match bit for bit).
GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates (euler integration)
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_LOW, RESET_HIGH = -0.05, 0.05


class CartPoleVectorEnv(VectorEnv):
    """``num_envs`` CartPole-v1 copies stepped together, autoresetting in the same step.

    When a copy's episode ends (pole past 12 degrees, cart past 2.4, or 500 steps), the returned observation is
    already its next episode's first one and ``info["final_obs"]`` (object array, ``info["_final_obs"]`` mask)
    holds the true last one, exactly like gymnasium's ``SyncVectorEnv`` with ``AutoresetMode.SAME_STEP``.
    Rewards are 1.0 per step, the terminating one included (float64, as ``SyncVectorEnv`` returns them).
    """

    metadata = {"render_modes": [], "render_fps": 50, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        check_vector_options("CartPoleVectorEnv", num_envs, autoreset_mode)
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = None
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        self.single_observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        # One generator per copy, created at the first reset (unseeded copies draw a random seed, as CartPoleEnv).
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._state = np.zeros((num_envs, 4), dtype=np.float64)  # x, x_dot, theta, theta_dot per copy
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._ready = False

    @property
    def copy_np_randoms(self) -> tuple[np.random.Generator | None, ...]:
        """Each copy's generator (``SyncVectorEnv.np_random`` of its sub-envs)."""
        return tuple(self._rngs)

    def _draw_start(self, index: int, low: float = RESET_LOW, high: float = RESET_HIGH) -> None:
        """Copy ``index``'s next start state from its own generator, as ``CartPoleEnv.reset`` draws it."""
        rng = self._rngs[index]
        if rng is None:
            rng, _ = seeding.np_random(None)
            self._rngs[index] = rng
        self._state[index] = rng.uniform(low=low, high=high, size=(4,))
        self._steps[index] = 0

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart copies: all of them, or ``options["reset_mask"]``'s; seeds as ``SyncVectorEnv`` takes them.

        An int ``seed`` seeds copy ``i`` with ``seed + i``, a sequence gives every copy its own (None: keep its
        stream), and ``seed=None`` continues every copy's stream. ``options`` ``low``/``high`` bound this reset's
        start states, as for ``CartPoleEnv``.
        """
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"{len(seeds)} seeds for {self.num_envs} copies")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a ({self.num_envs},) bool array with a True value")
            if not self._ready and not mask.all():
                raise RuntimeError("reset every copy before a partial reset")
        low, high = utils.maybe_parse_reset_bounds(options, RESET_LOW, RESET_HIGH)
        super().reset(seed=None if seeds[0] is None else int(seeds[0]))  # the vector env's own np_random
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(int(seeds[i]))
            self._draw_start(int(i), low, high)
        self._ready = True
        return self._state.astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; ended copies restart at once and report their last observation in ``info``."""
        if not self._ready:
            raise RuntimeError("Call reset before using step method.")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.all((actions == 0) | (actions == 1)):
            raise ValueError(f"actions must be {self.num_envs} values in {{0, 1}}, got {actions!r}")
        state = self._state
        x, x_dot, theta, theta_dot = state[:, 0], state[:, 1], state[:, 2], state[:, 3]
        force = np.where(actions == 1, FORCE_MAG, -FORCE_MAG)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        # CartPoleEnv.step's expressions, operation for operation (same rounding, so the same bits).
        temp = (force + POLEMASS_LENGTH * np.square(theta_dot) * sintheta) / TOTAL_MASS
        thetaacc = (GRAVITY * sintheta - costheta * temp) / (
            LENGTH * (4.0 / 3.0 - MASSPOLE * np.square(costheta) / TOTAL_MASS)
        )
        xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
        x = x + TAU * x_dot
        x_dot = x_dot + TAU * xacc
        theta = theta + TAU * theta_dot
        theta_dot = theta_dot + TAU * thetaacc
        self._state = state = np.stack((x, x_dot, theta, theta_dot), axis=1)
        terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        reward = np.ones(self.num_envs, dtype=np.float64)
        obs = state.astype(np.float32)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ended = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in ended:  # numpy can't scatter arrays into objects
                final_obs[i] = obs[i].copy()  # obs[i] is a view, overwritten by the restart below
                self._draw_start(int(i))
            obs[done] = state[done].astype(np.float32)
            info = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        return obs, reward, terminated, truncated, info

    def render(self) -> None:
        """No rendering (use ``gym.make("CartPole-v1", render_mode="rgb_array")`` to look at a copy)."""
        return None


__all__ = ["ENV_ID", "MAX_EPISODE_STEPS", "CartPoleVectorEnv"]
