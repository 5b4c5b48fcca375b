"""Acrobot's minimal task representation (paper section 4.2, Figure 8 middle and bottom): which of the six inputs
IMP keeps in the actor's first layer with the 0.1-scaled Kaiming input layer, and a dense agent trained on them.

1. ``lth imp`` on ``configs/init_study/acrobot_kaiming_input0.1.yaml``, the ticket chain (mask/weights) of every
   seed as one population, at :data:`FRAMES` frames per level (the paper's 500k does not fit a session).
2. ``lth report``: figures and per-seed tables under ``docs/results/acrobot_input0.1``.
3. ``lth transfer``: dense agents on the inputs the first seed's actor keeps at the first level where it sees
   only the two angular velocities and still solves the task (or, if no seed's does, the first seed's sparsest
   level still within 95% of its dense return), against dense agents on all six inputs.

:func:`section` returns the Markdown; ``docs/make_results.py --items acrobot-inputs`` writes it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from results_tickets import mean_curve, sparsest_kept, wall_minutes

from lth.report import Chain, load_chains, mean_sd, run_report
from lth.runner import run_imp, run_transfer
from lth.transfer import ARMS, TransferSettings, transfer_tags
from lth.transfer_report import Curve, load_curves

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
CONFIG = ROOT / "configs" / "init_study" / "acrobot_kaiming_input0.1.yaml"
EXPERIMENT = "Acrobot-v1/ppo/mlp128x64/init-kaiming_input0.1"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SEEDS = (0, 1, 2, 3, 4)
LEVELS = 16
FRAMES = 100_000  # per level; the paper's Table 5 trains 500k
PAPER_FRAMES = 500_000
FLOOR = -500.0  # Acrobot's worst return: 500 steps at -1
SOLVED = -100.0  # gymnasium's reward threshold for Acrobot-v1
TRIG = ("cos theta1", "sin theta1", "cos theta2", "sin theta2")
VELOCITY = ("theta1 velocity", "theta2 velocity")


def velocity_only_level(chain: Chain) -> int | None:
    """The first level at which the actor sees both angular velocities and none of the angles' cos/sin."""
    return chain.sees_only_from(VELOCITY, TRIG)


def kept_level(chain: Chain) -> int:
    """The sparsest level up to which the chain's best return stays within 95% of its dense one (above -500)."""
    return sparsest_kept(mean_curve([chain]), FLOOR)[0]


def solves_on_velocities(chain: Chain) -> bool:
    """Whether the chain's best return at its first velocity-only level reaches gymnasium's threshold."""
    level = velocity_only_level(chain)
    return level is not None and chain.levels[level]["ticket/best_return"] >= SOLVED


def transfer_source(chains: list[Chain]) -> tuple[Chain, int, str]:
    """The ticket level the transfer copies its inputs from, and why that one (the chains in seed order)."""
    for chain in chains:
        if solves_on_velocities(chain):
            return chain, velocity_only_level(chain), "the first level where it sees only the two angular velocities"
    return chains[0], kept_level(chains[0]), ("its sparsest level within 95% of its dense return (no seed solves the "
                                              "task on the velocities alone)")


def transfer_filter(settings: TransferSettings) -> str:
    """MLflow's filter for one transfer's fits (the transfer experiment also holds fits from other source levels)."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in transfer_tags(settings).items())


def _cell(level: int | None) -> str:
    return "alive" if level is None else str(level)


def seed_rows(chains: list[Chain]) -> list[str]:
    """Per seed: the level at which each input dies, when the actor first sees only the velocities, and returns."""
    rows = ["| seed | " + " | ".join(TRIG + VELOCITY) + " | actor sees only the velocities from level | best return "
            "there | dense best return |", "| ---: |" + " ---: |" * 9]
    for chain in chains:
        only = velocity_only_level(chain)
        there = "" if only is None else f"{chain.levels[only]['ticket/best_return']:.1f}"
        deaths = " | ".join(_cell(chain.dead_from(n)) for n in TRIG + VELOCITY)
        dense = chain.levels[0]["ticket/best_return"]
        rows.append(f"| {chain.seed} | {deaths} | {'never' if only is None else only} | {there} | {dense:.1f} |")
    return rows


def claim_verdict(chains: list[Chain]) -> str:
    """The paper's claim (the cos/sin inputs go, both velocities stay) against every seed's actor."""
    n = len(chains)
    trig_first = sum(all(c.dead_from(t) is not None for t in TRIG) and all(
        c.dead_from(v) is None or c.dead_from(v) > max(c.dead_from(t) for t in TRIG) for v in VELOCITY)
        for c in chains)
    only = [c for c in chains if velocity_only_level(c) is not None]
    solved = [c for c in only if solves_on_velocities(c)]
    velocity_dead = sum(any(c.dead_from(v) is not None for v in VELOCITY) for c in chains)
    trig_alive = {t: sum(c.dead_from(t) is None for c in chains) for t in TRIG}
    text = (f"In {trig_first} of {n} seeds all four cos/sin inputs lose their last actor weight before either angular "
            f"velocity does, and in {len(only)} of {n} the actor sees only the two velocities at some level; in "
            f"{len(solved)} of those it still solves the task there (best return >= {SOLVED:.0f}). ")
    if trig_first == n:
        text += "This agrees with the paper's claim. "
    elif trig_first:
        text += "This partly agrees with the paper's claim. "
    else:
        text += "This does not reproduce the paper's claim. "
    alive = [f"{t} ({k} of {n})" for t, k in trig_alive.items() if k]
    if alive:
        text += f"Inputs still connected at the last level in some seeds: {', '.join(alive)}. "
    if velocity_dead:
        text += (f"In {velocity_dead} of {n} seeds a velocity input dies too, by the sparsest levels, as the "
                 "0.1-scaled input layer keeps losing weights once the angles are gone.")
    return text.strip()


def transfer_verdict(curves: list[Curve]) -> str:
    """Both arms' seeds that solve the task, and their best and evaluation-averaged returns."""
    best = {arm: mean_sd([max(c.returns) for c in curves if c.arm == arm]) for arm in ARMS}
    average = {arm: mean_sd([statistics.fmean(c.returns) for c in curves if c.arm == arm]) for arm in ARMS}
    solved = {arm: sum(max(c.returns) >= SOLVED for c in curves if c.arm == arm) for arm in ARMS}
    n = {arm: sum(c.arm == arm for c in curves) for arm in ARMS}
    text = (f"{solved['ticket']} of {n['ticket']} seeds solve the task (best return >= {SOLVED:.0f}) on the ticket's "
            f"inputs, {solved['all']} of {n['all']} on all six; best return {best['ticket'][0]:.1f} ± "
            f"{best['ticket'][1]:.1f} against {best['all'][0]:.1f} ± {best['all'][1]:.1f} (averaged over every "
            f"evaluation: {average['ticket'][0]:.1f} against {average['all'][0]:.1f}): ")
    if solved["ticket"] >= solved["all"]:
        text += "agents learn the task from the kept inputs alone as often as from all of them, as in the paper's "
        text += "Figure 8 (bottom)."
    else:
        text += "fewer agents learn it from the kept inputs than from all of them, unlike the paper's Figure 8 "
        text += "(bottom)."
    if min(solved.values()) < min(n.values()):
        text += (f" Not every dense agent solves Acrobot at {FRAMES // 1000}k frames with the 0.1-scaled input layer, "
                 "so this comparison is noisy at this budget.")
    return text


def section(uri: str) -> str:
    """Run (or resume) the study and the transfer; their section of ``docs/RESULTS.md``."""
    frames = ["--data.init_args.total_frames", str(FRAMES)]
    run_imp(["--config", str(CONFIG), "--imp.levels", str(LEVELS), "--seeds", ",".join(map(str, SEEDS)), *frames,
             *QUIET])
    run_report([EXPERIMENT], uri, OUT / "acrobot_input0.1")
    chains = sorted((c for c in load_chains(uri, [EXPERIMENT]) if c.seed in SEEDS and c.condition == "mask/weights"),
                    key=lambda c: c.seed)
    first, level, chosen = transfer_source(chains)
    kept_inputs = [n for n in TRIG + VELOCITY if first.levels[level][f"inputs/actor/{n}"] > 0]
    transfer = run_transfer(["--config", str(CONFIG), *frames, *QUIET], ticket=first.run_id, level=level,
                            seeds=SEEDS, modules=["actor"], out=OUT / "acrobot_transfer")
    rows = [row for row in transfer.summary.read_text().split("\n") if row.startswith("|")]
    curves = load_curves(transfer.tracking_uri, transfer.experiment, transfer.settings)
    curve = mean_curve(chains)
    returns = ["| level | density | best return (mean ± sd over seeds) |", "| ---: | ---: | ---: |"]
    returns += [f"| {k} | {density:.3f} | {mean:.1f} ± {sd:.1f} |" for k, (density, mean, sd) in curve.items()]
    transfer_minutes = wall_minutes(uri, transfer.experiment, transfer_filter(transfer.settings))
    newline = "\n"
    return f"""## Minimal task representations in Acrobot (paper section 4.2, Figure 8 middle)

**Setup.** PPO on `Acrobot-v1` with the paper's Table 5 values (`{CONFIG.relative_to(ROOT)}`): actor and critic
128-64 tanh, Kaiming-uniform init with the input layer scaled by 0.1, {FRAMES // 1000}k frames per level (the
paper's {PAPER_FRAMES // 1000}k scaled down {PAPER_FRAMES // FRAMES}x to fit a session; the dense level 0 reaches
{curve[0][1]:.1f} ± {curve[0][2]:.1f}, against the task's -100 threshold), IMP pruning 20% of actor and critic
per level with rewinding, the ticket condition only, {LEVELS} levels (density down to
{0.8 ** (LEVELS - 1):.3f}), seeds {list(SEEDS)}, one population ({wall_minutes(uri, EXPERIMENT):.0f} min here, and
{transfer_minutes:.0f} min for the transfer's fits). MLflow experiments: `{EXPERIMENT}` and
`{transfer.experiment}` (the transfer).

**The paper's claim** (Figure 8 middle): IMP removes the sine and cosine of both link angles and keeps the two
angular velocities, which suffice to pump energy into the swing.

**Here:** {claim_verdict(chains)}

Level at which each input loses its last first-layer weight in the actor (`alive`: still connected at level
{LEVELS - 1}):

{newline.join(seed_rows(chains))}

![actor input weight per level](results/acrobot_input0.1/inputs_actor.png)

![actor input masks across levels](results/acrobot_input0.1/input_masks_actor.png)

Best greedy evaluation return of the ticket per level:

{newline.join(returns)}

The critic's inputs and the per-seed tables: [the full report](results/acrobot_input0.1/summary.md).

### Transfer: a dense agent on the inputs the ticket kept (Figure 8 bottom)

Dense agents (same config and budget, fresh weights) on the inputs seed {first.seed}'s actor keeps at level {level}
({chosen}: {', '.join(kept_inputs)}; the others zeroed in every observation) against dense agents on all six,
seeds {list(SEEDS)}:

![transfer learning curves](results/acrobot_transfer/learning_curves.png)

{newline.join(rows)}

{transfer_verdict(curves)}
"""
