"""MazeGrid (``lth/MazeGrid-v0``): the paper's visual navigation task (SI B), vectorised with numpy.

The agent walks a fixed 10x20 grid collecting 42 coins (+1 each) while avoiding 12 poisons (-1 each) and
two enemies that patrol horizontally inside gaps in the walls. An episode terminates when every coin is
collected or the agent meets an enemy (same cell, or crossing through each other in one step) and is
truncated after 200 steps. The game has no randomness: every episode starts from :data:`lth.envs.maze_board.LAYOUT`.

Run ``python -m lth.envs.mazegrid docs/mazegrid.png`` to draw the layout with a colour legend.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lth.envs.maze_board import (
    ACTIONS,
    AGENT,
    BOARD,
    CHANNELS,
    COIN,
    EMPTY,
    ENEMY_A,
    ENEMY_B,
    HEIGHT,
    MAX_EPISODE_STEPS,
    NUM_COINS,
    NUM_POISONS,
    PALETTE,
    POISON,
    WALL,
    WIDTH,
    move_table,
)
from lth.envs.native import check_vector_options
from lth.registration import MAZEGRID_ID

ENV_ID = MAZEGRID_ID

OBS_TYPES = ("objects", "rgb", "entangled")

_MOVES = move_table(BOARD.walls)
# The start's cell labels without the agent and enemies: walls, coins, poisons and empty cells.
_START_ITEMS = np.select([BOARD.walls, BOARD.coins, BOARD.poisons], [WALL, COIN, POISON], EMPTY).ravel().astype(np.int8)
_PALETTE_PLANES = np.ascontiguousarray(PALETTE.T, dtype=np.float32)  # (3, labels): one lookup table per colour
_NUM_OPEN = int((~BOARD.walls).sum())  # every open cell is exactly one object: the count of ones per object map


def projection_matrix(seed: int) -> np.ndarray:
    """The entangled encoding's fixed (1200, 1200) float32 matrix with U(-1, 1) entries, one per seed."""
    size = len(CHANNELS) * HEIGHT * WIDTH
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(size, size)).astype(np.float32)


def encode_objects(labels: np.ndarray) -> np.ndarray:
    """(N, cells) cell labels -> (N, 6, HEIGHT, WIDTH) float32 one-hot object maps (walls all-zero)."""
    onehot = labels[:, None, :] == np.arange(len(CHANNELS), dtype=labels.dtype)[None, :, None]
    return onehot.astype(np.float32).reshape(len(labels), len(CHANNELS), HEIGHT, WIDTH)


def encode_rgb(labels: np.ndarray) -> np.ndarray:
    """(N, cells) cell labels -> (N, 3, HEIGHT, WIDTH) float32 colour image with values 0..255."""
    rgb = np.empty((len(labels), 3, HEIGHT * WIDTH), dtype=np.float32)
    for channel, table in enumerate(_PALETTE_PLANES):
        rgb[:, channel] = table[labels]
    return rgb.reshape(len(labels), 3, HEIGHT, WIDTH)


def frame(labels: np.ndarray, scale: int) -> np.ndarray:
    """One copy's (cells,) labels -> (HEIGHT*scale, WIDTH*scale, 3) uint8 picture, ``scale`` pixels per cell."""
    image = PALETTE[labels].reshape(HEIGHT, WIDTH, 3)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


class _Encoder:
    """Observation space and batched encoder for one ``obs_type``."""

    def __init__(self, obs_type: str, projection_seed: int) -> None:
        self.obs_type = obs_type
        self.projection: np.ndarray | None = None
        if obs_type == "objects":
            self.space = spaces.Box(0.0, 1.0, (len(CHANNELS), HEIGHT, WIDTH), np.float32)
        elif obs_type == "rgb":
            self.space = spaces.Box(0.0, 255.0, (3, HEIGHT, WIDTH), np.float32)
        else:
            self.projection = projection_matrix(projection_seed)
            # |M x| <= (number of ones in x) * max|M_ij| <= number of open cells
            self.space = spaces.Box(-_NUM_OPEN, _NUM_OPEN, (len(self.projection),), np.float32)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Encode (N, cells) labels as (N, *space.shape) float32 observations."""
        if self.obs_type == "rgb":
            return encode_rgb(labels)
        objects = encode_objects(labels)
        if self.projection is None:
            return objects
        return objects.reshape(len(labels), -1) @ self.projection.T


class _Game:
    """The batched game state and rules, shared by the vector and the single env."""

    def __init__(self, num_envs: int, max_episode_steps: int) -> None:
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self._rows = np.arange(num_envs)
        self.agent = np.empty(num_envs, dtype=np.int64)
        self.items = np.empty((num_envs, HEIGHT * WIDTH), dtype=np.int8)  # WALL, EMPTY, COIN or POISON per cell
        self.coins_left = np.empty(num_envs, dtype=np.int64)
        self.t = np.empty(num_envs, dtype=np.int64)  # steps taken this episode; also fixes the enemies' places
        self.reset(np.ones(num_envs, dtype=bool))

    def reset(self, mask: np.ndarray) -> None:
        """Restart the copies where ``mask`` is True from the layout."""
        self.agent[mask] = BOARD.agent
        self.items[mask] = _START_ITEMS
        self.coins_left[mask] = NUM_COINS
        self.t[mask] = 0

    def enemies(self, t: np.ndarray) -> list[np.ndarray]:
        """Each enemy's flat cell per copy at episode step ``t``."""
        return [path[t % len(path)] for path in BOARD.patrols]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move agents and enemies one step; return float64 rewards and bool terminated, truncated."""
        rows, before = self._rows, self.agent
        after = _MOVES[before, actions]
        item = self.items[rows, after]
        self.items[rows, after] = EMPTY  # collected; the agent never stands on a wall
        coin, poison = item == COIN, item == POISON
        self.coins_left -= coin
        met = np.zeros(self.num_envs, dtype=bool)
        for old, new in zip(self.enemies(self.t), self.enemies(self.t + 1), strict=True):
            met |= (after == new) | ((after == old) & (before == new))  # same cell, or swapped cells
        self.agent = after
        self.t += 1
        terminated = met | (self.coins_left == 0)
        truncated = (self.t >= self.max_episode_steps) & ~terminated
        return coin.astype(np.float64) - poison, terminated, truncated

    def labels(self) -> np.ndarray:
        """(N, cells) int8 label per cell (CHANNELS index, or WALL); an enemy hides the agent when they meet."""
        labels = self.items.copy()
        labels[self._rows, self.agent] = AGENT
        for label, cells in zip((ENEMY_A, ENEMY_B), self.enemies(self.t), strict=True):
            labels[self._rows, cells] = label
        return labels


def _check_common(obs_type: str, max_episode_steps: int, render_mode: str | None) -> None:
    """Raise ``ValueError`` on settings both env classes share."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"unknown obs_type {obs_type!r}; valid choices are {', '.join(OBS_TYPES)}")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"unknown render_mode {render_mode!r}; valid choices are None, 'rgb_array'")


class MazeGridVectorEnv(VectorEnv):
    """``num_envs`` MazeGrid copies stepped together with array operations, autoresetting in the same step.

    When a copy's episode ends, the returned observation is already its next episode's first one and
    ``info["final_obs"]`` (object array, ``info["_final_obs"]`` mask) holds the true last one, exactly like
    gymnasium's ``SyncVectorEnv`` with ``AutoresetMode.SAME_STEP``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        obs_type: str = "objects",
        projection_seed: int = 0,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        _check_common(obs_type, max_episode_steps, render_mode)
        self.autoreset_mode = check_vector_options("MazeGridVectorEnv", num_envs, autoreset_mode)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.obs_type = obs_type
        self._encode = _Encoder(obs_type, projection_seed)
        self._game = _Game(num_envs, max_episode_steps)
        self.single_observation_space = self._encode.space
        self.single_action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart every copy; the game is deterministic, ``seed`` only seeds ``np_random``.

        ``seed`` may also be one seed per copy, as gymnasium's ``SyncVectorEnv`` takes them (a population's
        member-major copies); the first then seeds ``np_random``, as an int ``seed`` seeds copy 0 with itself.
        """
        if isinstance(seed, Sequence):
            if len(seed) != self.num_envs:
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} copies")
            seed = int(seed[0])
        super().reset(seed=seed, options=options)
        self._game.reset(np.ones(self.num_envs, dtype=bool))
        return self._encode(self._game.labels()), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every copy; ended copies restart at once and report their last observation in ``info``."""
        rewards, terminated, truncated = self._game.step(np.asarray(actions, dtype=np.int64))
        obs = self._encode(self._game.labels())
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i, last in zip(np.flatnonzero(done), obs[done], strict=True):  # numpy can't scatter arrays into objects
                final_obs[i] = last
            info = {"final_obs": final_obs, "_final_obs": done, "final_info": {}, "_final_info": done.copy()}
            self._game.reset(done)
            obs[done] = self._encode(self._game.labels()[done])
        return obs, rewards, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The first copy as an upscaled (200, 400, 3) uint8 picture in ``rgb_array`` mode, else None."""
        if self.render_mode is None:
            gym.logger.warn("MazeGridVectorEnv.render() called without render_mode='rgb_array'")
            return None
        return frame(self._game.labels()[0], scale=20)


class MazeGridEnv(gym.Env):
    """A single MazeGrid game (``gym.make("lth/MazeGrid-v0")``); same rules and encodings as the vector env."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        obs_type: str = "objects",
        projection_seed: int = 0,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        render_mode: str | None = None,
    ) -> None:
        _check_common(obs_type, max_episode_steps, render_mode)
        self.render_mode = render_mode
        self.obs_type = obs_type
        self._encode = _Encoder(obs_type, projection_seed)
        self._game = _Game(1, max_episode_steps)
        self.observation_space = self._encode.space
        self.action_space = spaces.Discrete(len(ACTIONS))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode from the layout; the game is deterministic, ``seed`` only seeds ``np_random``."""
        super().reset(seed=seed, options=options)
        self._game.reset(np.ones(1, dtype=bool))
        return self._encode(self._game.labels())[0], {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one move; no autoreset (call :meth:`reset` after the episode ends)."""
        reward, terminated, truncated = self._game.step(np.array([action], dtype=np.int64))
        obs = self._encode(self._game.labels())[0]
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        """The board as an upscaled (200, 400, 3) uint8 picture in ``rgb_array`` mode, else None."""
        if self.render_mode is None:
            gym.logger.warn("MazeGridEnv.render() called without render_mode='rgb_array'")
            return None
        return frame(self._game.labels()[0], scale=20)


def layout_image(scale: int = 20) -> np.ndarray:
    """The start of every episode as a (10*scale, 20*scale, 3) uint8 picture."""
    return frame(_Game(1, MAX_EPISODE_STEPS).labels()[0], scale)


def save_layout_figure(path: str | Path, scale: int = 20) -> None:
    """Save the layout picture with a colour legend and the enemies' patrol segments outlined."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    from matplotlib.patches import Patch, Rectangle

    fig = Figure(figsize=(10, 6.2))
    ax = fig.subplots()
    ax.imshow(layout_image(scale))
    names = ("empty", "agent", "enemy A", "enemy B", f"coin (+1) x{NUM_COINS}", f"poison (-1) x{NUM_POISONS}", "wall")
    handles = [Patch(facecolor=PALETTE[i] / 255, edgecolor="black", label=name) for i, name in enumerate(names)]
    for label, path_cells in zip((ENEMY_A, ENEMY_B), BOARD.patrols, strict=True):
        row, cols = int(path_cells[0]) // WIDTH, path_cells % WIDTH
        lo, hi = int(cols.min()), int(cols.max())
        colour = PALETTE[label] / 255
        ax.add_patch(Rectangle((lo * scale, row * scale), (hi - lo + 1) * scale, scale, fill=False, lw=3, ls="--",
                               edgecolor=colour))
        y = (row + 0.5) * scale
        ax.annotate("", xy=((hi + 0.5) * scale, y), xytext=((lo + 0.5) * scale, y),
                    arrowprops={"arrowstyle": "<->", "color": "white", "lw": 1.5})
    handles.append(Patch(facecolor="none", edgecolor="black", ls="--", label="enemy patrol segment"))
    ax.set_xticks(np.arange(WIDTH) * scale + scale / 2, [str(c) for c in range(WIDTH)], fontsize=7)
    ax.set_yticks(np.arange(HEIGHT) * scale + scale / 2, [str(r) for r in range(HEIGHT)], fontsize=7)
    ax.set_title(f"{ENV_ID}: {HEIGHT}x{WIDTH} grid, episodes truncated after {MAX_EPISODE_STEPS} steps")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=4, frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")



if __name__ == "__main__":
    save_layout_figure(sys.argv[1] if len(sys.argv) > 1 else "docs/mazegrid.png")
