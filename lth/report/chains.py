"""``lth report``: the paper's figures and a Markdown summary, read back from the MLflow runs of IMP studies.

Figures (PNG): best return against density for each condition (mean and the 95% bootstrap interval of the mean
across seeds, log density axis; several experiments, e.g. RL and distillation on one env, share the axes), layer-wise
density against level, each input's surviving first-layer weight against level, and which inputs/pixels the
first seed's mask/weights ticket still sees at selected levels. The folder is also logged back to MLflow as the
artifacts of a run tagged ``lth.role=report`` in the experiment :data:`REPORTS_EXPERIMENT` (one run per set of
experiments, replaced by the next report of the same set), so the chains' experiments hold only chains.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lth.analysis.inputs import VECTOR_INPUT_NAMES, channel_names, input_names
from lth.callbacks import condition_names
from lth.envs import env_shapes
from lth.errors import ConfigError
from lth.report import (
    figures as plt,  # pyplot's subplots/close on bare Figures: drawing leaves the user's backend alone
)
from lth.store.chain_store import ChainStore
from lth.store.tracking import check_tracking_uri, log_folder, missing_store
from lth.store.ui_views import condition_colour

REPORTS_EXPERIMENT = "lth reports"
"""The MLflow experiment of ``lth report``'s runs."""


@dataclass
class Chain:
    """One IMP chain as MLflow recorded it: its tags and every finished level's metrics."""

    experiment: str
    experiment_id: str
    run_id: str
    condition: str
    seed: int
    env: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # the env's options (MazeGrid's obs_type...)
    params: dict[str, str] = field(default_factory=dict)  # the chain's description (JSON values), as its run's params
    levels: dict[int, dict[str, float]] = field(default_factory=dict)
    level_runs: dict[int, str] = field(default_factory=dict)

    def series(self, metric: str) -> dict[int, float]:
        return {level: m[metric] for level, m in sorted(self.levels.items()) if metric in m}

    def dead_from(self, name: str, group: str = "actor") -> int | None:
        """The first level at which input ``name`` has no first-layer weight left in ``group`` (None: never)."""
        dead = [k for k, v in self.series(f"inputs/{group}/{name}").items() if v == 0]
        return min(dead) if dead else None

    def sees_only_from(self, kept: Sequence[str], dropped: Sequence[str], group: str = "actor") -> int | None:
        """The first level at which ``group`` still sees every input of ``kept`` and none of ``dropped``."""
        for level, metrics in sorted(self.levels.items()):
            alive = {n: metrics[f"inputs/{group}/{n}"] > 0 for n in (*kept, *dropped)}
            if all(alive[n] for n in kept) and not any(alive[n] for n in dropped):
                return level
        return None


ENV_KWARGS = "data.init_args.env_kwargs."  # the prefix of a chain run's env options among its params


def env_kwargs(params: Mapping[str, str]) -> dict[str, Any]:
    """A chain's env options, read back from its run's params (its flattened description: JSON values)."""
    return {key[len(ENV_KWARGS):]: json.loads(value) for key, value in params.items() if key.startswith(ENV_KWARGS)}


def load_chains(tracking_uri: str, experiments: list[str]) -> list[Chain]:
    """The chains (parent runs tagged ``lth.role=chain``) of ``experiments`` with their finished levels.

    A changed configuration starts a new chain in the same experiment (see :mod:`lth.store.chain_identity`), so of
    several chains with the same condition, seed and branch source only the newest is read: a report shows one
    study, never a mix of configurations.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    chains = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise ConfigError(f"no experiment {name!r} in {tracking_uri}; experiments: {known}")
        newest_first = client.search_runs([exp.experiment_id], "tags.`lth.role` = 'chain'", max_results=10_000,
                                          order_by=["attributes.start_time DESC"])
        seen: set[tuple[str, str, str]] = set()
        for parent in newest_first:
            tags = parent.data.tags
            key = (tags["condition"], tags.get("seed", "0"), tags.get("branch_from", ""))
            if key in seen:
                continue
            seen.add(key)
            chain = Chain(name, exp.experiment_id, parent.info.run_id, tags["condition"], int(tags.get("seed", 0)),
                          tags.get("env", ""), env_kwargs(parent.data.params), dict(parent.data.params))
            for level, run in ChainStore(tracking_uri, exp.experiment_id, parent.info.run_id).finished_runs().items():
                chain.levels[level] = dict(run.data.metrics)
                chain.level_runs[level] = run.info.run_id
            if chain.levels:
                chains.append(chain)
    if not chains:
        raise ConfigError(f"no finished IMP levels in {experiments}")
    return chains


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation across seeds; sd 0 for one seed."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _by_condition(chains: list[Chain]) -> dict[tuple[str, str], list[Chain]]:
    groups: dict[tuple[str, str], list[Chain]] = defaultdict(list)
    for chain in chains:
        groups[(chain.experiment, chain.condition)].append(chain)
    order = {c: i for i, c in enumerate(condition_names())}  # the registry's order: the paper's first
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][1])))


def return_vs_density(chains: list[Chain], path: Path) -> list[str]:
    """Best return against density per condition: the mean across seeds with the 95% bootstrap confidence interval
    of the mean as a band, in the results' figure style (:mod:`lth.analysis.figures`)."""
    from lth.analysis.figures import density_axis
    from lth.analysis.verdicts import bootstrap_mean

    fig, ax = plt.subplots(figsize=(7, 4.5))
    several = len({c.experiment for c in chains}) > 1
    rows, densities = [], []
    for (experiment, condition), group in _by_condition(chains).items():
        levels = sorted(set.intersection(*(set(c.levels) for c in group)))
        density = [statistics.fmean(c.levels[k]["density"] for c in group) for k in levels]
        returns = [[c.levels[k]["ticket/best_return"] for c in group] for k in levels]
        finite = [all(math.isfinite(v) for v in values) for values in returns]
        stats = [bootstrap_mean(values) if ok else None for values, ok in zip(returns, finite)]
        label = f"{experiment}: {condition}" if several else condition
        colour = None if several else condition_colour(condition)  # the condition's colour in the MLflow UI too
        shown = [(d, s) for d, s in zip(density, stats) if s is not None]
        line, = ax.plot([d for d, _ in shown], [s.mean for _, s in shown], marker="o", ms=3, color=colour,
                        label=f"{label} (n={len(group)})")
        ax.fill_between([d for d, _ in shown], [s.low for _, s in shown], [s.high for _, s in shown],
                        color=line.get_color(), alpha=0.18, linewidth=0)
        densities += density
        rows += [f"| {label} | {k} | {d:.3f} | {m:.1f} ± {sd:.1f} | {len(group)} |"
                 for k, d, (m, sd) in zip(levels, density, map(mean_sd, returns))]
    density_axis(ax, densities)
    plt.save_curves(fig, ax, path, "density (fraction of the pruned weights kept, log scale)",
                    "best mean evaluation return", "Ticket performance against sparsity (mean, 95% CI across seeds)")
    head = ["| chains | level | density | best return (mean ± sd) | seeds |", "| --- | ---: | ---: | ---: | ---: |"]
    return head + rows


def layer_density(chains: list[Chain], path: Path) -> None:
    """Each layer's density against level (mask/weights chains, mean across seeds)."""
    group = [c for c in chains if c.condition == "mask/weights"] or chains
    layers = sorted({k for c in group for m in c.levels.values() for k in m if k.startswith("density/")})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layer in layers:
        levels = sorted(set.intersection(*(set(c.series(layer)) for c in group)))
        ax.plot(levels, [statistics.fmean(c.levels[k][layer] for c in group) for k in levels], marker="o", ms=3,
                label=layer.removeprefix("density/"))
    ax.set_yscale("log")
    plt.save_curves(fig, ax, path, "IMP level", "layer density (log scale)",
                    f"Layer-wise density, {group[0].condition} (mean across {len(group)} seed(s))", legend_size=7)


def _input_metrics(chain: Chain, group: str) -> list[str]:
    """The chain's per-input (or per-channel) mass metrics of ``group``, in observation order."""
    prefix = f"inputs/{group}/"
    names = {k.removeprefix(prefix) for m in chain.levels.values() for k in m if k.startswith(prefix)} - {"alive"}
    known = VECTOR_INPUT_NAMES.get(chain.env) or channel_names(chain.env, len(names))
    order = {name: i for i, name in enumerate(known)}
    return [prefix + name for name in sorted(names, key=lambda n: (order.get(n, len(order)), n))]


def input_groups(chains: list[Chain]) -> list[str]:
    """The sub-modules whose input layers were analysed (``actor``, ``critic``, ``q_net``, ``student``)."""
    keys = {k.split("/")[1] for c in chains for m in c.levels.values() for k in m if k.count("/") == 2
            and k.startswith("inputs/")}
    return sorted(keys)


def input_survival(chains: list[Chain], group: str, path: Path, title: str = "") -> list[str]:
    """Each input's surviving first-layer weight against level, as a share of its level-0 mass (so init schemes
    compare), and the level at which each input loses its last weight, per seed (mask/weights chains)."""
    chosen = sorted((c for c in chains if c.condition == "mask/weights"), key=lambda c: c.seed) or chains
    metrics = _input_metrics(chosen[0], group)
    names = [m.split("/", 2)[2] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for metric, name in zip(metrics, names):
        levels = sorted(set.intersection(*(set(c.series(metric)) for c in chosen)))
        shares = [[c.levels[k][metric] / (c.levels[levels[0]][metric] or 1.0) for c in chosen] for k in levels]
        stats = [mean_sd(values) for values in shares]
        mean, sd = np.array([m for m, _ in stats]), np.array([s for _, s in stats])
        line, = ax.plot(levels, mean, marker="o", ms=3, label=name)
        ax.fill_between(levels, np.maximum(mean - sd, 0), mean + sd, color=line.get_color(), alpha=0.2)
    plt.save_curves(fig, ax, path, "IMP level", "surviving |weight| per input (share of level 0)",
                    title or f"{group} input layer: weight mass per input (mean ± sd, {len(chosen)} seed(s))",
                    title_size=10)
    rows = ["| seed | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
    for chain in chosen:
        cells = [str(dead) if (dead := chain.dead_from(name, group)) is not None else f"alive at {max(chain.levels)}"
                 for name in names]
        rows.append(f"| {chain.seed} | " + " | ".join(cells) + " |")
    return rows


def input_masks_across_levels(chains: list[Chain], tracking_uri: str, group: str, path: Path) -> None:
    """Which inputs (or, for images, pixels of each channel) the first seed's mask/weights ticket still sees, at
    four levels from dense to the sparsest."""
    chain = min((c for c in chains if c.condition == "mask/weights"), key=lambda c: c.seed, default=chains[0])
    store = ChainStore(tracking_uri, chain.experiment_id, chain.run_id)
    last = max(chain.levels)
    picks = sorted({0, last // 3, 2 * last // 3, last})
    masks = [store.load(chain.level_runs[k], "ticket.pt")["masks"] for k in picks]
    layer = next(name for name in masks[0] if name.startswith(f"{group}."))
    columns = [m[layer].reshape(m[layer].shape[0], -1).float().mean(0) for m in masks]  # kept share per input
    obs_shape = env_shapes(chain.env, **chain.env_kwargs)[0] if chain.env else (columns[0].numel(),)
    image = len(obs_shape) == 3 and columns[0].numel() == math.prod(obs_shape)
    names = input_names(chain.env, obs_shape)
    rows, cols = (len(picks), obs_shape[0]) if image else (1, len(picks))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols + 1, 1.6 * rows + 1) if image else (3.4 * cols, 3.2),
                             squeeze=False)
    for i, (level, share) in enumerate(zip(picks, columns)):
        density = chain.levels[level]["density"]
        if image:
            for ax, name, plane in zip(axes[i], names, share.reshape(obs_shape)):
                im = ax.imshow(plane.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name}, level {level}" if i == 0 else f"level {level} ({density:.3f})", fontsize=7)
            continue
        ax = axes[0][i]
        ax.bar(range(share.numel()), share.numpy())
        ax.set_xticks(range(share.numel()), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"level {level} (density {density:.3f})", fontsize=9)
    if image:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="share of the pixel's weights kept")
    else:
        axes[0][0].set_ylabel("share of the input's weights kept")
    fig.suptitle(f"{chain.experiment}: {group} input-layer mask, {chain.condition}, seed {chain.seed}", y=1.03)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def run_report(experiments: list[str], tracking_uri: str, out: Path, log_to_mlflow: bool = True) -> Path:
    """Write every figure and ``summary.md`` to ``out`` (and log them to MLflow); returns the summary path.

    An unopenable ``tracking_uri`` (or, when logging to it, an unwritable one) is an error before anything is read
    or written."""
    check_tracking_uri(tracking_uri, write=log_to_mlflow, create=False)
    if missing_store(tracking_uri):  # MLflow's client would create an empty store to look in
        raise ConfigError(f"no experiment {experiments[0]!r} in {tracking_uri}: the store does not exist")
    chains = load_chains(tracking_uri, experiments)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({c.seed for c in chains})
    lines = [f"# lth report: {', '.join(experiments)}", "",
             f"{len(chains)} chains, seeds {seeds}, conditions {sorted({c.condition for c in chains})}.", "",
             "![best return against density](return_vs_density.png)", "",
             *return_vs_density(chains, out / "return_vs_density.png"), "",
             "![layer-wise density](layer_density.png)", ""]
    layer_density(chains, out / "layer_density.png")
    for group in input_groups(chains):
        for index, experiment in enumerate(experiments):  # one section per experiment, e.g. per init scheme
            subset = [c for c in chains if c.experiment == experiment]
            if group not in input_groups(subset):
                continue
            name = group if len(experiments) == 1 else f"{group}_{index}"
            title = f"## Inputs of the {group}" + ("" if len(experiments) == 1 else f": {experiment}")
            seeds_of = sorted({c.seed for c in subset if c.condition == "mask/weights"})
            lines += [title, "", f"![{name} inputs](inputs_{name}.png)", "",
                      f"Level at which each input loses its last first-layer weight (mask/weights, seeds {seeds_of}):",
                      "", *input_survival(subset, group, out / f"inputs_{name}.png",
                                          f"{experiment}: {group} input layer (mean ± sd, {len(seeds_of)} seeds)"),
                      "", f"![{name} input masks](input_masks_{name}.png)", ""]
            input_masks_across_levels(subset, tracking_uri, group, out / f"input_masks_{name}.png")
    summary = out / "summary.md"
    summary.write_text("\n".join(lines))
    if log_to_mlflow:
        # in an experiment of their own: a report run among the chains would be one more top-level row there
        log_folder(tracking_uri, REPORTS_EXPERIMENT, out, f"report: {', '.join(experiments)}",
                   {"lth.role": "report", "lth.report.chains.experiments": ", ".join(experiments)})
    return summary

