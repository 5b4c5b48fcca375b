"""Gymnasium ids of lth's own environments, registered by ``import lth``.

The entry points are strings, so registering imports only gymnasium: the env module (and numpy-heavy code)
loads when an env is made, and pybullet/ALE/MinAtar are registered on demand by :mod:`lth.envs`.
"""

from __future__ import annotations

MAZEGRID_ID = "lth/MazeGrid-v0"


def register_envs() -> None:
    """Register ``lth/MazeGrid-v0`` (single and vector entry points) with gymnasium; safe to call again."""
    import gymnasium as gym

    if MAZEGRID_ID in gym.registry:
        return
    gym.register(
        id=MAZEGRID_ID,
        entry_point="lth.envs.mazegrid:MazeGridEnv",
        vector_entry_point="lth.envs.mazegrid:MazeGridVectorEnv",
        # the spec states the horizon (lth.envs.maze_board.MAX_EPISODE_STEPS, a test keeps them equal): the env
        # truncates itself there, and gym.make's TimeLimit ends the same step
        max_episode_steps=200,
    )
