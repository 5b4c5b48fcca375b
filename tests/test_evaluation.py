import gymnasium as gym
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from lth.envs import make_env
from lth.rl.evaluation import evaluate_episodes


class AlwaysLeft(nn.Module):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[:-1], dtype=torch.int64)


def test_one_episode_per_copy_with_gymnasium_returns() -> None:
    policy = TensorDictModule(AlwaysLeft(), in_keys=["observation"], out_keys=["action"])
    returns = evaluate_episodes(make_env("CartPole-v1", 4, seed=5), policy)
    expected = []
    for i in range(4):
        env, total, done = gym.make("CartPole-v1"), 0.0, False
        env.reset(seed=5 + i)
        while not done:
            _, r, term, trunc, _ = env.step(0)
            total, done = total + r, term or trunc
        expected.append(total)
    assert returns.tolist() == expected


def test_policy_sees_the_current_observation(monkeypatch) -> None:
    seen: list[TensorDictBase] = []
    module = TensorDictModule(AlwaysLeft(), in_keys=["observation"], out_keys=["action"])

    def spy(td: TensorDictBase) -> TensorDictBase:
        seen.append(td["observation"].clone())
        return module(td)

    evaluate_episodes(make_env("CartPole-v1", 1, seed=0), spy)
    assert len(seen) > 5 and not torch.equal(seen[0], seen[1])
