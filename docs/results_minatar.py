"""MinAtar Breakout (paper Figure 6 right, SI Figure 9): Q-value distillation tickets of the MLP student against the
three baselines, and which pixels of each object channel the ticket's input layer still sees.

The expert is a DQN (the teacher MLP of Table 10) trained by ``lth expert`` on ``configs/minatar/dqn_mlp_expert.yaml``;
the study is a :class:`results_tickets.TicketStudy` run as two Ray populations and resumed from MLflow. The pixel
analysis compares each mask/weights level's surviving first-layer columns with the cells the expert's data ever
lights (:func:`lit_cells`): a weight on a cell that is never lit sees only zeros, is never trained and keeps its
initial size. :func:`section` returns the Markdown; ``docs/make_results.py --items minatar`` writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from results_mazegrid import ChannelMask, chain_channels, channel_rows, input_masks
from results_tickets import ROOT, TicketStudy, budget, expert_run, mean_curve, run_study, verdict, wall_minutes

from lth import figures as plt
from lth.analysis import input_names
from lth.datamodules import ExpertDataModule
from lth.report import input_groups, mean_sd

OUT = Path(__file__).resolve().parent / "results"
ENV_ID = "MinAtar/Breakout-v1"
EXPERT_CONFIG = "minatar/dqn_mlp_expert.yaml"
EXPERT_EPS = 0.05  # the expert acts as it ended its training (Table 11's final epsilon), so the data vary
#: The expert's data stream is shared by a population's members; two populations of 6 train side by side on the two
#: cores (Ray), each with its own stream.
SETTINGS = ("--data.init_args.expert_eps", str(EXPERT_EPS), "--data.init_args.eval_every", "50000")
STUDY = TicketStudy("minatar_breakout_distill_tickets", "MinAtar Breakout, distillation (MLP)",
                    "minatar/distill_mlp.yaml", "paper/MinAtar-Breakout-v1/distill/tickets", "0-2", 16,
                    expert_config=EXPERT_CONFIG, frames=100_000,
                    extra=(*SETTINGS, "--population", "6", "--executor", "ray"))
BOTTOM = 9  # the paddle's row; the ball ends the episode there unless the paddle is under it


def lit_cells(uri: str, expert: str, frames: int = 100_000, seed: int = 0) -> np.ndarray:
    """Per channel and cell, whether the expert's data (its epsilon-greedy play, as the student sees it) ever light
    it in ``frames`` frames: bool ``[channels, 10, 10]``."""
    data = ExpertDataModule(expert, ENV_ID, num_envs=16, rollout_steps=128, total_frames=frames,
                            expert_eps=EXPERT_EPS, seed=seed, tracking_uri=uri)
    lit = None
    for batch in data.train_dataloader():
        obs = batch["observation"]
        seen = obs.reshape(-1, *obs.shape[-3:]).bool().any(0)
        lit = seen if lit is None else lit | seen
    data.teardown("fit")
    return lit.numpy()


def plot_cells(kept: dict[int, torch.Tensor], lit: np.ndarray, names: tuple[str, ...], density: dict[int, float],
               path: Path) -> None:
    """Rows: channels; columns: levels. Colour: the share of each cell's first-layer weights the ticket keeps (mean
    over seeds; each level's own colour scale); x: a cell the expert's data never light."""
    levels = sorted(kept)
    fig, axes = plt.subplots(len(names), len(levels), figsize=(2.4 * len(levels), 2.2 * len(names)), squeeze=False)
    never = np.argwhere(~lit)
    for col, level in enumerate(levels):
        top = float(kept[level].max())
        for row, name in enumerate(names):
            ax = axes[row][col]
            image = ax.imshow(kept[level][row].numpy(), vmin=0, vmax=top, cmap="viridis")
            on = never[never[:, 0] == row]
            ax.scatter(on[:, 2], on[:, 1], marker="x", s=8, color="white", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"level {level}\ndensity {density[level]:.3f}", fontsize=8)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
        fig.colorbar(image, ax=[axes[r][col] for r in range(len(names))], shrink=0.5, location="bottom", pad=0.02)
    fig.suptitle("Breakout student tickets (mask/weights): share of each cell's input weights kept (x: never lit)",
                 fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def kept_share(masks: list[dict[int, torch.Tensor]], levels: list[int], obs_shape: tuple[int, ...]
               ) -> dict[int, torch.Tensor]:
    """Per level, the share of each cell's first-layer weights (its column) the tickets keep, mean over the tickets'
    input ``masks`` (:func:`results_mazegrid.input_masks`; ``obs_shape``; 0 only where every ticket has pruned the
    whole column)."""
    return {level: torch.stack([m[level].reshape(m[level].shape[0], *obs_shape).float().mean(0) for m in masks]
                               ).mean(0) for level in levels}


def cell_verdict(kept: dict[int, torch.Tensor], lit: np.ndarray, names: tuple[str, ...], last: int,
                 per_seed: list[dict[int, dict[str, ChannelMask]]]) -> str:
    """The paper's two Breakout claims: only the paddle's (actionable) row of the paddle channel survives, and the
    ball and trail channels lose their bottom row; where no column is cut yet, which way the pruning leans."""
    c = {name: i for i, name in enumerate(names)}
    final = kept[last]
    paddle_row, paddle_off = float(final[c["paddle"], BOTTOM].mean()), float(final[c["paddle"], :BOTTOM].mean())
    bottom = {name: float(final[c[name], BOTTOM].mean()) for name in ("ball", "trail")}
    above = {name: float(final[c[name], :BOTTOM].mean()) for name in ("ball", "trail")}
    share = {name: mean_sd([s[last][name].weights_kept for s in per_seed]) for name in names}
    text = (f"At the last level ({last}), the paddle channel's bottom-row cells keep {paddle_row:.1%} of their "
            f"first-layer weights and the cells above {paddle_off:.1%}; the ball channel's bottom row keeps "
            f"{bottom['ball']:.1%} against {above['ball']:.1%} on its other rows, the trail channel's "
            f"{bottom['trail']:.1%} against {above['trail']:.1%} (mean over seeds). ")
    cut = final == 0  # cells out of view in every ticket: all of their first-layer weights pruned
    cut_off, cut_row = int(cut[c["paddle"], :BOTTOM].sum()), int(cut[c["paddle"], BOTTOM].sum())
    cut_bottom = {name: int(cut[c[name], BOTTOM].sum()) for name in ("ball", "trail")}
    cut_above = {name: int(cut[c[name], :BOTTOM].sum()) for name in ("ball", "trail")}
    rows, cells = BOTTOM * final.shape[-1], final.shape[-1]  # cells above the bottom row, cells in it
    text += (f"Cells cut from view in every ticket: paddle {cut_off}/{rows} above its row and {cut_row}/{cells} in "
             f"it; ball {cut_bottom['ball']}/{cells} in the bottom row and {cut_above['ball']}/{rows} above; trail "
             f"{cut_bottom['trail']}/{cells} and {cut_above['trail']}/{rows}. ")
    text += "The paper's claim that only the paddle's row of the paddle channel survives " + _claim(
        cut_off == rows and cut_row == 0, cut_off / rows > cut_row / cells)
    text += "Its claim that the ball and trail channels lose their bottom row " + _claim(
        all(n == cells for n in cut_bottom.values()),
        all(cut_bottom[n] / cells > cut_above[n] / rows for n in cut_bottom))
    if not cut.any():
        leans = paddle_off < paddle_row and all(bottom[n] < above[n] for n in bottom)
        text += (f"No cell is cut yet (the sparsest keeps {float(final.min()):.1%} of its weights: a cell drops out "
                 "of view only when every one of its first-layer weights is gone), "
                 + ("but the pruning leans the paper's way: those cells lose their weights faster than the rest. "
                    if leans else "and the pruning does not lean the paper's way yet. "))
    never = [name for name in ("ball", "trail") if not lit[c[name], BOTTOM].any()]
    if never and not lit[c["paddle"], :BOTTOM].any():
        text += ("None of these cells is ever lit in the observations the student learns from (the paddle lives in "
                 "the bottom row; the ball reaches it only in the terminal observation, which no policy acts on): "
                 "their weights are never trained and keep their initial size, so magnitude pruning removes them as "
                 "its threshold passes that size, the paper's reading (no action-relevant information) in its "
                 "plainest form. ")
    order = sorted(share, key=lambda name: share[name][0], reverse=True)
    return text + ("Share of each channel's input weights kept at the last level, most first: "
                   + ", ".join(f"{name} {share[name][0]:.3f} ± {share[name][1]:.3f}" for name in order) + ".")


def _claim(holds: bool, partly: bool) -> str:
    """How a cell claim fared, as the end of its sentence."""
    return "holds. " if holds else "holds in part. " if partly else "does not show at this depth. "


def section(uri: str) -> str:
    """Run (or resume) the expert and the study, write the study's report, and return the Markdown section."""
    chains, rows, stats = run_study(uri, STUDY, OUT)
    tickets = sorted((c for c in chains if c.condition == "mask/weights"), key=lambda c: c.seed)
    density = {k: d for k, (d, _, _) in mean_curve(tickets).items()}
    last = max(density)
    picks = sorted({0, last // 2, last})
    expert = expert_run(uri, ROOT / "configs" / EXPERT_CONFIG)
    lit = lit_cells(uri, expert)
    names = input_names(ENV_ID, lit.shape)
    masks = [input_masks(uri, c) for c in tickets]
    per_seed = [chain_channels(m, lit, names) for m in masks]
    kept = kept_share(masks, picks, lit.shape)
    plot_cells(kept, lit, names, density, OUT / STUDY.name / "cells.png")
    (group,) = input_groups(tickets)
    expert_return, expert_minutes = expert_summary(uri, expert)
    newline = "\n"
    return f"""## MinAtar Breakout, distillation (paper Figure 6 right, SI Figure 9)

Q-value distillation (Huber loss between expert and student Q-values) of the paper's MLP student (1024-512) on
`MinAtar/Breakout-v1` (4 object channels of 10x10 cells: {', '.join(names)}), all four conditions.
The expert is a DQN with the teacher MLP (512-256) trained by `lth expert --config configs/{EXPERT_CONFIG}` (the
paper's Table 11 at 2M frames instead of 15M; best greedy return {expert_return:.1f}); it acts with epsilon
{EXPERT_EPS} while the student learns. `configs/{STUDY.config}` with `{' '.join(SETTINGS)}`: {budget(STUDY)}.
Seeds {STUDY.seeds}, {STUDY.levels} levels (density down to {0.8 ** (STUDY.levels - 1):.3f}); MLflow experiment
`{STUDY.experiment}`; {wall_minutes(uri, STUDY.experiment):.0f} min on this machine as two Ray populations of 6
members, one per core (part of that time shared with another study); the expert took
{expert_minutes:.0f} min. A random policy scores about 0.5.

![MinAtar Breakout, distillation](results/{STUDY.name}/return_vs_density.png)

{newline.join(rows)}

{verdict(stats)}

### Which cells each channel keeps (Figure 6 right)

The paper reports that in Breakout only the actionable (bottom) row of the paddle channel survives, and that the
ball and trail channels lose their bottom row, where the ball only arrives when the episode ends. A cell of a
channel is *seen* while its column in the student's first layer keeps a weight; the *lit* cells are those the
expert's data light at least once in 100k frames (`lit_cells`). The figure shows the share of each cell's 1024
first-layer weights the ticket keeps.

![cells](results/{STUDY.name}/cells.png)

![input masks across levels](results/{STUDY.name}/input_masks_{group}.png)

(Mean over the {len(tickets)} mask/weights seeds.)

{newline.join(channel_rows(per_seed, density, names, "channel", "lit / never-lit cells seen"))}

{cell_verdict(kept, lit, names, last, per_seed)}

Per level and seed: [the study's report](results/{STUDY.name}/summary.md).
"""


def expert_summary(uri: str, run_id: str) -> tuple[float, float]:
    """The expert run's best greedy evaluation return and its wall time in minutes."""
    run = MlflowClient(uri).get_run(run_id)
    return run.data.metrics["eval/best_return"], (run.info.end_time - run.info.start_time) / 60000
