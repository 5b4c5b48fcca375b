"""What lth's own numpy-vectorised envs (MazeGrid, CartPole) share: the checks of their vector options."""

from __future__ import annotations

from gymnasium.vector import AutoresetMode


def check_vector_options(env_name: str, num_envs: int, autoreset_mode: AutoresetMode | str) -> None:
    """``num_envs`` >= 1 and same-step autoreset, the only mode lth's batched TorchRL env steps."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if autoreset_mode not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
        raise ValueError(f"{env_name} only supports autoreset_mode=AutoresetMode.SAME_STEP, got {autoreset_mode!r}")
