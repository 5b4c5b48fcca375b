"""CartPole-v1 vectorised with numpy: gymnasium's ``SyncVectorEnv`` over ``CartPole-v1``, without the per-copy loop.

:class:`CartPoleVectorEnv` steps every copy with array operations (the same float64 arithmetic, in the same
order, as gymnasium's ``CartPoleEnv``) and autoresets in the same step, with ``SyncVectorEnv``'s per-copy seeding
(:class:`~lth.envs.native.SyncLikeVectorEnv`), so for the same seeds and actions the transitions are bit-identical
to ``gym.make_vec("CartPole-v1", n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": SAME_STEP})``.
(gymnasium's own ``CartPoleVectorEnv`` draws every copy from one shared generator and autoresets in the next
step, so it matches neither.)
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from lth.envs.native import SyncLikeVectorEnv

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


class CartPoleVectorEnv(SyncLikeVectorEnv):
    """``num_envs`` CartPole-v1 copies stepped together, autoresetting in the same step.

    Episodes end when the pole passes 12 degrees, the cart passes 2.4, or after 500 steps. Rewards are 1.0 per
    step, the terminating one included (float64, as ``SyncVectorEnv`` returns them).
    """

    metadata = {"render_modes": [], "render_fps": 50, "autoreset_mode": AutoresetMode.SAME_STEP}
    reset_low, reset_high = -0.05, 0.05
    state_size = 4  # x, x_dot, theta, theta_dot
    _high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
    single_observation_space = spaces.Box(-_high, _high, dtype=np.float32)
    single_action_space = spaces.Discrete(2)

    def _start(self, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
        return rng.uniform(low=low, high=high, size=(4,))

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        return self._state[rows].astype(np.float32)

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, x_dot, theta, theta_dot = self._state.T
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
        self._state = np.stack((x, x_dot, theta, theta_dot), axis=1)
        terminated = (x < -X_THRESHOLD) | (x > X_THRESHOLD) | (theta < -THETA_THRESHOLD) | (theta > THETA_THRESHOLD)
        return terminated, np.ones(self.num_envs, dtype=np.float64)


__all__ = ["CartPoleVectorEnv"]
