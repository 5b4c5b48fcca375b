"""MazeGrid (paper section 4.1, Figures 4 and 5): DQN tickets against the three baselines on the object-map
encoding, and which pixels of each object map the ticket's Q-network still sees.

The study is a :class:`results_tickets.TicketStudy` (run as two Ray populations, resumed from MLflow). The pixel
analysis reads every mask/weights level's ``ticket.pt`` and compares the surviving first-layer columns with
:func:`lth.envs.mazegrid.channel_support`, the cells where each object map can ever be 1: a weight elsewhere sees
only zeros, is never trained, and stays at its (rewound) initial size. SI Figure 13's RGB and entangled encodings
(:data:`RGB`, :data:`ENTANGLED`) repeat the study at 2 seeds. :func:`section` returns the Markdown;
``docs/make_results.py --items mazegrid`` writes it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from results_tickets import TicketStudy, budget, mean_curve, run_study, verdict, wall_minutes

from lth import figures as plt
from lth.analysis import alive_inputs, input_layers
from lth.envs.mazegrid import CHANNELS, channel_support
from lth.report import Chain, input_groups, mean_sd
from lth.tracking import ChainStore

OUT = Path(__file__).resolve().parent / "results"
#: 50k frames per level instead of 5M: exploration scaled by the same factor (10k frames), and the warm-up, batch
#: and target period with which DQN learns the maze in 60k frames (tests/test_dqn.py); two populations of 10
#: members train side by side on the two cores (Ray).
SETTINGS = ("--model.init_args.eps_frames", "10000", "--data.init_args.warmup_frames", "5000",
            "--data.init_args.buffer_size", "50000", "--data.init_args.batch_size", "64",
            "--model.init_args.target_update_interval", "250", "--data.init_args.eval_every", "5000")
STUDY = TicketStudy("mazegrid_dqn_tickets", "MazeGrid, DQN (objects)", "mazegrid/dqn.yaml",
                    "paper/MazeGrid-v0/dqn/tickets", "0-4", 14, frames=50_000,
                    extra=(*SETTINGS, "--population", "10", "--executor", "ray"))
#: SI Figure 13's RGB encoding (3 colour planes scaled to [0, 1]) at 2 seeds, the same settings, one population of 8.
RGB = TicketStudy("mazegrid_dqn_tickets_rgb", "MazeGrid, DQN (rgb)", "mazegrid/dqn.yaml",
                  "paper/MazeGrid-v0/dqn/tickets-rgb", "0-1", 14, frames=50_000,
                  extra=(*SETTINGS, "--data.init_args.env_kwargs", "{obs_type: rgb}",
                         "--model.init_args.network.obs_scale", str(1 / 255), "--population", "8"))
#: SI Figure 13's entangled encoding: every seed projects the object maps through its own fixed random matrix
#: (``projection_seed``), so each seed is its own population of the four conditions; same settings, 2 seeds.
ENTANGLED = tuple(
    TicketStudy("mazegrid_dqn_tickets_entangled", "MazeGrid, DQN (entangled)", "mazegrid/dqn.yaml",
                "paper/MazeGrid-v0/dqn/tickets-entangled", str(seed), 14, frames=50_000,
                extra=(*SETTINGS, "--data.init_args.env_kwargs", f"{{obs_type: entangled, projection_seed: {seed}}}",
                       "--population", "4"))
    for seed in (0, 1))
ENEMIES = ("enemy_a", "enemy_b")


@dataclass(frozen=True)
class ChannelMask:
    """One object map's view in one ticket's input layer."""

    weights_kept: float  # share of the channel's first-layer weights the mask keeps
    on_support: float  # share of the channel's support cells with at least one weight left
    off_support: float  # the same share for the cells the channel can never light


def channel_masks(mask: torch.Tensor, support: np.ndarray, names: tuple[str, ...] = CHANNELS
                  ) -> dict[str, ChannelMask]:
    """Per channel (``names``, in order) of a Linear input layer's ``mask`` ([units, channels * height * width]):
    what it keeps of the cells in ``support`` (bool, [channels, height, width]) and of the others."""
    support_t = torch.from_numpy(support)
    alive = alive_inputs(mask, support.shape)
    kept = mask.reshape(mask.shape[0], len(support), -1).double().mean((0, 2))
    return {name: ChannelMask(float(kept[c]), float(alive[c][support_t[c]].float().mean()),
                              float(alive[c][~support_t[c]].float().mean())) for c, name in enumerate(names)}


def input_masks(uri: str, chain: Chain) -> dict[int, torch.Tensor]:
    """Per finished level of ``chain``, its ticket's input-layer mask (read from the level's ``ticket.pt``)."""
    store = ChainStore(uri, chain.experiment_id, chain.run_id)
    levels = {}
    for level, run_id in sorted(chain.level_runs.items()):
        masks = store.load(run_id, "ticket.pt")["masks"]
        (layer,) = input_layers(masks).values()
        levels[level] = masks[layer]
    return levels


def chain_channels(masks: dict[int, torch.Tensor], support: np.ndarray | None = None,
                   names: tuple[str, ...] = CHANNELS) -> dict[int, dict[str, ChannelMask]]:
    """Per level of a chain's input ``masks`` (:func:`input_masks`), every channel's :class:`ChannelMask` against
    ``support`` (default: MazeGrid's :func:`channel_support`)."""
    support = channel_support() if support is None else support
    return {level: channel_masks(mask, support, names) for level, mask in masks.items()}


def pruned_off_support(levels: dict[int, dict[str, ChannelMask]], channel: str) -> int | None:
    """The first level at which ``channel`` sees no cell outside its support (None: never)."""
    return next((k for k, c in sorted(levels.items()) if c[channel].off_support == 0), None)


def plot_channels(per_seed: list[dict[int, dict[str, ChannelMask]]], density: dict[int, float], path: Path) -> None:
    """Left: each channel's kept weight share against density. Right: the enemy and agent maps' surviving cells
    on (solid) and off (dashed) their support. Mean over seeds."""
    levels = sorted(set.intersection(*(set(s) for s in per_seed)))
    x = [density[k] for k in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in CHANNELS:
        left.plot(x, [statistics.fmean(s[k][name].weights_kept for s in per_seed) for k in levels], marker="o",
                  ms=3, label=name)
    for name in ("agent", *ENEMIES):
        line, = right.plot(x, [statistics.fmean(s[k][name].on_support for s in per_seed) for k in levels],
                           marker="o", ms=3, label=f"{name}: cells it can occupy")
        right.plot(x, [statistics.fmean(s[k][name].off_support for s in per_seed) for k in levels], ls="--",
                   color=line.get_color(), label=f"{name}: other cells")
    for ax, label in ((left, "share of the map's input weights kept (log scale)"),
                      (right, "share of cells with a weight left")):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set(xlabel="density (log scale)", ylabel=label)
        ax.legend(fontsize=7)
    left.set_yscale("log")
    right.set_ylim(-0.02, 1.02)
    left.set_title("Input-layer weights kept per object map", fontsize=10)
    right.set_title("Cells still seen: on and off each object's reachable cells", fontsize=10)
    fig.suptitle(f"MazeGrid DQN tickets (mask/weights), mean of {len(per_seed)} seeds", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def channel_rows(per_seed: list[dict[int, dict[str, ChannelMask]]], density: dict[int, float],
                 names: tuple[str, ...] = CHANNELS, label: str = "object map",
                 seen: str = "cells seen on / off support") -> list[str]:
    """Per channel (``names``, rows headed ``label``), at the dense, middle and last levels: kept weight share and
    cells ``seen`` on / off the support."""
    last = max(set.intersection(*(set(s) for s in per_seed)))
    picks = sorted({0, last // 2, last})
    head = f"| {label} | " + " | ".join(f"level {k} (density {density[k]:.3f}): weights kept, {seen}"
                                        for k in picks) + " |"
    rows = [head, "| --- |" + " ---: |" * len(picks)]
    for name in names:
        cells = []
        for k in picks:
            kept, on, off = (statistics.fmean(getattr(s[k][name], f) for s in per_seed)
                             for f in ("weights_kept", "on_support", "off_support"))
            cells.append(f"{kept:.3f}, {on:.2f} / {off:.2f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def channel_verdict(per_seed: list[dict[int, dict[str, ChannelMask]]]) -> str:
    """The paper's two claims on the input layer: enemy maps keep only cells the enemy can occupy, and the agent
    map is pruned least."""
    n = len(per_seed)
    last = max(set.intersection(*(set(s) for s in per_seed)))
    first = {e: [pruned_off_support(s, e) for s in per_seed] for e in ENEMIES}
    parts = []
    for enemy in ENEMIES:
        cut = [k for k in first[enemy] if k is not None]
        kept = [s[k][enemy].on_support for s, k in zip(per_seed, first[enemy]) if k is not None]
        parts.append(f"{enemy}: {len(cut)} of {n} seeds" + (
            f" (from level {min(cut)}-{max(cut)}, still seeing {statistics.fmean(kept):.0%} of the patrol cells then)"
            if cut else ""))
    cut_seeds = sum(all(k is not None for k in ks) for ks in zip(*first.values()))
    share = {name: mean_sd([s[last][name].weights_kept for s in per_seed]) for name in CHANNELS}
    order = sorted(share, key=lambda name: share[name][0], reverse=True)
    text = ("Seeds whose ticket sees no enemy-map cell outside the enemy's patrol by the last level: "
            + "; ".join(parts) + ". ")
    if cut_seeds == n:
        text += "The paper's claim holds: the enemy maps keep only cells the enemy can occupy. "
    elif cut_seeds:
        text += (f"The paper's claim holds only in part: both enemy maps are cut back to the patrol cells in "
                 f"{cut_seeds} of {n} seeds at this budget and depth. ")
    else:
        text += ("The paper's claim does not show here: no seed's enemy maps are cut back to the patrol cells at "
                 "this budget and depth. ")
    text += (f"Share of each map's input weights kept at level {last}, most first: "
             + ", ".join(f"{name} {share[name][0]:.3f} ± {share[name][1]:.3f}" for name in order) + ". "
             + ("The agent map is pruned least, as the paper reports." if order[0] == "agent" else
                f"The agent map is not the one pruned least here ({order[0]} is), unlike the paper's report."))
    return text


def encodings_section(uri: str, objects: dict[str, dict]) -> str:
    """SI Figure 13: the four conditions on RGB pixels and on the entangled projection (each run or resumed
    here), beside the object maps' ``objects`` stats."""
    studies = {"RGB": RGB, "entangled": ENTANGLED}
    stats = {name: run_study(uri, study, OUT)[1:] for name, study in studies.items()}
    sparse = {"objects": {c: s["sparse"] for c, s in objects.items()}} | {
        name: {c: s["sparse"] for c, s in by.items()} for name, (_, by) in stats.items()}
    conditions = list(sparse["objects"])
    newline = "\n"
    rgb, entangled = RGB, ENTANGLED[0]
    return f"""### RGB and entangled encodings (SI Figure 13)

The paper trains the same study on two more encodings of the maze and reports that the mask contributes most to
the ticket, most clearly on RGB. Same settings and budget as above, 2 seeds each:

- RGB pixels (600 values in [0, 255]): `--data.init_args.env_kwargs '{{obs_type: rgb}}'
  --model.init_args.network.obs_scale {1 / 255:.6f}`; seeds {rgb.seeds}, one population of 8; MLflow experiment
  `{rgb.experiment}`; {wall_minutes(uri, rgb.experiment):.0f} min on this machine (sharing it with another study).
- Entangled: the 1,200 object-map values multiplied by a fixed 1200x1200 matrix with U(-1, 1) entries, its own
  matrix per seed (`--data.init_args.env_kwargs '{{obs_type: entangled, projection_seed: <seed>}}'`), so every
  input mixes every cell and object and no input pixel can be pruned away on its own; seeds
  {', '.join(part.seeds for part in ENTANGLED)}, one population
  of the four conditions per seed, the two side by side; MLflow experiment `{entangled.experiment}`;
  {wall_minutes(uri, entangled.experiment):.0f} min on this machine.

![MazeGrid, DQN (RGB)](results/{rgb.name}/return_vs_density.png)

{newline.join(stats["RGB"][0])}

RGB: {verdict(stats["RGB"][1])}

![MazeGrid, DQN (entangled)](results/{entangled.name}/return_vs_density.png)

{newline.join(stats["entangled"][0])}

Entangled: {verdict(stats["entangled"][1])}

Mean best return at density <= 0.1 per encoding:

| encoding | {' | '.join(conditions)} |
| --- |{' ---: |' * len(conditions)}
{newline.join(f"| {name} | " + " | ".join(f"{by[c]:.1f}" for c in conditions) + " |" for name, by in sparse.items())}
"""


def section(uri: str) -> str:
    """Run (or resume) the study, write its report, and return the Markdown section."""
    chains, rows, stats = run_study(uri, STUDY, OUT)
    tickets = sorted((c for c in chains if c.condition == "mask/weights"), key=lambda c: c.seed)
    per_seed = [chain_channels(input_masks(uri, c)) for c in tickets]
    density = {k: d for k, (d, _, _) in mean_curve(tickets).items()}
    plot_channels(per_seed, density, OUT / STUDY.name / "channels.png")
    (group,) = input_groups(tickets)
    newline = "\n"
    return f"""## MazeGrid, DQN (paper Figures 4 and 5)

Double DQN with prioritized replay on `lth/MazeGrid-v0`, object-map encoding (6 one-hot maps of 10x20 cells:
{', '.join(CHANNELS)}), all four conditions, the Q-network's layers pruned together.
`configs/{STUDY.config}` with `{' '.join(SETTINGS)}`:
{budget(STUDY)}. The smaller batch (64 instead of 256) with the shorter target period (250 updates) is the
setting with which DQN learns the maze within 60k frames (`tests/test_dqn.py`); exploration and warm-up are
scaled with the budget. Seeds {STUDY.seeds}, {STUDY.levels} levels (density down to
{0.8 ** (STUDY.levels - 1):.3f}); MLflow experiment `{STUDY.experiment}`; {wall_minutes(uri, STUDY.experiment):.0f}
min on this machine as two Ray populations of 10 members, one per core. The return is the coins collected minus
the poisons eaten (42 coins in all).

![MazeGrid, DQN](results/{STUDY.name}/return_vs_density.png)

{newline.join(rows)}

{verdict(stats)}

### Which cells each object map keeps (Figure 5)

The paper reports that the input layer's mask keeps, in each enemy's map, only the cells the enemy can occupy
(its patrol corridor), and that the agent's map is pruned least. A cell of a map is *seen* while its column in
the first layer keeps a weight; the cells a map can light (`lth.envs.mazegrid.channel_support`: the walkable cells
for agent and empty, the patrol for each enemy, the start cells of coins and poisons) are its *support*.

![channels](results/{STUDY.name}/channels.png)

![input masks across levels](results/{STUDY.name}/input_masks_{group}.png)

(Mean over the {len(tickets)} mask/weights seeds; shares of cells on / off the map's support.)

{newline.join(channel_rows(per_seed, density))}

{channel_verdict(per_seed)}

Per level and seed: [the study's report](results/{STUDY.name}/summary.md).

{encodings_section(uri, stats)}
"""
