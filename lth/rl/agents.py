"""Actor and critic builders on TorchRL primitives, shaped by an env's specs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictModuleBase
from torch import nn
from torch.distributions import Categorical
from torchrl.data import Categorical as CategoricalSpec
from torchrl.data import TensorSpec
from torchrl.envs import ExplorationType, exploration_type
from torchrl.modules import ProbabilisticActor, QValueActor, TanhNormal, ValueOperator

from lth.errors import ConfigError
from lth.rl.batched import member_major, members_of
from lth.rl.networks import NetworkSpec

ObsShape = int | Sequence[int]

DISCRETE_DISTRIBUTIONS: tuple[str, ...] = ("categorical",)
CONTINUOUS_DISTRIBUTIONS: tuple[str, ...] = ("tanh_normal",)
#: The network a builder makes when none is given: an MLP, tanh, Kaiming (PyTorch's default) init.
DEFAULT_NETWORK = NetworkSpec()


def is_discrete(action_spec: TensorSpec) -> bool:
    """True for index-valued (Discrete) action spaces."""
    return isinstance(action_spec, CategoricalSpec)


def resolve_distribution(action_spec: TensorSpec, requested: str | None, env_id: str = "env") -> str:
    """The policy distribution for ``action_spec``; a mismatching request is a :class:`ConfigError`."""
    valid = DISCRETE_DISTRIBUTIONS if is_discrete(action_spec) else CONTINUOUS_DISTRIBUTIONS
    if requested is None:
        return valid[0]
    if requested not in valid:
        kind = "discrete" if is_discrete(action_spec) else "continuous"
        raise ConfigError(
            f"distribution {requested!r} does not fit {env_id}, whose actions are {kind}; valid: {list(valid)}"
        )
    return requested


def build_network(
    obs_shape: ObsShape, out_features: int, hidden: Sequence[int], network: NetworkSpec = DEFAULT_NETWORK,
    members: int = 1,
) -> nn.Sequential:
    """A population's network (``members`` of them, batched; one: an ordinary agent's) for observations of
    ``obs_shape``, built and initialised as ``network`` describes: inputs and outputs lead with the member dim."""
    shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
    return network.build(shape, out_features, hidden, members=members)


#: A population's members' own random generators, as a callable: they are (re)seeded after the networks are built
#: (``AgentModule.seed_members``); ``None`` from it means the global generator.
Generators = Callable[[], Sequence[torch.Generator] | None]


def make_actor(
    obs_shape: ObsShape,
    action_spec: TensorSpec,
    hidden: Sequence[int],
    distribution: str,
    network: NetworkSpec = DEFAULT_NETWORK,
    members: int = 1,
    generators: Generators | None = None,
) -> ProbabilisticActor:
    """A stochastic policy reading ``observation`` and writing ``action`` and ``action_log_prob``.

    Discrete actions: a categorical over logits. Continuous: a tanh-squashed Gaussian whose mean and
    (softplus) scale come from the network, bounded by the action spec; each member draws its noise from its own
    generator when ``generators`` are given (:class:`MemberTanhNormal`).
    """
    if distribution == "categorical":
        net = build_network(obs_shape, int(action_spec.n), hidden, network, members)
        module = TensorDictModule(net, in_keys=["observation"], out_keys=["logits"])
        return ProbabilisticActor(
            module, in_keys=["logits"], distribution_class=Categorical, spec=action_spec, return_log_prob=True
        )
    act_dim = action_spec.shape[-1]
    net = build_network(obs_shape, 2 * act_dim, hidden, network, members)
    module = TensorDictModule(
        nn.Sequential(net, NormalParamExtractor()), in_keys=["observation"], out_keys=["loc", "scale"]
    )
    bounds = {"low": action_spec.space.low[0], "high": action_spec.space.high[0]}
    per_member = generators is not None
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=MemberTanhNormal if per_member else TanhNormal,
        distribution_kwargs={**bounds, "generators": generators} if per_member else bounds,
        spec=action_spec,
        return_log_prob=True,
    )


class MemberTanhNormal(TanhNormal):
    """TorchRL's ``TanhNormal`` over a population's batched outputs (``loc`` ``[members, ...]``) whose samples take
    member k's standard-normal noise from member k's own generator, so both its actions and the Monte-Carlo entropy
    estimate of TorchRL's PPO loss (a tanh-Gaussian has no closed form) depend on its seed only, not on the one
    global generator its population mates share. Scoring is TanhNormal's own; with no generators it is TanhNormal.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, generators: Generators | None = None,
                 **kwargs: Any) -> None:
        self.generators = generators
        super().__init__(loc, scale, **kwargs)

    def _gaussian_draw(self, sample_shape: Sequence[int]) -> torch.Tensor | None:
        """``loc + scale * noise`` of shape ``sample_shape + loc.shape``, member k's noise from its generator."""
        generators = self.generators() if self.generators is not None else None
        if generators is None:
            return None
        gaussian, shape = self.root_dist, torch.Size(sample_shape)
        members, rest = gaussian.loc.shape[0], gaussian.loc.shape[1:]
        noise = _per_member(lambda n, g: torch.randn(n, generator=g), shape.numel() * gaussian.loc.numel(), generators)
        return gaussian.loc + gaussian.scale * noise.reshape(members, *shape, *rest).movedim(0, len(shape))

    def _squash_and_score(self, preimage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The action of a Gaussian draw and its log-probability, as ``TanhNormal.rsample_and_log_prob`` scores."""
        transform = self.transforms[0]
        sample = transform(preimage)
        jacobian, event_dims = transform.log_abs_det_jacobian(preimage, sample), len(self.event_shape)
        log_det = jacobian.flatten(-event_dims).sum(-1) if event_dims else jacobian
        return sample, self.base_dist.log_prob(preimage) - log_det

    def rsample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        preimage = self._gaussian_draw(sample_shape)
        return super().rsample(sample_shape) if preimage is None else self.transforms[0](preimage)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        preimage = self._gaussian_draw(sample_shape)
        return super().rsample_and_log_prob(sample_shape) if preimage is None else self._squash_and_score(preimage)

    def sample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        preimage = self._gaussian_draw(sample_shape)
        if preimage is None:
            return super().sample_and_log_prob(sample_shape)
        sample, log_prob = self._squash_and_score(preimage.detach())
        return sample.detach(), log_prob


class CategoricalActing(TensorDictModuleBase):
    """The acting path of a categorical ``ProbabilisticActor``: the same logits network, one call per step.

    Written by hand because building a distribution object per env step is a large share of TorchRL's
    per-step cost on cheap envs; it writes the same keys (``logits``, ``action``, ``action_log_prob``), samples
    under random exploration and takes the argmax (the distribution's mode) under deterministic exploration.
    Training still goes through the ``ProbabilisticActor`` and TorchRL's loss.

    A population's agents act on a flat, member-major batch of env copies (``[members * copies]``, see
    :func:`lth.rl.batched.member_major`). When ``generators()`` returns one generator per member, member k samples
    from its own (so its actions depend on its seed only, not on its population mates).
    """

    def __init__(self, logits_net: nn.Module, generators: Generators | None = None) -> None:
        super().__init__()
        self.net = logits_net
        self.generators = generators
        self.in_keys = ["observation"]
        self.out_keys = ["logits", "action", "action_log_prob"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        logits = member_major(self.net, tensordict.get("observation"))
        log_probs = logits.log_softmax(-1)
        if exploration_type() in (ExplorationType.DETERMINISTIC, ExplorationType.MODE):
            action = logits.argmax(-1)
        else:
            action = self._sample(log_probs)
        tensordict.set("logits", logits)
        tensordict.set("action", action)
        tensordict.set("action_log_prob", log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1))
        return tensordict

    def _sample(self, log_probs: torch.Tensor) -> torch.Tensor:
        probs = log_probs.exp().reshape(-1, log_probs.shape[-1])
        generators = self.generators() if self.generators is not None else None
        if generators is None:
            try:
                return torch.multinomial(probs, 1).reshape(log_probs.shape[:-1])
            except RuntimeError:  # non-finite logits (diverged weights): those rows act uniformly (see below)
                return torch.multinomial(_finite_rows(probs), 1).reshape(log_probs.shape[:-1])
        # inverse-CDF sampling with each member's own uniforms
        probs = _finite_rows(probs)
        uniform = _per_member(lambda n, g: torch.rand(n, generator=g), probs.shape[0], generators)
        cdf = probs.cumsum(-1)
        action = (cdf < uniform.unsqueeze(-1) * cdf[:, -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)
        return action.reshape(log_probs.shape[:-1])


def _finite_rows(probs: torch.Tensor) -> torch.Tensor:
    """Rows with a non-finite entry (diverged weights) become uniform, free of cost until then; their NaN
    log-probs carry the divergence to the learner's next update."""
    return torch.where(torch.isfinite(probs).all(-1, keepdim=True), probs, 1.0)


class MemberActing(TensorDictModuleBase):
    """A population's actor on a flat, member-major batch of env copies: ``[members * copies]`` in and out,
    ``[members, copies]`` inside (e.g. a tanh-Gaussian ``ProbabilisticActor`` of batched networks, whose
    :class:`MemberTanhNormal` draws each member's noise from its own generator)."""

    def __init__(self, actor: TensorDictModuleBase) -> None:
        super().__init__()
        self.actor = actor
        self.in_keys = list(actor.in_keys)
        self.out_keys = list(actor.out_keys)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.actor(tensordict.reshape(members_of(self.actor), -1))
        return tensordict.update(out.reshape(tensordict.batch_size))


def _per_member(draw: Callable[[int, torch.Generator], torch.Tensor], total: int,
                generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``draw(n, generator)`` for each member's equal share of ``total`` copies, from its own generator, in member
    order."""
    if total % len(generators):
        raise ValueError(f"{total} env copies do not split evenly over {len(generators)} members")
    return torch.cat([draw(total // len(generators), g) for g in generators])


def acting_policy(actor: ProbabilisticActor, generators: Generators | None = None) -> TensorDictModuleBase:
    """What collectors and evaluation act with, on flat member-major batches: the lean categorical path when it
    applies, else the actor viewed member-major."""
    if actor.module[-1].distribution_class is Categorical:
        return CategoricalActing(actor.module[0].module, generators)
    return MemberActing(actor)


def make_critic(obs_shape: ObsShape, hidden: Sequence[int], network: NetworkSpec = DEFAULT_NETWORK,
                members: int = 1) -> ValueOperator:
    """A state-value network reading ``observation`` and writing ``state_value``."""
    return ValueOperator(build_network(obs_shape, 1, hidden, network, members), in_keys=["observation"])


def make_q_actor(q_net: nn.Module, action_spec: TensorSpec) -> QValueActor:
    """TorchRL's Q-value actor over ``q_net`` (``action_value``, greedy ``action``), as ``DQNLoss`` expects."""
    if not is_discrete(action_spec):
        raise ConfigError(f"DQN needs discrete actions, got {type(action_spec).__name__} actions")
    per_copy = CategoricalSpec(int(action_spec.n), dtype=torch.int64)  # one action per transition, any batch
    return QValueActor(q_net, in_keys=["observation"], spec=per_copy, action_space="categorical")


class EpsilonGreedyActing(TensorDictModuleBase):
    """Greedy actions of ``q_net``, each replaced by a uniform random action with probability ``eps``.

    Written by hand (like :class:`CategoricalActing`) because it is the per-step acting path, and because the
    paper's evaluation epsilon (0.001) must also act during evaluation, where TorchRL's ``EGreedyModule``
    switches itself off. ``eps`` is a buffer the owning module sets from its schedule. A population acts on a
    flat, member-major batch as :class:`CategoricalActing` does, each member exploring with its own generator
    when ``generators()`` gives them.
    """

    def __init__(self, q_net: nn.Module, num_actions: int, eps: float = 1.0, generators: Generators | None = None
                 ) -> None:
        super().__init__()
        self.net = q_net
        self.num_actions = num_actions
        self.generators = generators
        self.register_buffer("eps", torch.tensor(float(eps)))
        self.in_keys = ["observation"]
        self.out_keys = ["action_value", "action"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        values = member_major(self.net, tensordict.get("observation"))
        action = values.argmax(-1)
        generators = self.generators() if self.generators is not None else None
        if generators is None:
            explore = torch.rand(action.shape) < self.eps
            random = torch.randint(self.num_actions, action.shape)
        else:
            explore = _per_member(lambda n, g: torch.rand(n, generator=g), action.numel(), generators)
            random = _per_member(lambda n, g: torch.randint(self.num_actions, (n,), generator=g), action.numel(),
                                 generators)
            explore, random = explore.reshape(action.shape) < self.eps, random.reshape(action.shape)
        tensordict.set("action_value", values)  # what a distillation student imitates
        tensordict.set("action", torch.where(explore, random, action))
        return tensordict
