"""The one statistical rule behind every published claim: the seed is the unit, the interval decides.

A claim compares per-seed numbers: paired differences where two conditions share a seed (a ticket minus a baseline
of the same study seed), or two independent groups (distillation against PPO). Its 95% percentile-bootstrap
confidence interval of the mean difference (:data:`RESAMPLES` resamples from a generator seeded with
:data:`BOOTSTRAP_SEED`, so the same data give the same interval, bit for bit) decides the verdict:

- ``holds``: the interval excludes zero in the paper's direction;
- ``reversed``: it excludes zero the other way;
- ``not resolved``: it contains zero, or fewer than :data:`MIN_SEEDS` seeds were measured.

Claims about counts ("in k of n seeds the cart inputs die first") use the exact (Clopper-Pearson) 95% interval of
the share of seeds: ``holds`` when it lies above one half (most seeds, beyond chance), ``reversed`` below one half.

Pure functions of numbers: no torch, no MLflow, no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: With five seeds or fewer, even every seed agreeing is not significant at 5% (two-sided sign test: 2/2^5 > 0.05),
#: and the percentile bootstrap's interval is too narrow: such comparisons are never called.
MIN_SEEDS = 6

Verdict = Literal["holds", "reversed", "not resolved"]


@dataclass(frozen=True)
class Interval:
    """A mean difference over ``n`` seeds with its 95% confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int

    def verdict(self, direction: int = 1) -> Verdict:
        """``holds`` when the interval excludes zero on the side of ``direction`` (+1: the difference should be
        positive, -1: negative), ``reversed`` on the other side, else ``not resolved``."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        if self.n < MIN_SEEDS or not (self.low > 0 or self.high < 0):
            return "not resolved"
        return "holds" if (self.low > 0) == (direction > 0) else "reversed"

    def text(self, digits: int = 1) -> str:
        """``12.3 [4.5, 20.1], n=15``."""
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}], n={self.n}"


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty list of per-seed values, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: per-seed values must be finite, got {array.tolist()}")
    return array


def _percentiles(means: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float]) -> Interval:
    """The mean of per-seed ``values`` (e.g. paired differences) and its 95% percentile-bootstrap interval."""
    array = _finite(values, "bootstrap_mean")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = array[rng.integers(0, array.size, size=(RESAMPLES, array.size))].mean(axis=1)
    return Interval(float(array.mean()), *_percentiles(means), n=int(array.size))


def paired(a: dict[int, float], b: dict[int, float]) -> Interval:
    """``a - b`` over the seeds both measured (per seed, then the bootstrap of the mean difference)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("paired: the two conditions share no seed")
    return bootstrap_mean([a[s] - b[s] for s in seeds])


def unpaired(a: Sequence[float], b: Sequence[float]) -> Interval:
    """``mean(a) - mean(b)`` for two independent groups of seeds, each resampled on its own; ``n`` is the smaller
    group's size."""
    x, y = _finite(a, "unpaired a"), _finite(b, "unpaired b")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = (x[rng.integers(0, x.size, size=(RESAMPLES, x.size))].mean(axis=1)
             - y[rng.integers(0, y.size, size=(RESAMPLES, y.size))].mean(axis=1))
    return Interval(float(x.mean() - y.mean()), *_percentiles(means), n=int(min(x.size, y.size)))


def _binomial_tail(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) (``upper``) or P(X <= k) for X ~ Binomial(n, p)."""
    ks = range(k, n + 1) if upper else range(k + 1)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in ks)


def _solve(f, target: float) -> float:
    """The p in [0, 1] where the increasing function ``f`` reaches ``target`` (bisection, to 1e-12)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < target else (low, mid)
    return (low + high) / 2


def share_interval(k: int, n: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of a share of ``k`` successes in ``n`` seeds."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"share_interval: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = (1 - CONFIDENCE) / 2
    low = 0.0 if k == 0 else _solve(lambda p: _binomial_tail(k, n, p, upper=True), alpha)
    high = 1.0 if k == n else _solve(lambda p: 1 - _binomial_tail(k, n, p, upper=False), 1 - alpha)
    return low, high


def share_verdict(k: int, n: int) -> Verdict:
    """``holds`` when most seeds meet the criterion beyond chance (the share's interval lies above 1/2),
    ``reversed`` when most fail it, else ``not resolved``."""
    low, high = share_interval(k, n)
    return "holds" if low > 0.5 else "reversed" if high < 0.5 else "not resolved"


def share_text(k: int, n: int) -> str:
    """``13 of 15 seeds (95% CI of the share 0.60-0.98)``."""
    low, high = share_interval(k, n)
    return f"{k} of {n} seeds (95% CI of the share {low:.2f}-{high:.2f})"
