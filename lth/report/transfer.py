"""The report of an input-mask transfer: learning curves of both arms, mean and one standard deviation across seeds.

The curves of every finished fit of one transfer (see :mod:`lth.study.transfer`) go to a PNG and a Markdown table,
on disk and, by default, in an MLflow run tagged ``lth.role=report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lth.errors import ConfigError
from lth.report import (
    figures as plt,  # pyplot's subplots/close on bare Figures: drawing leaves the user's backend alone
)
from lth.report.chains import mean_sd
from lth.store.tracking import log_folder, tag_query
from lth.study.transfer import ARMS, TransferSettings, transfer_tags


@dataclass
class Curve:
    """One fit's ``eval/return`` against env frames."""

    arm: str
    seed: int
    frames: list[int]
    returns: list[float]
    kept: str


def load_curves(tracking_uri: str, experiment: str, settings: TransferSettings) -> list[Curve]:
    """The learning curves of the finished fits of one transfer (both arms, every seed)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no experiment {experiment!r} in {tracking_uri}")
    query = f"{tag_query(transfer_tags(settings))} and attributes.status = 'FINISHED'"
    curves = []
    for run in client.search_runs([found.experiment_id], query, max_results=10_000):
        history = sorted(client.get_metric_history(run.info.run_id, "eval/return"), key=lambda m: m.step)
        tags = run.data.tags
        curves.append(Curve(tags["inputs"], int(tags["seed"]), [m.step for m in history],
                            [m.value for m in history], tags.get("kept_inputs", "all")))
    if not curves:
        raise ConfigError(f"no finished transfer fits of chain {settings.ticket} level {settings.level} "
                          f"in {experiment!r}")
    return curves


def plot_curves(curves: list[Curve], path: Path, title: str) -> list[str]:
    """Mean ± 1 sd of the eval return per arm, on the frames every seed evaluated at; returns a Markdown table."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = ["| inputs | kept | seeds | best return (mean ± sd) | return averaged over the evaluations (mean ± sd) | "
            "final return (mean ± sd) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for arm in ARMS:
        group = [c for c in curves if c.arm == arm and c.frames]
        if not group:
            continue
        frames = sorted(set.intersection(*(set(c.frames) for c in group)))
        at = [dict(zip(c.frames, c.returns)) for c in group]
        stats = [mean_sd([a[f] for a in at]) for f in frames]
        mean, sd = np.array([m for m, _ in stats]), np.array([s for _, s in stats])
        label = "all inputs" if arm == "all" else f"ticket inputs ({group[0].kept})"
        line, = ax.plot(frames, mean, label=f"{label}, n={len(group)}")
        ax.fill_between(frames, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        best = mean_sd([max(c.returns) for c in group])
        average = mean_sd([float(np.mean(c.returns)) for c in group])
        final = mean_sd([c.returns[-1] for c in group])
        rows.append(f"| {arm} | {group[0].kept} | {len(group)} | {best[0]:.1f} ± {best[1]:.1f} | "
                    f"{average[0]:.1f} ± {average[1]:.1f} | {final[0]:.1f} ± {final[1]:.1f} |")
    plt.save_curves(fig, ax, path, "environment frames", "mean evaluation return", title)
    return rows


def transfer_report(tracking_uri: str, experiment: str, settings: TransferSettings, out: Path,
                    log_to_mlflow: bool = True) -> Path:
    """Write ``learning_curves.png`` and ``summary.md`` for one transfer to ``out`` (and MLflow)."""
    curves = load_curves(tracking_uri, experiment, settings)
    ticket, level = settings.ticket, settings.level
    out.mkdir(parents=True, exist_ok=True)
    title = f"Dense agents on all inputs vs the inputs of ticket level {level} (mean ± 1 sd)"
    rows = plot_curves(curves, out / "learning_curves.png", title)
    summary = out / "summary.md"
    summary.write_text("\n".join([
        f"# Input-mask transfer: {experiment}", "",
        f"Ticket: chain `{ticket}`, level {level}; kept inputs: those with a weight left in the input layer of "
        f"{', '.join(settings.modules) if settings.modules else 'any pruned sub-module'}. "
        f"Seeds: {sorted({c.seed for c in curves})}.", "",
        "![learning curves](learning_curves.png)", "", *rows, ""]))
    if log_to_mlflow:
        log_folder(tracking_uri, experiment, out, f"transfer report, level {level}",
                   {**transfer_tags(settings), "lth.role": "report"})
    return summary
