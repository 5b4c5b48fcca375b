"""What lth's own numpy-vectorised envs share: the checks of their vector options, and :class:`SyncLikeVectorEnv`,
the per-copy seeding and same-step autoreset of gymnasium's ``SyncVectorEnv`` for envs whose step is array maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import utils
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


def check_vector_options(env_name: str, num_envs: int, autoreset_mode: AutoresetMode | str) -> AutoresetMode:
    """``num_envs`` >= 1 and same-step autoreset, the only mode lth's batched TorchRL env steps; returns that mode,
    which a vector env keeps as ``autoreset_mode`` (as gymnasium's ``SyncVectorEnv`` does; TorchRL reads it)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
        raise ValueError(f"{env_name} only supports autoreset_mode=AutoresetMode.SAME_STEP, got {autoreset_mode!r}")
    return AutoresetMode.SAME_STEP


class SyncLikeVectorEnv(VectorEnv):
    """Copies of a classic-control env stepped with array operations, seeded and autoreset like ``SyncVectorEnv``.

    Every copy owns a ``np.random.Generator`` seeded with ``seed + i`` (or its own seed from a list) from which
    its start states are drawn, automatic resets included; an ended copy restarts in the same step and
    ``info["final_obs"]`` (object array, ``info["_final_obs"]`` mask) holds its true last observation. A subclass
    gives the spaces, :meth:`_start`, :meth:`_observe` and :meth:`_advance`, the single env's arithmetic applied to
    all copies in the same order, so that the transitions equal ``SyncVectorEnv``'s bit for bit. Episodes are
    truncated after ``max_episode_steps``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}
    single_observation_space: spaces.Box
    single_action_space: spaces.Discrete
    reset_low: float  # the single env's default start-state bounds (``options`` "low"/"high" override them)
    reset_high: float
    state_size: int

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 500,  # the classic-control v1 envs' TimeLimit
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        self.autoreset_mode = check_vector_options(type(self).__name__, num_envs, autoreset_mode)
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = None
        # One generator per copy, created at the first reset (unseeded copies draw a random seed, as gymnasium).
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._state = np.zeros((num_envs, self.state_size), dtype=np.float64)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._ready = False

    def _start(self, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
        """One copy's start state, drawn from its generator exactly as the single env's ``reset`` draws it."""
        raise NotImplementedError

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        """float32 observations of the copies ``rows`` (an index array) from their current states."""
        raise NotImplementedError

    def _advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step every copy's state with ``actions`` (already checked); returns (terminated, float64 reward)."""
        raise NotImplementedError

    @property
    def copy_np_randoms(self) -> tuple[np.random.Generator | None, ...]:
        """Each copy's generator (``SyncVectorEnv.np_random`` of its sub-envs)."""
        return tuple(self._rngs)

    def _draw_start(self, index: int, low: float, high: float) -> None:
        rng = self._rngs[index]
        if rng is None:
            rng, _ = seeding.np_random(None)
            self._rngs[index] = rng
        self._state[index] = self._start(rng, low, high)
        self._steps[index] = 0

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart copies: all of them, or ``options["reset_mask"]``'s; seeds as ``SyncVectorEnv`` takes them.

        An int ``seed`` seeds copy ``i`` with ``seed + i``, a sequence gives every copy its own (None: keep its
        stream), and ``seed=None`` continues every copy's stream. ``options`` ``low``/``high`` bound this reset's
        start states, as for the single env.
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
        low, high = utils.maybe_parse_reset_bounds(options, self.reset_low, self.reset_high)
        super().reset(seed=None if seeds[0] is None else int(seeds[0]))  # the vector env's own np_random
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(int(seeds[i]))
            self._draw_start(int(i), low, high)
        self._ready = True
        return self._observe(np.arange(self.num_envs)), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; ended copies restart at once and report their last observation in ``info``."""
        if not self._ready:
            raise RuntimeError("Call reset before using step method.")
        actions = np.asarray(actions)
        n = self.single_action_space.n
        if actions.shape != (self.num_envs,) or not np.all((actions >= 0) & (actions < n) & (actions % 1 == 0)):
            raise ValueError(f"actions must be {self.num_envs} values in [0, {n}), got {actions!r}")
        terminated, reward = self._advance(actions)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        every = np.arange(self.num_envs)
        obs = self._observe(every)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            ended = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in ended:  # numpy can't scatter arrays into objects
                final_obs[i] = obs[i].copy()  # obs[i] is a view, overwritten by the restart below
                self._draw_start(int(i), self.reset_low, self.reset_high)
            obs[ended] = self._observe(ended)
            info = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
        return obs, reward, terminated, truncated, info

    def render(self) -> None:
        """No rendering (``gym.make(env_id, render_mode="rgb_array")`` shows a single copy)."""
        return None
