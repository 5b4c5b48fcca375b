"""Pictures of masks, written as PNG artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def input_layers(masks: Mapping[str, Tensor]) -> dict[str, str]:
    """The first masked tensor of each top-level sub-module (``actor``, ``critic``, ...): its input layer."""
    first: dict[str, str] = {}
    for name in masks:
        first.setdefault(name.split(".")[0], name)
    return first


def save_input_mask_png(masks: Mapping[str, Tensor], path: Path, title: str) -> None:
    """One panel per sub-module: its input layer's mask, units x input dimensions (black = kept)."""
    layers = input_layers(masks)
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False)
    for ax, (group, name) in zip(axes[0], layers.items()):
        mask = masks[name].reshape(masks[name].shape[0], -1).float()
        ax.imshow(mask.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{group}: {mask.mean().item():.1%} of input weights kept (black)")
        ax.set_xlabel("input dimension (share of its weights kept)")
        ax.set_ylabel("unit")
        if mask.shape[1] <= 20:
            kept = mask.mean(0)
            ax.set_xticks(range(mask.shape[1]), [f"{i}\n{k:.0%}" for i, k in enumerate(kept.tolist())])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
