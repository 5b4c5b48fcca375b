import gymnasium as gym
import pytest
import torch
from torchrl.data import Bounded, Categorical
from torchrl.envs.utils import check_env_specs

from lth.envs import make_env
from lth.errors import ConfigError


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


def test_continuous_pybullet_env_has_bounded_actions() -> None:
    env = make_env("HopperBulletEnv-v0", 1, seed=0)
    assert isinstance(env.action_spec, Bounded)
    assert env.action_spec.shape == torch.Size([1, 3])
    td = env.rand_step(env.reset())
    assert td["next", "observation"].shape == (1, 15)
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
