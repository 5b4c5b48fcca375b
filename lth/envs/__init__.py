"""Environment factory: gymnasium ids -> batched TorchRL envs, with clear errors for unknown ids."""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym

from lth.envs.vector import GymVectorEnv
from lth.errors import ConfigError

# Packages whose import registers extra gymnasium ids, keyed by a substring of the ids they provide.
_REGISTRARS: dict[str, str] = {"BulletEnv": "pybullet_envs_gymnasium"}

#: The ids the shipped configs use; shown first when an id is unknown.
PAPER_ENV_IDS: tuple[str, ...] = (
    "CartPole-v1",
    "Acrobot-v1",
    "HalfCheetahBulletEnv-v0",
    "Walker2DBulletEnv-v0",
    "AntBulletEnv-v0",
    "HopperBulletEnv-v0",
)


def _register(env_id: str) -> None:
    for marker, package in _REGISTRARS.items():
        if marker in env_id:
            importlib.import_module(package)


def check_env_id(env_id: str) -> None:
    """Raise :class:`ConfigError` naming close matches and the paper's ids if ``env_id`` is not registered."""
    _register(env_id)
    if env_id in gym.registry:
        return
    for package in _REGISTRARS.values():
        importlib.import_module(package)
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown env id {env_id!r}.{hint} Valid ids are gymnasium ids, e.g. {', '.join(PAPER_ENV_IDS)}."
    )


def make_env(env_id: str, num_envs: int = 1, seed: int | None = None) -> GymVectorEnv:
    """``num_envs`` copies of ``env_id`` as one batched TorchRL env, seeded once with ``seed``."""
    check_env_id(env_id)
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    env = GymVectorEnv(env_id, num_envs)
    if seed is not None:
        env.set_seed(seed)
    return env


__all__ = ["GymVectorEnv", "PAPER_ENV_IDS", "check_env_id", "make_env"]
