"""Loadable tickets: a policy logged as an MLflow model acts as the in-memory agent's evaluation does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import ExplorationType, set_exploration_type

from lth.modules import DQN, PPO, AgentModule
from lth.rl.batched import member_tensors
from lth.store import policy_model
from lth.store.chain_store import ChainStore
from lth.store.tracking import experiment_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sqlite store for the module (its schema is created once), also the global tracking URI that
    ``mlflow.pyfunc.load_model("models:/...")`` resolves against."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    folder = tmp_path_factory.mktemp("policy_store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the store's default artifact root is ./mlruns of the folder it is created in
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
        with _use_tracking_uri(uri):
            yield uri


def new_run(uri: str, tags: dict[str, str] | None = None) -> str:
    client = mlflow.MlflowClient(uri)
    return client.create_run(experiment_id(client, "tickets"), tags=tags or {}).info.run_id


def prune(model: AgentModule, fraction: float = 0.5) -> None:
    """Zero a random ``fraction`` of every weight matrix (what applying masks leaves in the trained weights), and
    the biases, so that the observations rather than a fresh network's biases decide the actions."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.mul_(torch.rand_like(param) >= fraction if name.endswith("weight") else 0)


def eval_actions(model: AgentModule, obs: torch.Tensor) -> np.ndarray:
    """The actions ``model``'s evaluation takes on ``obs`` (a population's: member-major, one row per member)."""
    model.eval()
    batch = obs.repeat(model.members, *[1] * (obs.dim() - 1))
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        action = model.eval_policy(TensorDict({"observation": batch}, batch_size=batch.shape[:1])).get("action")
    return action.reshape(model.members, len(obs), *action.shape[1:]).squeeze(0).numpy()


def logged_policy(model: AgentModule, uri: str, member: int = 0) -> mlflow.pyfunc.PyFuncModel:
    """Member ``member``'s policy logged and loaded back, after checking it holds that member's (pruned) weights."""
    model_uri = policy_model.log_policy(model, member, new_run(uri), uri)
    assert model_uri.startswith("models:/m-")
    loaded = mlflow.pyfunc.load_model(model_uri)
    loaded_state = loaded.unwrap_python_model().spec["state_dict"]
    name = next(n for n in model.network_names if n in policy_model.ACTING_NETWORKS)
    state = getattr(model, name).state_dict()
    expected = member_tensors(state, member)
    assert loaded_state.keys() == expected.keys()
    for key, value in expected.items():  # the pruned (zero) weights are in the logged model as zeros
        assert torch.equal(loaded_state[key], value), key
    return loaded


def test_ppo_discrete_ticket_acts_as_evaluation(store: str) -> None:
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[8])
    prune(model)
    obs = 5 * torch.randn(64, 4)
    loaded = logged_policy(model, store)
    actions = loaded.predict(obs.numpy())
    assert actions.dtype == np.int64 and actions.shape == (64,)
    assert len(set(actions.tolist())) == 2  # the observations are varied enough to tell the policies apart
    np.testing.assert_array_equal(actions, eval_actions(model, obs))
    np.testing.assert_array_equal(loaded.predict(pd.DataFrame(obs.numpy())), actions)  # one observation per row
    with pytest.raises(mlflow.exceptions.MlflowException, match="shape"):
        loaded.predict(obs[0].numpy())  # the signature asks for a batch [N, 4]


def test_ppo_continuous_ticket_acts_as_evaluation(store: str) -> None:
    model = PPO("Pendulum-v1", actor_hidden=[16], critic_hidden=[8])
    prune(model)
    obs = torch.randn(32, 3)
    actions = logged_policy(model, store).predict(obs.numpy())
    assert actions.dtype == np.float32 and actions.shape == (32, 1)
    assert np.abs(actions).max() <= 2.0 and actions.std() > 0  # squashed into Pendulum's [-2, 2], not constant
    np.testing.assert_allclose(actions, eval_actions(model, obs), rtol=0, atol=1e-6)


def test_dqn_ticket_acts_greedily(store: str) -> None:
    model = DQN("lth/MazeGrid-v0", env_kwargs={"obs_type": "objects"}, hidden=[32])
    prune(model)
    model.eval_policy.eps.fill_(0.0)  # evaluation's epsilon (eps_eval) aside, its action is the greedy one
    obs = (torch.rand(48, *model.obs_shape) < 0.2).float()
    actions = logged_policy(model, store).predict(obs.numpy())
    assert actions.dtype == np.int64 and len(set(actions.tolist())) > 1
    np.testing.assert_array_equal(actions, eval_actions(model, obs))
    np.testing.assert_array_equal(actions, model.q_net(obs[None])[0].argmax(-1).numpy())  # a population of one


def test_population_member_ticket_is_that_member(store: str) -> None:
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[8], members=3)
    prune(model)
    obs = 5 * torch.randn(64, 4)
    expected = eval_actions(model, obs)  # [members, 64]
    per_member = [logged_policy(model, store, member=k).predict(obs.numpy()) for k in (0, 2)]
    np.testing.assert_array_equal(per_member[0], expected[0])
    np.testing.assert_array_equal(per_member[1], expected[2])
    assert (per_member[0] != per_member[1]).any()


def test_given_weights_are_logged_not_the_current_ones(store: str) -> None:
    model = PPO("CartPole-v1", actor_hidden=[16, 16], critic_hidden=[8], members=2)
    prune(model)
    obs = 5 * torch.randn(64, 4)
    expected = eval_actions(model, obs)[1]
    # what PruningCallback.member_trained_weights(1) holds: member 1's parameters, named as the module names them
    trained = {name: p.detach()[1].clone() for name, p in model.named_parameters()}
    with torch.no_grad():  # the weights the next level starts from (rewound, newly masked)
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    model_uri = policy_model.log_policy(model, 1, new_run(store), store, weights=trained)
    actions = mlflow.pyfunc.load_model(model_uri).predict(obs.numpy())
    np.testing.assert_array_equal(actions, expected)
    assert (actions != eval_actions(model, obs)[1]).any()


def test_best_tickets_picks_each_levels_best_and_registers(store: str) -> None:
    model = PPO("CartPole-v1", actor_hidden=[8], critic_hidden=[8])
    client = mlflow.MlflowClient(store)
    runs = {}
    for level, seed, score in ((0, 0, 100.0), (0, 1, 300.0), (1, 0, 250.0), (1, 1, float("nan"))):
        tags = {"condition": "mask/weights", "seed": str(seed), "level": str(level), ChainStore.COMPLETE: "true"}
        run_id = new_run(store, tags)
        client.log_metric(run_id, "density", 0.8**level)
        client.log_metric(run_id, "ticket/best_return", score)
        runs[level, seed] = (run_id, policy_model.log_policy(model, 0, run_id, store))
    unfinished = new_run(store, {"condition": "mask/weights", "seed": "2", "level": "0"})
    client.log_metric(unfinished, "ticket/best_return", 500.0)
    client.log_metric(unfinished, "density", 1.0)
    policy_model.log_policy(model, 0, unfinished, store)
    tickets = policy_model.best_tickets(store, "tickets", condition="mask/weights")
    assert [(t.level, t.best_return, t.run_id, t.model_uri) for t in tickets] == [
        (0, 300.0, *runs[0, 1]), (1, 250.0, *runs[1, 0])]
    assert tickets[1].density == pytest.approx(0.8)
    assert policy_model.best_tickets(store, "tickets", condition="reinit") == []
    version = mlflow.register_model(tickets[0].model_uri, "cartpole-ticket")
    loaded = mlflow.pyfunc.load_model(f"models:/cartpole-ticket/{version.version}")
    obs = np.zeros((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), eval_actions(model, torch.from_numpy(obs)).reshape(1))


def test_log_policy_links_the_model_to_its_run(store: str) -> None:
    model = PPO("CartPole-v1", actor_hidden=[8], critic_hidden=[8])
    run_id = new_run(store, {"condition": "reinit", "level": "3"})
    uri = policy_model.log_policy(model, 0, run_id, store)
    client = mlflow.MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.tags[policy_model.POLICY_TAG] == uri
    assert [o.model_id for o in run.outputs.model_outputs] == [uri.removeprefix("models:/")]
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    assert logged.source_run_id == run_id and logged.status == "READY"
    assert logged.tags["condition"] == "reinit" and logged.tags["level"] == "3"
    assert Path(logged.artifact_location.removeprefix("file://"), "MLmodel").exists()
