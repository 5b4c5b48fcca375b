"""Pictures of tickets, written as PNG artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lth.analysis.inputs import InputReport, dead_inputs
from lth.report import figures as plt  # pyplot's subplots/close/get_cmap on bare Figures: no backend is touched


def save_inputs_png(reports: Mapping[str, InputReport], path: Path, title: str) -> None:
    """What each input layer still sees: a bar per named vector input (dead ones marked), or, for images, a
    channel x height x width heatmap of surviving weight mass (grey = dead pixel), one row per sub-module."""
    image = next(iter(reports.values())).mass.dim() == 3
    channels = len(next(iter(reports.values())).names)
    cols = channels if image else 1
    fig, axes = plt.subplots(len(reports), cols, figsize=(2.6 * cols + 1.5 if image else 7, 2.6 * len(reports)),
                             squeeze=False)
    for row, (group, report) in zip(axes, reports.items()):
        if image:
            top = float(report.mass.max()) or 1.0
            for ax, name, mass in zip(row, report.names, report.mass):
                shown = mass.masked_fill(dead_inputs(mass), float("nan")).numpy()
                cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
                im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
                ax.set_title(f"{group}: {name}\n{int((~dead_inputs(mass)).sum())}/{mass.numel()} pixels alive",
                             fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            fig.colorbar(im, ax=list(row), shrink=0.8, label="|surviving weight|")
        else:
            ax = row[0]
            mass = report.mass.reshape(-1)
            dead = dead_inputs(mass)
            colours = ["0.6" if d else "tab:blue" for d in dead.tolist()]
            ax.bar(range(mass.numel()), mass.numpy(), color=colours)
            ax.set_xticks(range(mass.numel()), [f"{n}\n(dead)" if d else n for n, d in zip(report.names, dead)],
                          fontsize=8)
            ax.set_ylabel("|surviving weight|")
            ax.set_title(f"{group} input layer ({report.layer}): {report.alive}/{mass.numel()} inputs alive")
    fig.suptitle(title)
    fig.tight_layout() if not image else None
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_chain_png(densities: list[float], returns: list[float], path: Path, title: str) -> None:
    """One chain's best evaluation return against density (log scale, dense on the left), a point per level."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(densities, returns, marker="o", ms=4, label="best return per level")
    for level, (d, r) in enumerate(zip(densities, returns)):
        ax.annotate(str(level), (d, r), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
    ax.set_xscale("log")
    ax.invert_xaxis()
    plt.save_curves(fig, ax, path, "density (fraction of weights kept, log scale)", "best mean evaluation return",
                    title, title_size=10)
