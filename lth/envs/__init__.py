"""Environment factory: gymnasium ids -> batched TorchRL envs, with clear errors for unknown ids.

Every env is a gymnasium vector env in same-step autoreset mode wrapped by :class:`GymVectorEnv`:
gymnasium's ``SyncVectorEnv`` for ordinary ids (MinAtar's observations moved channels-first), the env's own
vectorised implementation for lth's envs (MazeGrid), numpy-batched ``CartPole-v1`` and ``Acrobot-v1`` (same
transitions and seeding as ``SyncVectorEnv``, see :mod:`lth.envs.native`), and ale-py's native ``AtariVectorEnv`` (frame
skip 4, 84x84 grey, 4-frame stack, no-op starts, sticky actions 0.25 as in ``ALE/*-v5``) for ``ALE/`` ids.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from torchrl.data import TensorSpec

from lth.envs.acrobot import AcrobotVectorEnv
from lth.envs.cartpole import CartPoleVectorEnv
from lth.envs.vector import GymVectorEnv
from lth.errors import ConfigError

NUMPY_ENVS = {"CartPole-v1": CartPoleVectorEnv, "Acrobot-v1": AcrobotVectorEnv}  # ids with an array-maths twin


def _register_pybullet() -> None:
    from lth.console import silenced_fd_output

    with silenced_fd_output():  # pybullet's C module prints "pybullet build time: ..." on import
        import pybullet  # noqa: F401
    import pybullet_envs_gymnasium  # noqa: F401 - importing registers the *BulletEnv-v0 ids


def _register_minatar() -> None:
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar.gym.register_envs()


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


# Registration on demand, keyed by a substring of the ids each one provides (imports are slow or noisy);
# lth's own ids are registered by ``import lth`` (lth.registration).
_REGISTRARS: dict[str, Callable[[], None]] = {
    "BulletEnv": _register_pybullet,
    "MinAtar/": _register_minatar,
    "ALE/": _register_ale,
}

#: The ids the shipped configs use; shown first when an id is unknown.
PAPER_ENV_IDS: tuple[str, ...] = (
    "CartPole-v1",
    "Acrobot-v1",
    "HalfCheetahBulletEnv-v0",
    "Walker2DBulletEnv-v0",
    "AntBulletEnv-v0",
    "HopperBulletEnv-v0",
    "lth/MazeGrid-v0",
    "MinAtar/Breakout-v1",
    "MinAtar/SpaceInvaders-v1",
    "MinAtar/Freeway-v1",
    "MinAtar/Asterix-v1",
    "MinAtar/Seaquest-v1",
    "ALE/Pong-v5",
)


#: The pip extra that installs each registrar's simulator (``pip install 'lth[pybullet]'``).
_EXTRAS: dict[str, str] = {"BulletEnv": "pybullet", "MinAtar/": "minatar", "ALE/": "atari"}


def _register(env_id: str) -> None:
    for marker, register in _REGISTRARS.items():
        if marker in env_id:
            try:
                register()
            except ImportError as exc:
                extra = _EXTRAS[marker]
                raise ConfigError(f"{env_id} needs the {extra} extra ({exc.name or exc} is not installed): "
                                  f"pip install 'lth[{extra}]'") from exc


def check_env_id(env_id: str) -> None:
    """Raise :class:`ConfigError` naming close matches and the paper's ids if ``env_id`` is not registered."""
    _register(env_id)
    if env_id in gym.registry:
        return
    for register in _REGISTRARS.values():
        with contextlib.suppress(ImportError):  # a simulator that is not installed has no ids to suggest
            register()
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown env id {env_id!r}.{hint} Valid ids are gymnasium ids, e.g. {', '.join(PAPER_ENV_IDS)}."
    )


def _channels_first(env: gym.Env) -> gym.Env:
    """MinAtar's (height, width, channels) booleans as (channels, height, width) float32 maps."""
    height, width, channels = env.observation_space.shape
    space = gym.spaces.Box(0.0, 1.0, (channels, height, width), np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: np.moveaxis(obs, -1, 0).astype(np.float32), space)


def _atari_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """ale-py's native batched Atari env with the standard DQN/PPO preprocessing, in same-step autoreset."""
    from ale_py.vector_env import AtariVectorEnv

    name = env_id.split("/", 1)[1].rsplit("-v", 1)[0]  # "ALE/SpaceInvaders-v5" -> "SpaceInvaders"
    game = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # ale-py's rom names are snake case
    settings = {"repeat_action_probability": 0.25, "reward_clipping": False, "num_threads": 1, **kwargs}
    return AtariVectorEnv(game, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **settings)


def gym_vector_env(env_id: str, num_envs: int, **env_kwargs: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` as a gymnasium vector env in same-step autoreset mode.

    ``env_kwargs`` go to the env's constructor (e.g. MazeGrid's ``obs_type``).
    """
    if env_id.startswith("ALE/"):
        return _atari_vector_env(env_id, num_envs, **env_kwargs)
    if env_id.startswith("lth/"):  # lth's own envs are vectorised natively (gymnasium's autoreset ones are not)
        return gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    if env_id in NUMPY_ENVS and set(env_kwargs) <= {"max_episode_steps"}:
        # numpy-batched, with SyncVectorEnv's per-copy seeding and transitions (other kwargs: the sync path)
        return NUMPY_ENVS[env_id](num_envs, **env_kwargs)
    return gym.make_vec(
        env_id,
        num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        wrappers=[_channels_first] if env_id.startswith("MinAtar/") else None,
        **env_kwargs,
    )


def make_env(
    env_id: str,
    num_envs: int = 1,
    seed: int | Sequence[int] | None = None,
    keep_inputs: Sequence[int] | None = None,
    **env_kwargs: Any,
) -> GymVectorEnv:
    """``num_envs`` copies of ``env_id`` as one batched TorchRL env, seeded once with ``seed``.

    An int seeds copy ``i`` with ``seed + i`` (gymnasium's rule); a sequence gives every copy its own seed.

    ``keep_inputs`` (also accepted inside a config's ``env_kwargs``) shows the agent only those flat
    observation indices and zeroes the rest; every other keyword goes to the env's constructor.
    """
    check_env_id(env_id)
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    try:
        vec = gym_vector_env(env_id, num_envs, **env_kwargs)
    except TypeError as exc:  # an unknown constructor keyword
        raise ConfigError(f"{env_id} does not accept env_kwargs {env_kwargs}: {exc}") from exc
    try:
        env = GymVectorEnv(vec, env_id, keep_inputs=keep_inputs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if isinstance(seed, Sequence):
        env.seed_copies(seed)
    elif seed is not None:
        env.set_seed(seed)
    return env


def env_shapes(env_id: str, **env_kwargs: Any) -> tuple[tuple[int, ...], TensorSpec]:
    """The per-copy observation shape and the batched action spec of ``env_id`` (networks are sized by them)."""
    probe = make_env(env_id, 1, **env_kwargs)
    obs_shape = tuple(probe.observation_spec["observation"].shape[1:])
    action_spec = probe.action_spec
    probe.close()
    return obs_shape, action_spec


__all__ = ["GymVectorEnv", "PAPER_ENV_IDS", "check_env_id", "env_shapes", "gym_vector_env", "make_env"]
