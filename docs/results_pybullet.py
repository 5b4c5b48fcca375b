"""Continuous control learns (the PyBullet half of the paper's Figure 1 right): one dense PPO run per task at the
paper's Table 7 settings and budget, its greedy evaluation return against env frames, and its final return beside
rl-baselines3-zoo's published PPO return for the same task.

Each run is an ordinary ``lth fit`` logged to the experiment ``paper/<env id>/ppo/dense``; a finished run there
is reused, so a rerun only redraws. Then a 4-condition ticket study on Hopper (:data:`TICKETS`, a
:class:`results_tickets.TicketStudy` resumed from MLflow) at the budget that fits. :func:`section` returns the
Markdown; ``docs/make_results.py`` writes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow import MlflowClient
from results_tickets import TicketStudy, budget, run_study, verdict, wall_minutes

from lth import figures as plt
from lth.cli import main as lth
from lth.report import Chain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "pybullet"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
ZOO = ("rl-baselines3-zoo's benchmark table (PPO, 2M steps, tuned hyperparameters and observation "
       "normalisation): https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md")


@dataclass(frozen=True)
class Task:
    """One PyBullet task: its config and rl-baselines3-zoo's PPO return on it."""

    env_id: str
    config: str  # under configs/
    zoo_return: float

    @property
    def experiment(self) -> str:
        return f"paper/{self.env_id}/ppo/dense"


TASKS = (Task("HalfCheetahBulletEnv-v0", "pybullet/halfcheetah_ppo.yaml", 2925.0),
         Task("HopperBulletEnv-v0", "pybullet/hopper_ppo.yaml", 2575.0))
#: The 4-condition ticket study on Hopper at the budget that fits a session: 100k frames per level instead of 1.5M
#: (15x less; at 50k, most agents still fall over within 100 steps), half the remaining weights pruned per level
#: instead of 20% so that 6 levels reach density 0.031, evaluation of 5 episodes every 50k frames; two Ray
#: populations of 4, one per core (~1,400 training frames/s each).
AMOUNT, EVAL_EVERY, EVAL_EPISODES = 0.5, 50_000, 5
TICKETS = TicketStudy("hopper_ppo_tickets", "Hopper, PPO", "pybullet/hopper_ppo.yaml",
                      "paper/HopperBulletEnv-v0/ppo/tickets-100k", "0-3", 6, frames=100_000,
                      extra=("--imp.amount", str(AMOUNT), "--data.init_args.eval_every", str(EVAL_EVERY),
                             "--data.init_args.eval_episodes", str(EVAL_EPISODES), "--population", "4",
                             "--executor", "ray"))


@dataclass
class Curve:
    """One finished run's evaluations."""

    run_id: str
    frames: list[int]
    returns: list[float]
    minutes: float


def fit_args(task: Task, extra: Sequence[str] = ()) -> list[str]:
    """The ``lth fit`` command line of ``task``'s dense run (``extra``: e.g. a smaller budget)."""
    return ["fit", "--config", str(ROOT / "configs" / task.config), "--trainer.logger.init_args.experiment_name",
            task.experiment, *QUIET, *extra]


def finished_curve(uri: str, task: Task) -> Curve | None:
    """The newest finished run of ``task``'s experiment with its ``eval/return`` history, if there is one."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(task.experiment)
    runs = [] if found is None else client.search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, "eval/return"), key=lambda m: m.step)
        if history:
            return Curve(run.info.run_id, [m.step for m in history], [m.value for m in history],
                         (run.info.end_time - run.info.start_time) / 60000)
    return None


def curve(uri: str, task: Task, extra: Sequence[str] = ()) -> Curve:
    """``task``'s dense run, trained now unless a finished one is stored."""
    found = finished_curve(uri, task)
    if found is None:
        lth(fit_args(task, extra))
        found = finished_curve(uri, task)
    assert found is not None, f"lth fit logged no eval/return to {task.experiment}"
    return found


def plot(curves: dict[Task, Curve], path: Path) -> None:
    """Each task's evaluation return against frames, with the zoo's return as a dashed line."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4))
    for ax, (task, c) in zip(axes if len(curves) > 1 else [axes], curves.items(), strict=True):
        ax.plot(c.frames, c.returns, marker="o", markersize=3, label="lth PPO (greedy evaluation)")
        ax.axhline(task.zoo_return, color="grey", linestyle="--", label="rl-baselines3-zoo PPO, 2M steps")
        ax.set(title=task.env_id, xlabel="env frames", ylabel="return")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def denser_levels(stats: dict[str, dict], seeds: int, levels: tuple[int, ...] = (1, 2)) -> str:
    """The conditions at the denser ``levels`` (before an all-condition collapse), whether random/reinit falls
    first there, as the paper reports for moderate sparsity, and whether at the sparsest of ``levels`` both
    conditions that keep the mask lie above both baselines (the paper's order)."""
    at = {c: [s["curve"][k] for k in levels] for c, s in stats.items()}
    order = sorted(at, key=lambda c: sum(m for _, m, _ in at[c]), reverse=True)
    densities = " and ".join(f"{d:.3f}" for d, _, _ in at[order[0]])
    text = (f"At densities {densities} (mean best return per condition): "
            + ", ".join(f"{c} " + " and ".join(f"{m:.0f}" for _, m, _ in at[c]) for c in order) + ". ")
    worst = max(sd for points in at.values() for _, _, sd in points)
    if order[-1] == "random/reinit":
        text += ("random/reinit falls first, as the paper reports (\"the traditional random/re-init baseline "
                 "performs worse already for moderate levels of sparsity\"). ")
    density, means = at[order[0]][-1][0], {c: points[-1][1] for c, points in at.items()}
    masked = min(means["mask/weights"], means["mask/permuted"])
    above = "lie above both baselines, the paper's order" if masked > max(
        means["permuted/permuted"], means["random/reinit"]) else "do not both lie above both baselines"
    return text + (f"At density {density:.3f} the two conditions that keep the mask {above}; this rests on "
                   f"{seeds} seeds (sd up to {worst:.0f} at these levels).")


def dense_agreement(chains: list[Chain]) -> str:
    """Whether a seed's conditions, which share level 0's dense training (initial weights, data and generators),
    end it with the same best return; the ones that do not are named with theirs."""
    by_seed: dict[int, dict[str, float]] = {}
    for chain in chains:
        by_seed.setdefault(chain.seed, {})[chain.condition] = chain.levels[0]["ticket/best_return"]
    apart = []
    for seed, returns in sorted(by_seed.items()):
        shared = Counter(returns.values()).most_common(1)[0][0]  # the return most of the seed's conditions share
        apart += [f"{c} {r:.1f} against {shared:.1f} in seed {seed}" for c, r in returns.items() if r != shared]
    if not apart:
        return "A seed's four conditions share level 0's dense training and end it with the same best return."
    return ("A seed's four conditions share level 0's dense training (same initial weights, data and generators), "
            f"yet not always its best return: {'; '.join(apart)}. Float rounding by population position does "
            "this: ATen computes the last (size mod 32, here) elements of an elementwise op (sigmoid, softplus, atanh) "
            "in scalar code, an ulp away from its vector code, and with members stacked member-major those "
            "elements lie in the last member's slice; PPO on Hopper grows that ulp into a different agent within "
            "100k frames.")


def tickets_section(uri: str) -> str:
    """Run (or resume) the Hopper ticket study; its subsection."""
    chains, rows, stats = run_study(uri, TICKETS, ROOT / "docs" / "results")
    seeds = len({c.seed for c in chains})
    newline = "\n"
    return f"""### Tickets on Hopper

The four conditions on `HopperBulletEnv-v0`, actor and critic pruned together, at the budget that fits here:
{budget(TICKETS)}. Each level prunes {AMOUNT:.0%} of the remaining weights (the paper: 20%), so {TICKETS.levels} levels
reach density {(1 - AMOUNT) ** (TICKETS.levels - 1):.3f}; greedy evaluation of {EVAL_EPISODES} episodes every
{EVAL_EVERY:,} frames. Seeds
{TICKETS.seeds}; MLflow experiment `{TICKETS.experiment}`; {wall_minutes(uri, TICKETS.experiment):.0f} min on this
machine as two Ray populations of 4. At this budget an agent has only begun to hop (the dense run above scores ~700
at 100k frames against 1,900 at 1.5M; at 50k most population members still fell within 100 steps): this tests
whether the conditions keep what a short training reaches, not the paper's full-budget curves. {dense_agreement(chains)}

![Hopper, PPO tickets](results/{TICKETS.name}/return_vs_density.png)

{newline.join(rows)}

{verdict(stats)} {denser_levels(stats, seeds)}

Per level and seed: [the study's report](results/{TICKETS.name}/summary.md).
"""


def section(uri: str, extra: Sequence[str] = ()) -> str:
    """Train (or find) every task's dense run and the Hopper ticket study; their section of ``docs/RESULTS.md``."""
    curves = {task: curve(uri, task, extra) for task in TASKS}
    plot(curves, OUT / "learning_curves.png")
    rows = ["| task | frames | final return | best return | rl-baselines3-zoo PPO (2M steps) | final / zoo | "
            "minutes here |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for task, c in curves.items():
        rows.append(f"| {task.env_id} | {c.frames[-1]:,} | {c.returns[-1]:.0f} | {max(c.returns):.0f} | "
                    f"{task.zoo_return:.0f} | {c.returns[-1] / task.zoo_return:.2f} | {c.minutes:.0f} |")
    settings = yaml.safe_load((ROOT / "configs" / TASKS[0].config).read_text())["data"]["init_args"]
    learned = [t.env_id for t, c in curves.items() if c.returns[-1] >= 0.5 * t.zoo_return]
    verdict = (f"{len(learned)} of {len(curves)} tasks reach at least half of the zoo's return"
               + (f" ({', '.join(learned)})" if learned else "") + ". ")
    newline = "\n"
    return f"""## Continuous control learns (paper Figure 1 right, PyBullet)

One dense PPO agent per task with the paper's Table 7 settings and budget (`configs/pybullet/*_ppo.yaml`:
64-64 tanh actor and critic, {settings['num_envs']} envs x {settings['rollout_steps']} steps per rollout,
{settings['total_frames']:,} frames, greedy evaluation of {settings['eval_episodes']} episodes every
{settings['eval_every']:,} frames), seed 0. MLflow experiments: {', '.join(f'`{t.experiment}`' for t in curves)}.

![PyBullet learning curves](results/pybullet/learning_curves.png)

{newline.join(rows)}

{verdict}The reference is {ZOO}; its agents train 2M steps with per-task tuned hyperparameters and normalised
observations and rewards, the paper's Table 7 agents 1.5M frames with one shared setting and no normalisation,
so the zoo's number is an upper mark, not the paper's own (the paper shows only ticket curves, no dense numbers).

{tickets_section(uri)}"""
