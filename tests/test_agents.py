import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import ExplorationType, set_exploration_type

from lth.agents import make_actor, make_critic, resolve_distribution
from lth.envs import make_env
from lth.errors import ConfigError


def test_discrete_head_samples_valid_actions_and_greedy_is_argmax() -> None:
    spec = make_env("CartPole-v1", 1).action_spec
    actor = make_actor(4, spec, [16], resolve_distribution(spec, None))
    td = TensorDict(observation=torch.randn(32, 4), batch_size=[32])
    out = actor(td.clone())
    assert out["action"].dtype == torch.int64 and set(out["action"].tolist()) <= {0, 1}
    assert torch.all(out["action_log_prob"] <= 0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        greedy = actor(td.clone())
    assert torch.equal(greedy["action"], greedy["logits"].argmax(-1))


def test_continuous_head_stays_in_bounds_and_mean_is_deterministic() -> None:
    spec = make_env("HopperBulletEnv-v0", 1).action_spec
    actor = make_actor(15, spec, [16], resolve_distribution(spec, None))
    td = TensorDict(observation=10 * torch.randn(64, 15), batch_size=[64])
    out = actor(td.clone())
    assert out["action"].shape == (64, 3)
    assert torch.all(out["action"].abs() <= 1.0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first, second = actor(td.clone())["action"], actor(td.clone())["action"]
    assert torch.equal(first, second)


def test_critic_outputs_one_value_per_state() -> None:
    critic = make_critic(4, [8])
    assert critic(TensorDict(observation=torch.randn(5, 4), batch_size=[5]))["state_value"].shape == (5, 1)


def test_distribution_that_does_not_fit_the_env_is_refused() -> None:
    discrete = make_env("CartPole-v1", 1).action_spec
    with pytest.raises(ConfigError, match=r"continuous|discrete.*valid: \['categorical'\]"):
        resolve_distribution(discrete, "tanh_normal", "CartPole-v1")
    continuous = make_env("HopperBulletEnv-v0", 1).action_spec
    with pytest.raises(ConfigError, match="tanh_normal"):
        resolve_distribution(continuous, "categorical", "HopperBulletEnv-v0")


def test_lean_acting_path_matches_the_probabilistic_actor() -> None:
    from lth.agents import CategoricalActing, acting_policy

    spec = make_env("CartPole-v1", 1).action_spec
    actor = make_actor(4, spec, [16], "categorical")
    acting = acting_policy(actor)
    assert isinstance(acting, CategoricalActing)
    td = TensorDict(observation=torch.randn(64, 4), batch_size=[64])
    fast = acting(td.clone())
    reference = actor.log_prob(fast.clone())  # the actor's log-probability of the very actions sampled
    torch.testing.assert_close(fast["action_log_prob"], reference)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(acting(td.clone())["action"], actor(td.clone())["action"])
    continuous = make_env("HopperBulletEnv-v0", 1).action_spec
    tanh_actor = make_actor(15, continuous, [16], "tanh_normal")
    assert acting_policy(tanh_actor) is tanh_actor
