"""Figures without pyplot: ``subplots``/``close``/``get_cmap`` as in ``matplotlib.pyplot``, on a bare ``Figure``.

A bare ``matplotlib.figure.Figure`` draws and saves (``fig.savefig`` picks the file format's canvas, Agg for
PNG) without a pyplot figure manager or a GUI backend, so drawing a report never selects or switches the
user's matplotlib backend, and importing this module does not import matplotlib at all. ``save_curves``
finishes the line plots of ``lth report`` and ``lth transfer`` alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, *, sharex: bool | str = False, sharey: bool | str = False,
             squeeze: bool = True, subplot_kw: dict[str, Any] | None = None,
             gridspec_kw: dict[str, Any] | None = None, **fig_kw: Any) -> tuple[Figure, Any]:
    """A new figure and a grid of axes, like ``pyplot.subplots``, but unknown to pyplot (no backend needed)."""
    from matplotlib.figure import Figure

    fig = Figure(**fig_kw)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze, subplot_kw=subplot_kw,
                        gridspec_kw=gridspec_kw)
    return fig, axes


def close(fig: Figure) -> None:
    """Release a figure's artists (pyplot keeps no reference to it, so this is only tidying up)."""
    fig.clear()


def get_cmap(name: str) -> Colormap:
    """The registered colormap ``name``."""
    import matplotlib

    return matplotlib.colormaps[name]


def save_curves(fig: Figure, ax: Axes, path: Path | str, xlabel: str, ylabel: str, title: str,
                title_size: float | None = None, legend_size: float = 8) -> None:
    """Label a plot of curves (axes, title, small legend, light grid) and write it to ``path`` at 110 dpi."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    close(fig)
