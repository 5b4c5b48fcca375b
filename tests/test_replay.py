"""Prioritized replay: the stream's update schedule, importance weights and beta schedule, a stream that leaves
priorities to the learner, and the DQN learner setting them to |TD error|."""

from __future__ import annotations

import copy
from collections import Counter

import lightning as L
import pytest
import torch
from tensordict import TensorDict

from lth.datamodules import ReplayDataModule
from lth.datamodules.replay import ReplayStream, updates_due
from lth.errors import ConfigError
from lth.modules import DQN

NUM_ENVS, STEPS = 4, 8


def _chunks(n: int) -> list[TensorDict]:
    """``n`` fake collector batches of NUM_ENVS x STEPS transitions; observation = a running transition id."""
    out = []
    for k in range(n):
        ids = torch.arange(k * NUM_ENVS * STEPS, (k + 1) * NUM_ENVS * STEPS, dtype=torch.float32)
        obs = ids.reshape(NUM_ENVS, STEPS, 1)
        flag = torch.zeros(NUM_ENVS, STEPS, 1, dtype=torch.bool)
        out.append(TensorDict({
            "observation": obs, "action": torch.zeros(NUM_ENVS, STEPS, dtype=torch.int64),
            "logits": torch.zeros(NUM_ENVS, STEPS, 2),  # acting extras are not stored
            "next": {"observation": obs + 1, "reward": torch.ones(NUM_ENVS, STEPS, 1), "done": flag,
                     "terminated": flag},
        }, batch_size=[NUM_ENVS, STEPS]))
    return out


def _stream(chunks: int, **kwargs) -> tuple[ReplayStream, ReplayDataModule]:
    settings = dict(num_envs=NUM_ENVS, collect_steps=STEPS, total_frames=chunks * NUM_ENVS * STEPS, buffer_size=4096,
                    batch_size=16, replay_ratio=4, warmup_frames=64)
    dm = ReplayDataModule(**{**settings, **kwargs})
    buffer = dm.make_buffer()
    return ReplayStream(_chunks(chunks), [buffer], dm), dm  # one member's


def test_updates_follow_rlpyts_replay_ratio_after_warmup() -> None:
    assert updates_due(999, 1_000, 4, 256) == 0
    assert updates_due(1_000 + 64 * 10, 1_000, 4, 256) == 10  # one update per batch_size / ratio = 64 frames
    assert updates_due(1_000 + 63, 1_000, 4, 256) == 0


def test_stream_yields_its_length_and_reports_every_frame() -> None:
    stream, dm = _stream(40)
    frames, items = 0, 0
    for item in stream:
        frames += int(item["new_frames"])
        items += 1
        assert "logits" not in item["sample"].keys() and item["sample"].batch_size == (1, 16)
        stream.buffers[0].update_priority(item["sample"]["index"][0], torch.ones(16))
    assert items == len(stream) == dm.total_updates == updates_due(40 * 32, 64, 4, 16)
    assert frames == 40 * 32  # the last chunk pays for at least one update, so nothing goes unreported


def test_priorities_favour_high_td_error_and_importance_weights_correct_for_it() -> None:
    stream, _ = _stream(200, warmup_frames=1024, buffer_size=8192)
    hot = lambda obs: (obs.reshape(-1) % 10) == 0  # noqa: E731 - every tenth transition has a large TD error
    picks: Counter[bool] = Counter()
    weights: dict[bool, list[float]] = {True: [], False: []}
    for item in stream:
        sample = item["sample"][0]  # the one member's
        is_hot = hot(sample["observation"])
        for flag, w in zip(is_hot.tolist(), sample["priority_weight"].tolist()):
            picks[flag] += 1
            weights[flag].append(w)
        # what a learner does after its update: priorities |delta| = 10 (hot) or 0.1 (others)
        stream.buffers[0].update_priority(sample["index"], torch.where(is_hot, torch.tensor(10.0), torch.tensor(0.1)))
    hot_share = picks[True] / (picks[True] + picks[False])
    # uniform would be 10%; a sampled hot transition is 100**0.6 ~ 16x likelier than a sampled cold one (new,
    # never-sampled transitions enter with the maximum priority, which dilutes the share)
    assert hot_share > 0.35
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(weights[True]) < 0.5 * mean(weights[False])  # importance weights undo the over-sampling
    assert max(weights[False]) == pytest.approx(1.0, abs=1e-6)  # normalised by the largest weight


def test_beta_is_annealed_to_its_final_value_over_the_fit() -> None:
    stream, dm = _stream(40, beta_start=0.4, beta_end=1.0)
    betas = []
    for item in stream:
        betas.append(stream.buffers[0].sampler.beta)
        stream.buffers[0].update_priority(item["sample"]["index"][0], torch.ones(16))
    assert betas[0] == pytest.approx(0.4 + 0.6 * 96 / dm.total_frames)  # after the warm-up and first chunk
    assert betas == sorted(betas) and betas[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, problem", [
    (dict(warmup_frames=10, batch_size=64), "at least batch_size"),
    (dict(warmup_frames=5_000, buffer_size=1_000), "must not exceed buffer_size"),
    (dict(total_frames=1_000, warmup_frames=1_000), "no updates"),
])
def test_bad_settings_are_config_errors(kwargs, problem) -> None:
    with pytest.raises(ConfigError, match=problem):
        ReplayDataModule(**kwargs)


def _tree(buffer, index: torch.Tensor) -> torch.Tensor:
    """The sampler's stored priorities (p + eps) ** alpha of the transitions at ``index``."""
    tree = buffer.sampler._sum_tree
    return torch.tensor([tree[int(i)] for i in index.reshape(-1)])


def test_the_stream_leaves_priorities_to_the_learner() -> None:
    stream, dm = _stream(10)
    sampler = stream.buffers[0].sampler
    fresh = (1.0 + sampler._eps) ** dm.hparams.alpha  # what a never-updated transition holds (max priority 1)
    seen = []
    for item in stream:
        seen.append(item["sample"]["index"])
        assert "td_error" not in item["sample"].keys()
    index = torch.cat(seen)
    torch.testing.assert_close(_tree(stream.buffers[0], index), torch.full((index.numel(),), fresh))


def test_batches_may_move_to_another_device() -> None:
    stream, dm = _stream(4)
    item = next(iter(stream))
    moved = dm.transfer_batch_to_device(item, torch.device("meta"), 0)  # Lightning's default transfer: a copy
    assert moved["sample", "observation"].device.type == "meta"
    assert item["sample", "observation"].device.type == "cpu"


class TDErrorProbe(L.Callback):
    """Before each DQN step, the double-Q TD error of the sampled batch computed by hand; after it, checks that the
    buffer holds (|delta| + eps) ** alpha for those transitions."""

    def __init__(self, gamma: float, alpha: float) -> None:
        self.gamma, self.alpha = gamma, alpha
        self.checked = 0

    def on_train_start(self, trainer: L.Trainer, model: DQN) -> None:
        self.target = copy.deepcopy(model.q_net)  # the target starts as the online net and is not synced again

    def on_train_batch_start(self, trainer: L.Trainer, model: DQN, batch: TensorDict, batch_idx: int) -> None:
        sample = batch["sample"]
        with torch.no_grad():
            q = model.q_net(sample["observation"]).gather(-1, sample["action"].unsqueeze(-1)).squeeze(-1)
            next_action = model.q_net(sample["next", "observation"]).argmax(-1, keepdim=True)
            bootstrap = self.target(sample["next", "observation"]).gather(-1, next_action).squeeze(-1)
            not_done = (~sample["next", "terminated"]).float().squeeze(-1)
            delta = q - (sample["next", "reward"].squeeze(-1) + self.gamma * not_done * bootstrap)
        self.index = sample["index"].clone()
        self.expected = ((delta.abs() + trainer.train_dataloader.buffers[0].sampler._eps) ** self.alpha).reshape(-1)

    def on_train_batch_end(self, trainer: L.Trainer, model: DQN, outputs, batch: TensorDict, batch_idx: int) -> None:
        stored = _tree(trainer.train_dataloader.buffers[0], self.index)
        torch.testing.assert_close(stored, self.expected.float(), rtol=1e-4, atol=1e-6)
        self.checked += 1


def test_the_dqn_learner_sets_sampled_priorities_to_its_absolute_td_error() -> None:
    L.seed_everything(0)
    dm = ReplayDataModule("CartPole-v1", num_envs=4, collect_steps=8, total_frames=512, buffer_size=1_000,
                          batch_size=32, replay_ratio=4, warmup_frames=256, eval_every=512, eval_episodes=1)
    model = DQN("CartPole-v1", hidden=[16], gamma=0.9, target_update_interval=10_000)
    probe = TDErrorProbe(gamma=0.9, alpha=dm.hparams.alpha)
    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
              callbacks=[probe]).fit(model, dm)
    assert probe.checked == dm.total_updates == 32
