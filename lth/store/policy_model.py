"""Loadable tickets: an agent's greedy policy as an MLflow pyfunc model linked to its IMP level run.

``mlflow.pyfunc.load_model(uri).predict(observations)`` then returns the actions evaluation takes: the argmax
of the logits or Q-values, or a tanh-Gaussian's deterministic sample (its squashed mean). The model stores
a small spec and the acting network's state dict, and rebuilds the network with lth's own builders, so its
forward pass is the training code's. Observations are what :func:`lth.envs.make_env` gives the agent (float32,
MinAtar channels first); inputs an env hid with ``keep_inputs`` are zeroed here too.

This module imports MLflow (its :class:`TicketPolicy` subclasses ``PythonModel``): ``import lth`` does not
import it. Loading a ticket needs torch, TorchRL and lth, not Lightning.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded, Categorical
from torchrl.envs import ExplorationType, set_exploration_type

from lth.rl.agents import acting_policy, build_network, is_discrete, make_actor, resolve_distribution
from lth.rl.batched import member_tensors, stack_members
from lth.rl.networks import NetworkSpec

if TYPE_CHECKING:
    from lth.modules import AgentModule

#: Per acting network (the sub-module evaluation acts through), the hyperparameter holding its hidden widths.
ACTING_NETWORKS = {"actor": "actor_hidden", "q_net": "hidden", "student": "hidden"}
#: The tag of a level run naming its logged policy's model URI.
POLICY_TAG = "lth.policy_uri"
#: The artifact key (``context.artifacts``) of the saved spec.
SPEC_FILE = "policy"
#: MLflow's switch for its artifact progress bar (save_model "downloads" the spec file into the model folder).
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: The model's code (MLflow's models from code: no pickled Python objects in the model).
MODEL_CODE = """from mlflow.models import set_model

from lth.store.policy_model import TicketPolicy

set_model(TicketPolicy())
"""


def policy_spec(model: AgentModule, member: int = 0, weights: Mapping[str, torch.Tensor] | None = None
                ) -> dict[str, Any]:
    """What rebuilds member ``member``'s greedy policy without the env: shapes, builders' options and its acting
    network's solo state dict (plain types and tensors, so ``torch.load(weights_only=True)`` reads it).

    The weights are the model's current ones, or ``weights``: member ``member``'s parameters under the module's
    ``named_parameters()`` names in solo shapes (e.g. :meth:`lth.callbacks.PruningCallback.member_trained_weights`).
    """
    name = next(n for n in model.network_names if n in ACTING_NETWORKS)
    hp = model.hparams
    state = getattr(model, name).state_dict()
    # Pruned weights are already zero in the trained parameters (the masks were applied in place): no masks needed.
    if weights is not None:
        state = {n: weights[f"{name}.{n}"].detach().clone() for n in state}
    else:
        state = member_tensors(state, member)
    spec = model.action_spec
    q_values = name == "q_net" or hp.get("imitate") == "q_values"
    env_kwargs = dict(hp.get("env_kwargs") or {})
    keep = env_kwargs.get("keep_inputs")
    return {
        "env_id": hp["env_id"],
        "env_kwargs": {k: v for k, v in env_kwargs.items() if k != "keep_inputs"},
        "obs_shape": list(model.obs_shape),
        "hidden": list(hp[ACTING_NETWORKS[name]]),
        "network": asdict(model.network_spec),
        "distribution": None if q_values else resolve_distribution(spec, hp.get("distribution"), hp["env_id"]),
        "num_actions": int(spec.n) if is_discrete(spec) else None,
        "low": None if is_discrete(spec) else spec.space.low[0].tolist(),
        "high": None if is_discrete(spec) else spec.space.high[0].tolist(),
        "keep_inputs": None if keep is None else [int(i) for i in keep],
        "state_dict": {n: t.cpu() for n, t in state.items()},
    }


def build_policy(spec: Mapping[str, Any]) -> nn.Module:
    """The acting module of a :func:`policy_spec` with its weights, in eval mode (a population of one): a Q-network,
    or the policy that evaluation acts with (:func:`lth.rl.agents.acting_policy` over
    :func:`lth.rl.agents.make_actor`)."""
    network = NetworkSpec(**spec["network"])
    obs_shape = tuple(spec["obs_shape"])
    state = stack_members([spec["state_dict"]])
    if spec["distribution"] is None:
        module: nn.Module = build_network(obs_shape, spec["num_actions"], spec["hidden"], network)
        module.load_state_dict(state)
        return module.eval()
    if spec["num_actions"] is not None:  # the probe env's batched spec, as lth.envs.env_shapes gives it
        action_spec = Categorical(spec["num_actions"], shape=(1,), dtype=torch.int64)
    else:
        low, high = torch.tensor([spec["low"]]), torch.tensor([spec["high"]])
        action_spec = Bounded(low=low, high=high, shape=low.shape, dtype=torch.float32)
    actor = make_actor(obs_shape, action_spec, spec["hidden"], spec["distribution"], network)
    actor.load_state_dict(state)
    return acting_policy(actor).eval()


def greedy_actions(policy: nn.Module, spec: Mapping[str, Any], observations: np.ndarray) -> np.ndarray:
    """The actions evaluation takes (``ExplorationType.DETERMINISTIC``) for observations ``[N, *obs_shape]`` or one
    observation: int64 indices ``[N]`` or float32 actions ``[N, action_dim]`` (no batch dim for one)."""
    obs_shape = tuple(spec["obs_shape"])
    obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
    single = obs.shape == obs_shape
    obs = obs.reshape(-1, *obs_shape)
    if spec["keep_inputs"] is not None:  # what lth.envs.GymVectorEnv's keep_inputs shows the agent
        visible = torch.zeros(math.prod(obs_shape))
        visible[spec["keep_inputs"]] = 1.0
        obs = obs * visible.reshape(obs_shape)
    with torch.no_grad():
        if spec["distribution"] is None:
            action = policy(obs.unsqueeze(0))[0].argmax(-1)  # lth.rl.agents.EpsilonGreedyActing's greedy action
        else:
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                action = policy(TensorDict({"observation": obs}, batch_size=obs.shape[:1])).get("action")
    out = action.numpy()
    return out[0] if single else out


class TicketPolicy(mlflow.pyfunc.PythonModel):
    """A ticket's greedy policy as an MLflow model: observations in, the actions evaluation takes out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.spec = torch.load(context.artifacts[SPEC_FILE], weights_only=True)
        self.policy = build_policy(self.spec)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> np.ndarray:
        """Greedy actions for ``model_input`` ``[N, *obs_shape]`` (a DataFrame: one flat observation per row)."""
        return greedy_actions(self.policy, self.spec, np.asarray(model_input))


def _signature(spec: Mapping[str, Any]) -> ModelSignature:
    """Observations ``[N, *obs_shape]`` float32 in; int64 actions ``[N]`` or float32 ``[N, action_dim]`` out."""
    if spec["num_actions"] is not None:
        actions = TensorSpec(np.dtype(np.int64), (-1,))
    else:
        actions = TensorSpec(np.dtype(np.float32), (-1, len(spec["low"])))
    observations = TensorSpec(np.dtype(np.float32), (-1, *spec["obs_shape"]))
    return ModelSignature(inputs=Schema([observations]), outputs=Schema([actions]))


def log_policy(model: AgentModule, member: int, run_id: str, tracking_uri: str,
               weights: Mapping[str, torch.Tensor] | None = None) -> str:
    """Log member ``member``'s greedy policy (its current weights, or ``weights`` as :func:`policy_spec` takes
    them) as an MLflow logged model linked to the run ``run_id`` (an output of it; the run's tag
    ``lth.policy_uri`` names it) and return its URI ``models:/m-...``.

    Cheap (no requirement inference, no input example): one per member and level of a study.
    """
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    spec = policy_spec(model, member, weights)
    tags = {key: run.data.tags[key] for key in ("condition", "seed", "level") if key in run.data.tags}
    logged = client.create_logged_model(run.info.experiment_id, name="policy", source_run_id=run_id,
                                        tags={**tags, "env_id": spec["env_id"]}, model_type="lth-policy")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec_path, code_path = Path(tmp) / "policy.pt", Path(tmp) / "ticket_policy.py"
            torch.save(spec, spec_path)
            code_path.write_text(MODEL_CODE)
            local = Path(tmp) / "model"
            mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            # quiet: the signature says what an input example would; copying the spec file is no download
            bar = os.environ.get(PROGRESS_BAR)
            os.environ[PROGRESS_BAR] = "0"
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", ".*An input example was not provided")
                    mlflow.pyfunc.save_model(
                        local, python_model=str(code_path), artifacts={SPEC_FILE: str(spec_path)},
                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "lth"],
                        signature=_signature(spec), mlflow_model=mlflow_model,
                        metadata={"env_id": spec["env_id"], "env_kwargs": spec["env_kwargs"]},
                    )
            finally:
                os.environ.pop(PROGRESS_BAR) if bar is None else os.environ.__setitem__(PROGRESS_BAR, bar)
            client.log_model_artifacts(logged.model_id, str(local))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    uri = f"models:/{logged.model_id}"
    client.set_tag(run_id, POLICY_TAG, uri)
    return uri


class Ticket(NamedTuple):
    """The best finished level run of a condition at one level (density) of an IMP study, and its policy."""

    condition: str
    level: int
    density: float
    best_return: float
    model_uri: str
    run_id: str


def best_tickets(tracking_uri: str, experiment: str, condition: str | None = None) -> list[Ticket]:
    """Per condition and level, the finished level run with the best ``ticket/best_return`` among an experiment's
    chains (its seeds) that logged a policy; per condition, densest first."""
    from lth.store.chain_store import ChainStore
    from lth.store.tracking import quoted  # here: it imports Lightning, which loading a ticket does not need

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.`{ChainStore.COMPLETE}` = 'true' and tags.`{POLICY_TAG}` LIKE 'models:/%'"
    if condition is not None:
        query += f" and tags.`condition` = {quoted(condition)}"
    best: dict[tuple[str, int], Ticket] = {}
    page_token = None
    while True:
        runs = client.search_runs([found.experiment_id], query, max_results=1000, page_token=page_token)
        for run in runs:
            metrics, tags = run.data.metrics, run.data.tags
            score = metrics.get("ticket/best_return", math.nan)
            ticket = Ticket(tags["condition"], int(tags["level"]), metrics["density"], score, tags[POLICY_TAG],
                            run.info.run_id)
            key = (ticket.condition, ticket.level)
            if key not in best or score > best[key].best_return or math.isnan(best[key].best_return):
                best[key] = ticket
        page_token = runs.token
        if not page_token:
            break
    return sorted(best.values(), key=lambda t: (t.condition, t.level))
