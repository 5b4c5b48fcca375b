"""The one style of every results figure: the paper's log-density axis with readable ticks, 95% confidence bands of
the mean clipped to the task's return range, a title naming the setting, and one fixed colour per condition (the
MLflow UI's, :func:`lth.store.ui_views.condition_colour`).

Figures are drawn from per-seed data (:class:`lth.analysis.per_seed.PerSeed`): ``make results-offline`` redraws
docs/RESULTS.md's from the committed files on a fresh clone, ``lth report`` its own from MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lth.analysis.per_seed import PerSeed
from lth.analysis.verdicts import bootstrap_mean, paired
from lth.callbacks import condition_names
from lth.report import figures as plt
from lth.store.ui_views import condition_colour

#: Density ticks a reader can place: the paper's log axis, labelled at round fractions.
DENSITY_TICKS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
DPI = 110


def density_axis(ax, densities: Sequence[float]) -> None:
    """A log density axis, dense on the left, ticked at :data:`DENSITY_TICKS` within the data's range."""
    low, high = min(densities), max(densities)
    ax.set_xscale("log")
    ax.set_xlim(high * 1.15, low / 1.15)  # inverted: pruning moves right
    ticks = [t for t in DENSITY_TICKS if low / 1.15 <= t <= high * 1.15]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("density (fraction of the pruned weights kept, log scale)")


def _save(fig, ax, path: Path, title: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no matplotlib version in the file: same bytes again
    plt.close(fig)


def return_vs_density(table: PerSeed, path: Path, title: str, return_range: tuple[float, float]) -> None:
    """Mean best return per level and condition, with the 95% bootstrap confidence interval of the mean across
    seeds as a band clipped to ``return_range`` (the task's worst and best returns)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    densities = []
    for condition in table.conditions(condition_names()):
        levels = table.levels(condition)
        x = [table.density(condition, k) for k in levels]
        stats = [bootstrap_mean(list(table.returns(condition, k).values())) for k in levels]
        mean = np.array([s.mean for s in stats])
        low = np.clip([s.low for s in stats], *return_range)
        high = np.clip([s.high for s in stats], *return_range)
        colour = condition_colour(condition)
        ax.plot(x, mean, marker="o", ms=3, color=colour, label=f"{condition} (n={len(table.seeds(condition))})")
        ax.fill_between(x, low, high, color=colour, alpha=0.18, linewidth=0)
        densities += x
    density_axis(ax, densities)
    ax.set_ylim(return_range[0] - 0.03 * (return_range[1] - return_range[0]),
                return_range[1] + 0.03 * (return_range[1] - return_range[0]))
    ax.set_ylabel("best mean evaluation return\n(mean over seeds, 95% CI band)")
    _save(fig, ax, path, title)


def differences(table: PerSeed, pairs: Sequence[tuple[str, str]], path: Path, title: str) -> None:
    """Per level, each pair's paired per-seed difference (first minus second condition) with its 95% bootstrap
    confidence interval: where a band leaves zero, the seeds resolve the difference at that level."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    densities = []
    styles = ("-", "--", ":", "-.", (0, (5, 1)))
    for (a, b), style in zip(pairs, styles):
        levels = [k for k in table.levels(a) if k in table.levels(b) and k > 0]
        x = [table.density(a, k) for k in levels]
        stats = [paired(table.returns(a, k), table.returns(b, k)) for k in levels]
        colour = condition_colour(b)
        ax.plot(x, [s.mean for s in stats], linestyle=style, marker="o", ms=3, color=colour, label=f"{a} − {b}")
        ax.fill_between(x, [s.low for s in stats], [s.high for s in stats], color=colour, alpha=0.12, linewidth=0)
        densities += x
    ax.axhline(0, color="black", linewidth=0.8)
    density_axis(ax, densities)
    ax.set_ylabel("paired difference of best returns\n(mean over seeds, 95% CI band)")
    _save(fig, ax, path, title)


def input_survival(table: PerSeed, condition: str, columns: Sequence[str], path: Path, title: str) -> None:
    """Each input's surviving first-layer |weight| as a share of its level-0 mass (so inputs and init schemes
    compare), mean over seeds with its 95% CI band, against density."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = table.levels(condition)
    x = [table.density(condition, k) for k in levels]
    chains = table.data[condition]
    for column in columns:
        shares = [[chain[k].inputs[column] / (chain[0].inputs[column] or 1.0) for chain in chains.values()]
                  for k in levels]
        stats = [bootstrap_mean(values) for values in shares]
        line, = ax.plot(x, [s.mean for s in stats], marker="o", ms=3, label=column.rsplit("/", 1)[-1])
        ax.fill_between(x, np.clip([s.low for s in stats], 0, None), [s.high for s in stats],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    density_axis(ax, x)
    ax.set_ylabel("surviving |weight| per input\n(share of level 0, mean over seeds, 95% CI band)")
    _save(fig, ax, path, title)


def learning_curves(curves: dict[str, dict[int, dict[int, float]]], path: Path, title: str,
                    return_range: tuple[float, float]) -> None:
    """Evaluation return against env frames per arm (``curves[arm][seed][frames]``): mean over seeds with the 95%
    CI band, on the frames every seed of the arm evaluated at."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, seeds in curves.items():
        frames = sorted(set.intersection(*(set(c) for c in seeds.values())))
        stats = [bootstrap_mean([c[f] for c in seeds.values()]) for f in frames]
        line, = ax.plot(frames, [s.mean for s in stats], label=f"{arm} (n={len(seeds)})")
        ax.fill_between(frames, np.clip([s.low for s in stats], *return_range),
                        np.clip([s.high for s in stats], *return_range), color=line.get_color(), alpha=0.18,
                        linewidth=0)
    ax.set_xlabel("environment frames")
    ax.set_ylabel("mean evaluation return\n(mean over seeds, 95% CI band)")
    _save(fig, ax, path, title)
