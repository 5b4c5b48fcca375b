"""Acrobot-v1 vectorised with numpy: gymnasium's ``SyncVectorEnv`` over ``Acrobot-v1``, without the per-copy loop.

gymnasium's ``AcrobotEnv`` integrates each copy with a Python RK4 over scalars (~52 us per copy per step here,
4 ms for the 80 copies of a 20-member population); :class:`AcrobotVectorEnv` runs the same RK4 with the same
float64 expressions on all copies at once, with ``SyncVectorEnv``'s per-copy seeding and same-step autoreset
(:class:`~lth.envs.native.SyncLikeVectorEnv`). Its transitions equal ``gym.make_vec("Acrobot-v1", n,
vectorization_mode="sync", vector_kwargs={"autoreset_mode": SAME_STEP})``'s bit for bit (tests/test_native_envs.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.vector import AutoresetMode
from numpy import cos, pi, sin

from lth.envs.native import SyncLikeVectorEnv

A = AcrobotEnv  # its constants (book dynamics, no torque noise)
TORQUES = np.array(A.AVAIL_TORQUE, dtype=np.float64)


def _dsdt(s: np.ndarray) -> np.ndarray:
    """``AcrobotEnv._dsdt`` on rows ``[theta1, theta2, dtheta1, dtheta2, torque]``, expression for expression."""
    m1, m2, l1, lc1, lc2, I1, I2, g = (A.LINK_MASS_1, A.LINK_MASS_2, A.LINK_LENGTH_1, A.LINK_COM_POS_1,
                                       A.LINK_COM_POS_2, A.LINK_MOI, A.LINK_MOI, 9.8)
    theta1, theta2, dtheta1, dtheta2, a = s.T
    # AcrobotEnv squares numpy scalars, i.e. libm pow(x, 2), which differs from x * x (an array's ** 2) in ~0.1%
    # of cases; float_power calls pow for arrays too. (Constants' squares are Python floats, as there.)
    sq1, sq2 = np.float_power(dtheta1, 2), np.float_power(dtheta2, 2)
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos(theta2)) + I1 + I2
    d2 = m2 * (lc2**2 + l1 * lc2 * cos(theta2)) + I2
    phi2 = m2 * lc2 * g * cos(theta1 + theta2 - pi / 2.0)
    phi1 = (
        -m2 * l1 * lc2 * sq2 * sin(theta2)
        - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin(theta2)
        + (m1 * lc1 + m2 * l1) * g * cos(theta1 - pi / 2)
        + phi2
    )
    ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * sq1 * sin(theta2) - phi2) / (
        m2 * lc2**2 + I2 - np.float_power(d2, 2) / d1
    )
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return np.stack((dtheta1, dtheta2, ddtheta1, ddtheta2, np.zeros_like(a)), axis=1)


def _wrap(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """gymnasium's ``wrap`` (repeated whole-period shifts, the same subtractions) on every element."""
    diff = M - m
    while (above := x > M).any():
        x = np.where(above, x - diff, x)
    while (below := x < m).any():
        x = np.where(below, x + diff, x)
    return x


class AcrobotVectorEnv(SyncLikeVectorEnv):
    """``num_envs`` Acrobot-v1 copies stepped together, autoresetting in the same step.

    Reward -1.0 per step and 0.0 on the step that swings the tip above the line (termination); 500 steps truncate.
    As in ``AcrobotEnv``, a fresh start state is float32 (its first observation is computed in float32) and
    every later one float64.
    """

    metadata = {"render_modes": [], "render_fps": 15, "autoreset_mode": AutoresetMode.SAME_STEP}
    reset_low, reset_high = -0.1, 0.1
    state_size = 4  # theta1, theta2, dtheta1, dtheta2
    _high = np.array([1.0, 1.0, 1.0, 1.0, A.MAX_VEL_1, A.MAX_VEL_2], dtype=np.float32)
    single_observation_space = spaces.Box(low=-_high, high=_high, dtype=np.float32)
    single_action_space = spaces.Discrete(3)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fresh = np.zeros(self.num_envs, dtype=bool)  # state drawn at reset, still float32 in AcrobotEnv

    def _start(self, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
        return rng.uniform(low=low, high=high, size=(4,)).astype(np.float32)

    def _draw_start(self, index: int, low: float, high: float) -> None:
        super()._draw_start(index, low, high)
        self._fresh[index] = True

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        fresh = self._fresh[rows]
        s = self._state[rows]
        obs = np.empty((len(rows), 6), dtype=np.float32)
        for part, dtype in ((fresh, np.float32), (~fresh, np.float64)):
            if part.any():  # AcrobotEnv._get_ob on float32 (fresh) or float64 states
                p = s[part].astype(dtype)
                obs[part] = np.stack((cos(p[:, 0]), sin(p[:, 0]), cos(p[:, 1]), sin(p[:, 1]), p[:, 2], p[:, 3]),
                                     axis=1)
        return obs

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # AcrobotEnv.step: one RK4 step of dt over [state, torque], then wrap the angles and bound the velocities.
        y0 = np.concatenate((self._state, TORQUES[actions][:, None]), axis=1)
        dt = A.dt - 0  # rk4's t[1] - t[0]
        dt2 = dt / 2.0
        k1 = _dsdt(y0)
        k2 = _dsdt(y0 + dt2 * k1)
        k3 = _dsdt(y0 + dt2 * k2)
        k4 = _dsdt(y0 + dt * k3)
        ns = (y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4))[:, :4]
        ns[:, 0] = _wrap(ns[:, 0], -pi, pi)
        ns[:, 1] = _wrap(ns[:, 1], -pi, pi)
        ns[:, 2] = np.minimum(np.maximum(ns[:, 2], -A.MAX_VEL_1), A.MAX_VEL_1)
        ns[:, 3] = np.minimum(np.maximum(ns[:, 3], -A.MAX_VEL_2), A.MAX_VEL_2)
        self._state = np.ascontiguousarray(ns)
        self._fresh[:] = False
        terminated = -cos(ns[:, 0]) - cos(ns[:, 1] + ns[:, 0]) > 1.0
        return terminated, np.where(terminated, 0.0, -1.0)


__all__ = ["AcrobotVectorEnv"]
