import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Categorical as CategoricalSpec
from torchrl.envs import ExplorationType, set_exploration_type

from lth.envs import make_env
from lth.errors import ConfigError
from lth.rl.agents import make_actor, make_critic, resolve_distribution


def test_discrete_head_samples_valid_actions_and_greedy_is_argmax() -> None:
    spec = make_env("CartPole-v1", 1).action_spec
    actor = make_actor(4, spec, [16], resolve_distribution(spec, None))  # a population of one: [1, batch]
    td = TensorDict(observation=torch.randn(1, 32, 4), batch_size=[1, 32])
    out = actor(td.clone())
    assert out["action"].dtype == torch.int64 and set(out["action"].flatten().tolist()) <= {0, 1}
    assert torch.all(out["action_log_prob"] <= 0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        greedy = actor(td.clone())
    assert torch.equal(greedy["action"], greedy["logits"].argmax(-1))


def test_continuous_head_stays_in_bounds_and_mean_is_deterministic() -> None:
    spec = make_env("HopperBulletEnv-v0", 1).action_spec
    actor = make_actor(15, spec, [16], resolve_distribution(spec, None))
    td = TensorDict(observation=10 * torch.randn(1, 64, 15), batch_size=[1, 64])
    out = actor(td.clone())
    assert out["action"].shape == (1, 64, 3)
    assert torch.all(out["action"].abs() <= 1.0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first, second = actor(td.clone())["action"], actor(td.clone())["action"]
    assert torch.equal(first, second)


def _last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def test_critic_outputs_one_value_per_state_read_from_its_own_observation() -> None:
    critic = make_critic(4, [8])
    obs = torch.randn(1, 5, 4)
    values = critic(TensorDict(observation=obs, batch_size=[1, 5]))["state_value"]
    assert values.shape == (1, 5, 1) and values.unique().numel() == 5  # different states, different values
    alone = critic(TensorDict(observation=obs[:, 2:3], batch_size=[1, 1]))["state_value"]
    torch.testing.assert_close(alone, values[:, 2:3])  # a state's value does not depend on the rest of the batch
    with torch.no_grad():
        _last_linear(critic).weight.zero_()
        _last_linear(critic).bias.fill_(3.5)
    assert torch.all(critic(TensorDict(observation=obs, batch_size=[1, 5]))["state_value"] == 3.5)


#: Hand-set logits of a 4-action categorical policy and their softmax probabilities.
LOGITS = torch.tensor([1.0, 0.0, -1.0, 2.0])
PROBS = torch.tensor([0.2369, 0.0871, 0.0321, 0.6439])  # exp(l) / sum(exp(l)), to 4 places


def _four_action_actor() -> torch.nn.Module:
    """A categorical actor whose logits are LOGITS for every observation."""
    actor = make_actor(3, CategoricalSpec(4, shape=(1,)), [8], "categorical")
    with torch.no_grad():
        _last_linear(actor).weight.zero_()
        _last_linear(actor).bias.copy_(LOGITS)
    return actor


@pytest.mark.parametrize("path", ["actor", "lean"])
def test_categorical_policy_samples_its_softmax_and_reports_its_log_probability(path: str) -> None:
    """The ProbabilisticActor and the lean acting path both sample softmax(logits), report the log-probability
    torch.distributions.Categorical gives the sampled action, and act by argmax under deterministic exploration."""
    from lth.rl.agents import acting_policy

    actor = _four_action_actor()
    if path == "actor":  # a population of one: [1, batch] in, flattened here
        def policy(td: TensorDict) -> TensorDict:
            return actor(td.reshape(1, -1)).reshape(-1)
    else:
        policy = acting_policy(actor)  # flat member-major batches
    td = TensorDict(observation=torch.randn(20_000, 3), batch_size=[20_000])
    torch.manual_seed(0)
    with set_exploration_type(ExplorationType.RANDOM):
        out = policy(td.clone())
    torch.testing.assert_close(out["logits"], LOGITS.expand(20_000, 4))
    frequencies = torch.bincount(out["action"], minlength=4).float() / 20_000
    assert torch.all((frequencies - PROBS).abs() < 0.015), frequencies
    reference = torch.distributions.Categorical(logits=out["logits"]).log_prob(out["action"])
    torch.testing.assert_close(out["action_log_prob"], reference)
    torch.testing.assert_close(out["action_log_prob"], PROBS.log()[out["action"]], atol=0, rtol=2e-3)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        greedy = policy(td[:100].clone())
    assert torch.all(greedy["action"] == 3)  # the largest logit
    torch.testing.assert_close(greedy["action_log_prob"], PROBS[3].log().expand(100), atol=0, rtol=2e-3)


def test_epsilon_greedy_acting_explores_with_probability_eps() -> None:
    """eps = 0.4, 4 actions: the greedy action with probability 0.6 + 0.4/4 = 0.7, each other one 0.1."""
    from lth.rl.agents import EpsilonGreedyActing

    net = torch.nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 5.0, 1.0, -1.0]))  # action 1 is greedy everywhere
    torch.manual_seed(0)
    out = EpsilonGreedyActing(net, 4, eps=0.4)(TensorDict(observation=torch.randn(20_000, 3), batch_size=[20_000]))
    frequencies = torch.bincount(out["action"], minlength=4).float() / 20_000
    assert torch.all((frequencies - torch.tensor([0.1, 0.7, 0.1, 0.1])).abs() < 0.015), frequencies
    torch.testing.assert_close(out["action_value"], net.bias.detach().expand(20_000, 4))


def test_distribution_that_does_not_fit_the_env_is_refused() -> None:
    discrete = make_env("CartPole-v1", 1).action_spec
    with pytest.raises(ConfigError, match=r"continuous|discrete.*valid: \['categorical'\]"):
        resolve_distribution(discrete, "tanh_normal", "CartPole-v1")
    continuous = make_env("HopperBulletEnv-v0", 1).action_spec
    with pytest.raises(ConfigError, match="tanh_normal"):
        resolve_distribution(continuous, "categorical", "HopperBulletEnv-v0")


def test_lean_acting_path_matches_the_probabilistic_actor() -> None:
    from lth.rl.agents import CategoricalActing, MemberActing, acting_policy

    spec = make_env("CartPole-v1", 1).action_spec
    actor = make_actor(4, spec, [16], "categorical")
    acting = acting_policy(actor)
    assert isinstance(acting, CategoricalActing)
    td = TensorDict(observation=torch.randn(64, 4), batch_size=[64])  # flat, member-major
    fast = acting(td.clone())
    reference = actor.log_prob(fast.clone().reshape(1, -1))  # the actor's log-probability of the very actions sampled
    torch.testing.assert_close(fast["action_log_prob"], reference.reshape(-1))
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(acting(td.clone())["action"], actor(td.clone().reshape(1, -1))["action"].reshape(-1))
    continuous = make_env("HopperBulletEnv-v0", 1).action_spec
    tanh_actor = make_actor(15, continuous, [16], "tanh_normal")
    viewed = acting_policy(tanh_actor)
    assert isinstance(viewed, MemberActing) and viewed.actor is tanh_actor


def test_a_continuous_population_member_explores_with_its_own_generator_only() -> None:
    """Member 0's exploring actions are the same whoever its population mates are, the global generator is not
    drawn from, and the pre-tanh values are the actor's Gaussian: (atanh(action) - loc) / scale ~ N(0, 1); the
    reported log-probability is the actor's for that action."""
    from lth.rl.agents import acting_policy

    spec = make_env("HopperBulletEnv-v0", 1).action_spec
    seeds = [5, 6]
    generators = lambda: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731 - fresh, so both agree
    torch.manual_seed(0)
    actor = make_actor(15, spec, [16], "tanh_normal", members=2, generators=generators)
    obs = TensorDict(observation=torch.randn(2 * 5000, 15), batch_size=[2 * 5000])

    def act(mate_seed: int) -> TensorDict:
        seeds[1] = mate_seed
        with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
            return acting_policy(actor)(obs.clone())

    global_state = torch.get_rng_state()
    out, other = act(6), act(7)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(out["action"][:5000], other["action"][:5000])  # member 0: its own seed only
    assert not torch.equal(out["action"][5000:], other["action"][5000:])  # member 1: its own seed
    noise = (torch.atanh(out["action"].clamp(-1 + 1e-6, 1 - 1e-6)) - out["loc"]) / out["scale"]
    assert abs(noise.mean().item()) < 0.03 and abs(noise.std().item() - 1) < 0.03
    with torch.no_grad():
        reference = actor.log_prob(out.clone().reshape(2, 5000)).reshape(-1)
    unsaturated = out["action"].abs().amax(-1) < 0.99  # where atanh inverts the action exactly
    torch.testing.assert_close(out["action_log_prob"][unsaturated], reference[unsaturated], atol=1e-4, rtol=1e-4)
