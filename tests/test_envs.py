import textwrap

import gymnasium as gym
import pytest
import torch
from torchrl.data import Bounded, Categorical
from torchrl.envs import ExplorationType, set_exploration_type
from torchrl.envs.utils import check_env_specs

from lth.envs import make_env
from lth.errors import ConfigError
from lth.rl.agents import acting_policy, make_actor


def test_cartpole_specs_match_data() -> None:
    env = make_env("CartPole-v1", 3, seed=0)
    check_env_specs(env)
    assert env.batch_size == torch.Size([3])
    assert isinstance(env.action_spec, Categorical) and env.action_spec.n == 2


def test_same_seed_same_trajectory() -> None:
    rollouts = []
    for _ in range(2):
        torch.manual_seed(0)  # random actions come from torch's generator, states from the env seed
        rollouts.append(make_env("CartPole-v1", 2, seed=7).rollout(50, break_when_any_done=False))
    ra, rb = rollouts
    torch.testing.assert_close(ra["observation"], rb["observation"])


def test_final_observation_and_partial_reset_match_gymnasium() -> None:
    """The done step reports the true last state; the partial reset returns the next episode's start."""
    env = make_env("CartPole-v1", 2, seed=11)
    td = env.reset()
    ref = [gym.make("CartPole-v1") for _ in range(2)]
    obs = [torch.as_tensor(r.reset(seed=11 + i)[0]) for i, r in enumerate(ref)]
    torch.testing.assert_close(td["observation"], torch.stack(obs))
    for _ in range(200):  # always push left: both poles fall within a few dozen steps
        td["action"] = torch.zeros(2, dtype=torch.int64)
        td, nxt = env.step_and_maybe_reset(td)
        steps = [r.step(0) for r in ref]
        torch.testing.assert_close(td["next", "observation"], torch.stack([torch.as_tensor(s[0]) for s in steps]))
        done = td["next", "done"].squeeze(-1)
        assert done.tolist() == [s[2] or s[3] for s in steps]
        if done.any():
            assert torch.all(nxt["observation"][done].abs() <= 0.05)  # a fresh CartPole start state
            return
        td = nxt
    pytest.fail("no episode ended")


@pytest.mark.parametrize("env_id, obs_dim, act_dim, bound", [
    ("HopperBulletEnv-v0", 15, 3, 1.0),
    ("HalfCheetahBulletEnv-v0", 26, 6, 1.0),
    ("Walker2DBulletEnv-v0", 22, 6, 1.0),
    ("AntBulletEnv-v0", 28, 8, 1.0),
    ("Pendulum-v1", 3, 1, 2.0),  # torque in [-2, 2]: the actor must not squash it into [-1, 1]
])
def test_continuous_envs_have_bounded_actions_and_the_actor_acts_within_them(env_id: str, obs_dim: int,
                                                                             act_dim: int, bound: float) -> None:
    env = make_env(env_id, 2, seed=0)
    spec = env.action_spec
    assert isinstance(spec, Bounded) and spec.shape == torch.Size([2, act_dim])
    assert torch.all(spec.space.low == -bound) and torch.all(spec.space.high == bound)
    actor = make_actor(obs_dim, spec, [16], "tanh_normal")
    last = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)][-1]  # writes loc, then scale
    loc = 5.0 * (-1.0) ** torch.arange(act_dim)  # +5, -5, ...: tanh(5) = 0.9999, close to the bounds
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()  # scale = biased softplus(0) = 1
        last.bias[0, :act_dim] = loc  # member 0 of a population of one
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        rollout = env.rollout(40, acting_policy(actor), break_when_any_done=False)
    actions = rollout["action"]
    assert rollout["next", "observation"].shape == (2, 40, obs_dim)
    assert torch.all(actions.abs() <= bound)
    assert torch.all(actions * loc > 0)  # loc +-5 with scale 1: on the other side of 0 with p = 3e-7
    assert actions.abs().max() > 0.95 * bound  # spans the whole range, up to the bounds
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        greedy = acting_policy(actor)(env.reset())["action"]
    torch.testing.assert_close(greedy, (bound * torch.tanh(loc)).expand(2, act_dim))
    env.close()


def test_unknown_env_id_names_close_matches_and_paper_ids() -> None:
    with pytest.raises(ConfigError) as err:
        make_env("CartPol-v1")
    assert "CartPole-v1" in str(err.value) and "HalfCheetahBulletEnv-v0" in str(err.value)


def test_minatar_observations_are_channels_first_maps_of_the_game_state() -> None:
    import minatar.gym  # noqa: F401 - registered by make_env; imported here for the reference env

    env = make_env("MinAtar/Breakout-v1", 2, seed=3)
    td = env.reset()
    reference = gym.make("MinAtar/Breakout-v1")
    raw, _ = reference.reset(seed=3)
    assert td["observation"].shape == (2, 4, 10, 10)  # Breakout: 4 channels of 10x10
    assert set(td["observation"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(td["observation"][0], torch.from_numpy(raw).permute(2, 0, 1).float())
    check_env_specs(env)


def test_atari_frames_are_stacked_84x84_grey_pixels_with_same_step_resets() -> None:
    env = make_env("ALE/Pong-v5", 2, seed=0)
    assert env.observation_spec["observation"].shape == (2, 4, 84, 84)
    td = env.reset()
    for _ in range(3):
        td, td_next = env.step_and_maybe_reset(env.rand_action(td))
        td = td_next
    obs = td["observation"]
    assert obs.min() >= 0 and obs.max() <= 255 and obs.max() > 0
    assert not torch.equal(obs[:, 0], obs[:, -1])  # the stack holds four different frames


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "lth/MazeGrid-v0"])
def test_torchrls_gym_wrapper_steps_lths_own_vector_envs_as_gymnasiums_sync_ones(env_id: str) -> None:
    """lth's native vector envs carry ``autoreset_mode`` as gymnasium's do, so TorchRL's ``GymWrapper`` wraps them;
    under it they give the rollout gymnasium's ``SyncVectorEnv`` of the single env gives, autoresets included."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    from torchrl.envs import GymWrapper

    from lth.envs import gym_vector_env

    native = gym_vector_env(env_id, 3)
    assert native.autoreset_mode is AutoresetMode.SAME_STEP
    sync = gym.make_vec(env_id, 3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    rollouts = []
    for vec in (native, sync):
        wrapped = GymWrapper(vec)
        wrapped.set_seed(5)
        torch.manual_seed(0)  # the random actions
        rollouts.append(wrapped.rollout(300, break_when_any_done=False))
    ours, theirs = rollouts
    assert ours.batch_size == (3, 300)
    for key in ("observation", ("next", "observation"), ("next", "reward"), ("next", "done")):
        torch.testing.assert_close(ours[key].float(), theirs[key].float(), msg=str(key))
    if env_id == "CartPole-v1":
        assert ours["next", "done"].sum() > 10  # random play ends episodes: the autoresets were compared too


def test_a_missing_simulator_is_one_line_naming_its_extra() -> None:
    """pybullet, MinAtar and ALE are extras (``lth[pybullet]``, ``lth[minatar]``, ``lth[atari]``), loaded when an env
    of theirs is made: without one, making its env says which extra to install, and other ids still work."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys
        for name in ("pybullet", "pybullet_envs_gymnasium", "minatar", "ale_py"):
            sys.modules[name] = None  # not installed
        from lth.envs import make_env
        from lth.errors import ConfigError
        for env_id in ("HopperBulletEnv-v0", "MinAtar/Breakout-v1", "ALE/Pong-v5"):
            try:
                make_env(env_id, 1)
            except ConfigError as exc:
                print(exc)
        make_env("CartPole-v1", 1)
        try:
            make_env("CartPol-v1", 1)
        except ConfigError as exc:
            print("unknown:", "CartPole-v1" in str(exc))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split(" needs ")[1].split(" (")[0] for line in out[:3]] == [
        "the pybullet extra", "the minatar extra", "the atari extra"]
    assert out[0].endswith("pip install 'lth[pybullet]'") and out[2].endswith("pip install 'lth[atari]'")
    assert out[3] == "unknown: True"
