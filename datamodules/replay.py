"""Off-policy data: a TorchRL collector filling a prioritized replay buffer, one sampled minibatch per batch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictPrioritizedReplayBuffer

from lth.errors import ConfigError
from lth.rl.domains import check_domains
from lth.rl.schedules import linear_schedule

from .envs import EnvDataModule

#: What a transition keeps in replay (the acting path's extras are dropped).
TRANSITION_KEYS: tuple[Any, ...] = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
)


def updates_due(frames: int, warmup_frames: int, replay_ratio: float, batch_size: int) -> int:
    """Gradient updates owed after ``frames`` collected frames.

    ``replay_ratio`` is rlpyt's (the paper's framework) data replay ratio: sampled transitions per collected
    transition, so each update of ``batch_size`` transitions is due every ``batch_size / replay_ratio``
    frames once the buffer holds ``warmup_frames``.
    """
    if frames < warmup_frames:
        return 0
    return math.floor((frames - warmup_frames) * replay_ratio / batch_size)


class ReplayStream:
    """Collects chunks into the buffer and yields the updates they pay for, each a TensorDict with batch size [].

    Each item holds ``sample`` (each member's prioritized minibatch, stacked ``[members, batch_size]``, with the
    transitions' buffer ``index`` and importance weights ``priority_weight``) and ``new_frames`` (env frames of all
    members collected since the previous item). The stream knows nothing of the learner's loss: the learner reaches
    the buffers as the training dataloader's :attr:`buffers` and writes member k's new priorities with
    ``buffers[k].update_priority(sample["index"][k], priorities[k])``, as TorchRL's own training loops do.
    Lightning fetches the next item only after the step because the stream has a length (no prefetching), so
    each minibatch is drawn after the previous update's priorities are written.

    Each member (one for an ordinary agent) keeps its transitions, priorities and importance weights to itself:
    the collector's member-major chunk ``[members * num_envs, steps]`` goes to the buffers member by member. The
    update schedule and beta follow each member's frames (what it would see alone).
    """

    def __init__(
        self, collector: Iterable[TensorDictBase],
        buffers: Sequence[TensorDictPrioritizedReplayBuffer],
        dm: ReplayDataModule,
    ) -> None:
        self.collector = collector
        #: One prioritized buffer per member.
        self.buffers = list(buffers)
        if not self.buffers:
            raise ValueError("a replay stream needs at least one buffer")
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.total_updates

    def __iter__(self) -> Iterator[TensorDictBase]:
        hp = self.dm.hparams
        members = len(self.buffers)
        collected = updates = pending = 0  # collected: per member; pending: over all members
        for chunk in self.collector:
            if chunk.numel() % members:
                raise ValueError(f"a chunk of {chunk.numel()} frames does not split over {members} members")
            transitions = chunk.select(*TRANSITION_KEYS)
            # member-major env copies: member k's are rows k * num_envs ... (k + 1) * num_envs - 1
            for buffer, own in zip(self.buffers, transitions.reshape(members, -1).unbind(0), strict=True):
                buffer.extend(own)
            collected += chunk.numel() // members
            pending += chunk.numel()
            beta = linear_schedule(hp.beta_start, hp.beta_end, self.dm.total_frames, collected)
            for buffer in self.buffers:
                buffer.sampler.beta = beta
            while updates < updates_due(collected, hp.warmup_frames, hp.replay_ratio, hp.batch_size):
                sample = torch.stack([buffer.sample() for buffer in self.buffers])
                yield TensorDict({"sample": sample, "new_frames": torch.tensor(pending)}, batch_size=[])
                pending = 0
                updates += 1


class ReplayDataModule(EnvDataModule):
    """``num_envs`` batched envs stepped ``collect_steps`` at a time into a prioritized replay buffer.

    Paper Tables 8 and 11: buffer of ``buffer_size`` transitions, priority exponent ``alpha`` 0.6, importance
    exponent ``beta`` annealed from ``beta_start`` to ``beta_end`` over the fit's frames, minibatches of
    ``batch_size``, data replay ratio ``replay_ratio``, learning after ``warmup_frames``. One Lightning batch
    is one gradient update; frames, not epochs, bound a fit.

    ``seed`` a list makes a population's data (one seed per member, see :class:`EnvDataModule`): ``num_envs``
    env copies and a buffer of ``buffer_size`` per member, from which only that member samples (see
    :class:`ReplayStream`); ``total_frames`` and the other sizes are per member. When the module gives its
    members generators (``AgentModule.seed_members``), each buffer samples with its member's.
    """

    def __init__(
        self,
        env_id: str = "CartPole-v1",
        num_envs: PositiveInt = 8,
        collect_steps: PositiveInt = 8,
        total_frames: PositiveInt = 100_000,
        buffer_size: PositiveInt = 100_000,
        batch_size: PositiveInt = 256,
        replay_ratio: PositiveFloat = 4.0,
        warmup_frames: NonNegativeInt = 5_000,
        alpha: ClosedUnitInterval = 0.6,
        beta_start: ClosedUnitInterval = 0.4,
        beta_end: ClosedUnitInterval = 1.0,
        eval_every: PositiveInt = 10_000,
        eval_episodes: PositiveInt = 10,
        seed: int | list[int] = 0,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_domains(ReplayDataModule, dict(self.hparams))
        if warmup_frames < batch_size:
            raise ConfigError(f"warmup_frames ({warmup_frames}) must be at least batch_size ({batch_size})")
        if warmup_frames > buffer_size:
            raise ConfigError(f"warmup_frames ({warmup_frames}) must not exceed buffer_size ({buffer_size})")
        self.frames_per_batch = num_envs * collect_steps
        self.total_frames = math.ceil(total_frames / self.frames_per_batch) * self.frames_per_batch
        self.total_updates = updates_due(self.total_frames, warmup_frames, replay_ratio, batch_size)
        if self.total_updates < 1:
            raise ConfigError(f"total_frames ({total_frames}) leave no updates after warmup_frames ({warmup_frames})")

    @property
    def eval_interval(self) -> int:
        """Updates between evaluations (Lightning's ``val_check_interval``)."""
        hp = self.hparams
        return max(1, min(self.total_updates, round(hp.eval_every * hp.replay_ratio / hp.batch_size)))

    def make_buffer(self, generator: torch.Generator | None = None) -> TensorDictPrioritizedReplayBuffer:
        """An empty prioritized buffer; its storage is allocated on the first write and then written in place.

        New transitions enter with the largest priority so far; the learner sets priorities after each update.
        It samples with ``generator`` when given (TorchRL's public ``generator`` option), else with the global RNG.
        """
        hp = self.hparams
        return TensorDictPrioritizedReplayBuffer(
            alpha=hp.alpha,
            beta=hp.beta_start,
            storage=LazyTensorStorage(hp.buffer_size),
            batch_size=hp.batch_size,
            generator=generator,
        )

    def train_dataloader(self) -> ReplayStream:
        members = self.members
        collector = self.make_collector(self.frames_per_batch * members, self.total_frames * members)
        module = getattr(self.trainer, "lightning_module", None)
        generators = getattr(module, "member_generators", lambda: None)()
        if generators is None or len(generators) != members:
            generators = [None] * members
        return ReplayStream(collector, [self.make_buffer(g) for g in generators], self)
