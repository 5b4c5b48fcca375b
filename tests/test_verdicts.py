"""The statistical rule behind every published claim (lth.analysis.verdicts), on synthetic per-seed data."""

import math

import numpy as np
import pytest

from lth.analysis.verdicts import (
    MIN_SEEDS,
    Interval,
    bootstrap_mean,
    paired,
    share_interval,
    share_text,
    share_verdict,
    unpaired,
)

SEEDS = range(15)


def test_a_clear_paired_win_holds_and_a_clear_loss_is_reversed():
    rng = np.random.default_rng(1)
    baseline = {s: float(v) for s, v in zip(SEEDS, rng.normal(100, 30, 15))}
    ticket = {s: baseline[s] + 50 + float(rng.normal(0, 5)) for s in SEEDS}  # every seed gains ~50
    win = paired(ticket, baseline)
    assert win.low > 0 and win.verdict(+1) == "holds"
    assert win.verdict(-1) == "reversed"
    loss = paired(baseline, ticket)
    assert loss.high < 0 and loss.verdict(+1) == "reversed"


def test_overlapping_data_are_not_resolved():
    rng = np.random.default_rng(2)
    a = {s: float(v) for s, v in zip(SEEDS, rng.normal(300, 100, 15))}
    b = {s: float(v) for s, v in zip(SEEDS, rng.normal(300, 100, 15))}
    value = paired(a, b)
    assert value.low < 0 < value.high
    assert value.verdict(+1) == value.verdict(-1) == "not resolved"


def test_pairing_uses_the_seeds_both_measured_and_the_per_seed_differences():
    value = paired({0: 5.0, 1: 7.0, 2: 9.0, 9: 100.0}, {0: 1.0, 1: 2.0, 2: 3.0, 5: -100.0})
    assert value.n == 3 and value.mean == pytest.approx((4 + 5 + 6) / 3)
    with pytest.raises(ValueError, match="share no seed"):
        paired({0: 1.0}, {1: 1.0})


def test_few_seeds_are_never_called_even_when_all_agree():
    agree = [10.0 + s for s in range(MIN_SEEDS - 1)]
    assert bootstrap_mean(agree).low > 0
    assert bootstrap_mean(agree).verdict(+1) == "not resolved"
    assert bootstrap_mean([*agree, 12.0]).verdict(+1) == "holds"


def test_the_interval_is_reproducible_and_a_percentile_of_resampled_means():
    values = [3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 6.0]
    first, second = bootstrap_mean(values), bootstrap_mean(values)
    assert first == second
    assert min(values) < first.low < first.mean < first.high < max(values)
    assert first.mean == pytest.approx(np.mean(values))
    # identical differences: a zero-width interval at that value
    assert bootstrap_mean([2.5] * 8) == Interval(2.5, 2.5, 2.5, 8)
    assert bootstrap_mean([0.0] * 8).verdict(+1) == "not resolved"


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean([1.0, math.nan])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="direction"):
        bootstrap_mean([1.0] * 8).verdict(0)


def test_unpaired_groups_resample_independently():
    rng = np.random.default_rng(3)
    low, high = rng.normal(-2.0, 0.2, 15), rng.normal(-1.0, 0.2, 10)
    value = unpaired(low.tolist(), high.tolist())
    assert value.n == 10 and value.high < 0 and value.verdict(-1) == "holds"
    same = unpaired(rng.normal(0, 1, 15).tolist(), rng.normal(0, 1, 15).tolist())
    assert same.verdict(-1) == "not resolved"


def test_shares_of_seeds_use_the_exact_interval():
    # Clopper-Pearson, known values: 5 of 5 -> [0.025^(1/5), 1], 0 of 5 -> [0, 1 - 0.025^(1/5)]
    assert share_interval(5, 5) == pytest.approx((0.025 ** 0.2, 1.0), abs=1e-9)
    assert share_interval(0, 5) == pytest.approx((0.0, 1 - 0.025 ** 0.2), abs=1e-9)
    low, high = share_interval(7, 10)  # scipy.stats.binomtest(7, 10).proportion_ci(): (0.3475, 0.9333)
    assert (low, high) == pytest.approx((0.34752, 0.93325), abs=1e-4)
    assert share_verdict(15, 15) == "holds"
    assert share_verdict(5, 5) == "not resolved"  # five of five is still within chance of a coin
    assert share_verdict(1, 5) == "not resolved"  # one of five is not "partly holds"
    assert share_verdict(0, 15) == "reversed"
    assert share_verdict(8, 15) == "not resolved"
    assert share_text(13, 15).startswith("13 of 15 seeds (95% CI of the share 0.6")
    with pytest.raises(ValueError):
        share_interval(6, 5)
