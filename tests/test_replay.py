"""Prioritized replay stream: update schedule, |TD error| priorities, importance weights and the beta schedule."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tensordict import TensorDict

from lth.datamodules import ReplayDataModule
from lth.datamodules.replay import ReplayStream, updates_due
from lth.errors import ConfigError

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
    return ReplayStream(_chunks(chunks), buffer, dm), dm


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
        assert "logits" not in item["sample"].keys()
        item["sample"]["td_error"] = torch.ones(16)
    assert items == len(stream) == dm.total_updates == updates_due(40 * 32, 64, 4, 16)
    assert frames == 40 * 32  # the last chunk pays for at least one update, so nothing goes unreported


def test_priorities_favour_high_td_error_and_importance_weights_correct_for_it() -> None:
    stream, _ = _stream(200, warmup_frames=1024, buffer_size=8192)
    hot = lambda obs: (obs.reshape(-1) % 10) == 0  # noqa: E731 - every tenth transition has a large TD error
    picks: Counter[bool] = Counter()
    weights: dict[bool, list[float]] = {True: [], False: []}
    for item in stream:
        sample = item["sample"]
        is_hot = hot(sample["observation"])
        for flag, w in zip(is_hot.tolist(), sample["priority_weight"].tolist()):
            picks[flag] += 1
            weights[flag].append(w)
        # the loss writes the *squared* TD error; priorities become |delta| = 10 (hot) or 0.1 (others)
        sample["td_error"] = torch.where(is_hot, torch.tensor(100.0), torch.tensor(0.01))
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
        betas.append(stream.buffer.sampler.beta)
        item["sample"]["td_error"] = torch.ones(16)
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
