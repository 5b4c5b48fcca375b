"""Tickets against the three baselines (paper Figures 2 and 3, SI Figure 15): ``docs/RESULTS.md``'s section on
issue 15's first item, from ``lth imp --imp.conditions all`` studies run as populations on this machine.

Each study resumes from MLflow (a rerun only redraws). Distillation studies first train (or find) their PPO
expert with ``lth expert``. :func:`section` returns the Markdown; ``docs/make_results.py`` writes it.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from lth.callbacks import condition_names
from lth.cli import main as lth
from lth.report import Chain, load_chains, mean_sd, run_report
from lth.runner import configure_process, run_imp
from lth.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
KEEP = 0.95  # "keeps its dense return": the mean best return at a level is at least this share of level 0's


@dataclass(frozen=True)
class TicketStudy:
    """One environment and algorithm: all four conditions over ``seeds``, ``levels`` IMP levels."""

    name: str  # the report's folder under docs/results
    title: str
    config: str  # under configs/
    experiment: str
    seeds: str
    levels: int
    expert_config: str | None = None  # a distillation study's teacher, trained by `lth expert`
    extra: tuple[str, ...] = ()
    frames: int | None = None  # env frames per level when the config's (the paper's) budget does not fit
    floor: float = 0.0  # the task's worst return (Acrobot: -500): "keeping 95%" is measured above it

    def args(self, uri: str) -> list[str]:
        args = ["--config", str(ROOT / "configs" / self.config), "--imp.conditions", "all", "--seeds", self.seeds,
                "--imp.levels", str(self.levels), "--trainer.logger.init_args.experiment_name", self.experiment,
                *self.extra, *QUIET]
        if self.frames is not None:
            args += ["--data.init_args.total_frames", str(self.frames)]
        if self.expert_config is not None:
            args += ["--data.init_args.expert", expert_run(uri, ROOT / "configs" / self.expert_config)]
        return args


STUDIES = (
    TicketStudy("cartpole_ppo_tickets", "CartPole, PPO", "cartpole/ppo.yaml", "paper/CartPole-v1/ppo/tickets",
                "0-9", 20),
    TicketStudy("cartpole_distill_tickets", "CartPole, distillation", "cartpole/distill.yaml",
                "paper/CartPole-v1/distill/tickets", "0-9", 20, expert_config="cartpole/ppo_expert.yaml"),
    TicketStudy("cartpole_ppo_actor_tickets", "CartPole, PPO, actor only", "cartpole/ppo.yaml",
                "paper/CartPole-v1/ppo/tickets-actor", "0-4", 20, extra=("--imp.modules", "[actor]")),
    TicketStudy("acrobot_ppo_tickets", "Acrobot, PPO", "acrobot/ppo.yaml", "paper/Acrobot-v1/ppo/tickets", "0-4",
                15, frames=100_000, floor=-500.0),
    TicketStudy("acrobot_distill_tickets", "Acrobot, distillation", "acrobot/distill.yaml",
                "paper/Acrobot-v1/distill/tickets", "0-4", 25, expert_config="acrobot/ppo.yaml", frames=50_000,
                floor=-500.0),
)
PAIRS = (("CartPole, PPO", "CartPole, distillation"), ("Acrobot, PPO", "Acrobot, distillation"))


def expert_run(uri: str, config: Path) -> str:
    """The run id of the newest finished expert of ``config``'s experiment, trained now if there is none."""
    import yaml

    experiment = yaml.safe_load(config.read_text())["trainer"]["logger"]["init_args"]["experiment_name"]
    client = MlflowClient(uri)

    def newest() -> str | None:
        found = client.get_experiment_by_name(experiment)
        runs = [] if found is None else client.search_runs(
            [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
        return next((r.info.run_id for r in runs
                     if any(a.path == "expert.ckpt" for a in client.list_artifacts(r.info.run_id))), None)

    if newest() is None:
        lth(["expert", "--config", str(config), *QUIET])
    run_id = newest()
    assert run_id is not None, f"lth expert stored no expert.ckpt in {experiment}"
    return run_id


def wall_minutes(uri: str, experiment: str, runs_filter: str = "tags.level != ''") -> float:
    """Minutes during which at least one matching run was open (by default the study's level runs; chain runs are
    left out, a resume reopens them): the union of the runs' intervals, so the idle time between sessions of a
    resumed study does not count."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], runs_filter,
                              max_results=5000)
    return busy_minutes([(r.info.start_time, r.info.end_time) for r in runs if r.info.end_time])


def busy_minutes(intervals: list[tuple[int, int]]) -> float:
    """The length of the union of ``(start, end)`` intervals in milliseconds, in minutes."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total / 60000


def mean_curve(chains: list[Chain]) -> dict[int, tuple[float, float, float]]:
    """Per level every chain has: (density, mean best return, sd)."""
    levels = sorted(set.intersection(*(set(c.levels) for c in chains)))
    return {k: (statistics.fmean(c.levels[k]["density"] for c in chains),
                *mean_sd([c.levels[k]["ticket/best_return"] for c in chains])) for k in levels}


def sparsest_kept(curve: dict[int, tuple[float, float, float]], floor: float = 0.0) -> tuple[int, float]:
    """The sparsest level (and its density) up to which every level keeps :data:`KEEP` of level 0's mean, both
    counted above the task's worst return ``floor``."""
    dense = curve[0][1]
    last = 0
    for k in sorted(curve):
        if curve[k][1] - floor < KEEP * (dense - floor):
            break
        last = k
    return last, curve[last][0]


def study_rows(study: TicketStudy, chains: list[Chain]) -> tuple[list[str], dict[str, dict]]:
    """The study's table (one row per condition) and, per condition, its curve and sparsest kept level."""
    by = {c: [ch for ch in chains if ch.condition == c] for c in condition_names()}
    stats = {}
    rows = ["| condition | seeds | dense return | sparsest density keeping 95% | mean return at density <= 0.1 | "
            "at the last level |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for condition, group in by.items():
        if not group:
            continue
        curve = mean_curve(group)
        level, density = sparsest_kept(curve, study.floor)
        low = [k for k in curve if curve[k][0] <= 0.1]
        sparse = [curve[k][1] for k in low]
        last = max(curve)
        per_seed = [statistics.fmean(c.levels[k]["ticket/best_return"] for k in low) for c in group] if low else []
        stats[condition] = {"curve": curve, "kept": (level, density), "sparse": statistics.fmean(sparse)
                            if sparse else float("nan"), "last": curve[last],
                            "sparse_se": statistics.stdev(per_seed) / len(per_seed) ** 0.5 if len(per_seed) > 1
                            else float("nan")}
        rows.append(f"| {condition} | {len(group)} | {curve[0][1]:.1f} ± {curve[0][2]:.1f} | {density:.3f} "
                    f"(level {level}) | {stats[condition]['sparse']:.1f} | {curve[last][1]:.1f} ± "
                    f"{curve[last][2]:.1f} (density {curve[last][0]:.3f}) |")
    return rows, stats


def run_study(uri: str, study: TicketStudy | tuple[TicketStudy, ...], out: Path
              ) -> tuple[list[Chain], list[str], dict[str, dict]]:
    """Run (or resume) ``study``, write its report to ``out / study.name``, and read it back: its chains, table
    and per-condition stats (:func:`study_rows`). A tuple is one study run in parts (one ``lth imp`` each, e.g. one
    per seed when each seed has its own environment) that share its first part's name and experiment."""
    parts = study if isinstance(study, tuple) else (study,)
    for part in parts:
        run_imp(part.args(uri))
    run_report([parts[0].experiment], uri, out / parts[0].name)
    chains = load_chains(uri, [parts[0].experiment])
    return (chains, *study_rows(parts[0], chains))


def verdict(stats: dict[str, dict], floor: float = 0.0) -> str:
    """The paper's ordering (mask/weights ~ mask/permuted >> permuted/permuted, random/reinit) against the
    measured mean returns at density <= 0.1 and the sparsest densities keeping 95% of the dense return, then which
    of the comparisons it rests on the seeds resolve (:func:`unresolved`)."""
    return _ordering(stats, floor) + " " + unresolved(stats)


def _ordering(stats: dict[str, dict], floor: float) -> str:
    sparse = {c: s["sparse"] for c, s in stats.items()}
    kept = {c: s["kept"][1] for c, s in stats.items()}
    order = sorted(sparse, key=sparse.get, reverse=True)
    weights, permuted = sparse["mask/weights"], sparse["mask/permuted"]
    baselines = (sparse["permuted/permuted"], sparse["random/reinit"])
    dense = stats["mask/weights"]["curve"][0][1]
    span = 0.1 * (max(dense, weights, permuted) - floor)  # 10% of the range above floor

    def beats(a: float, others: tuple[float, ...]) -> bool:
        """Above every one of ``others`` by more than 10% of the range: a lead, not a rounding of a tie."""
        return all(a - other > span for other in others)

    held = beats(weights, baselines) and beats(permuted, baselines)
    text = f"Ordered by mean best return at density <= 0.1: {', '.join(f'{c} {sparse[c]:.1f}' for c in order)}. "
    if max(sparse.values()) - min(sparse.values()) <= span:
        if max(sparse.values()) - floor < 0.5 * (dense - floor):
            return text + ("All four conditions fall together to less than half of the dense return by density 0.1: "
                           "the study prunes past what any condition survives at this budget, so the comparison "
                           "there neither shows nor refutes the paper's claim (the denser levels may still differ).")
        return text + ("All four conditions stay within 10% of each other down to the last level: this study does "
                       "not prune far enough to separate them, so it neither shows nor refutes the paper's claim.")
    if not held and beats(weights, (permuted, *baselines)):
        return text + ("Only the ticket itself beats both baselines; mask/permuted, the IMP mask with permuted "
                       "initial weights, does not: unlike in the paper, the mask alone does not carry the effect "
                       "here, the ticket's initial weights do.")
    if not held:
        return text + "Unlike in the paper, the conditions that keep the IMP mask do not beat both baselines here."
    if abs(weights - permuted) <= span:
        return text + ("Both conditions that keep the IMP mask beat both that permute it, and mask/permuted is within "
                       "10% of mask/weights: the paper's claim holds, the mask carries the ticket effect.")
    if permuted > weights:
        return text + ("Both conditions that keep the IMP mask beat both that permute it, and mask/permuted even "
                       f"scores above mask/weights ({permuted:.1f} against {weights:.1f}): the ticket's initial "
                       "weights add nothing here, the mask carries the ticket effect, as the paper claims.")
    return text + ("Partly as the paper claims: both conditions that keep the IMP mask beat both that permute "
                   "it, so the mask carries most of the effect; but mask/permuted stays below mask/weights "
                   f"({permuted:.1f} against {weights:.1f}; 95% of the dense return kept down to density "
                   f"{kept['mask/permuted']:.3f} against {kept['mask/weights']:.3f}), so here the ticket's initial "
                   "weights matter too, where the paper's two curves nearly coincide.")


#: The comparisons the paper's claim rests on: each mask condition against each baseline, and the two mask
#: conditions against each other.
COMPARED = (("mask/weights", "permuted/permuted"), ("mask/weights", "random/reinit"),
            ("mask/permuted", "permuted/permuted"), ("mask/permuted", "random/reinit"),
            ("mask/weights", "mask/permuted"))


def unresolved(stats: dict[str, dict]) -> str:
    """Which of :data:`COMPARED`'s differences in mean return at density <= 0.1 lie within two standard errors of
    the difference of the per-seed means (the seeds do not resolve them)."""
    within = []
    for a, b in COMPARED:
        diff = stats[a]["sparse"] - stats[b]["sparse"]
        se = (stats[a]["sparse_se"] ** 2 + stats[b]["sparse_se"] ** 2) ** 0.5
        if abs(diff) <= 2 * se:
            within.append(f"{a} - {b} = {diff:.1f} ± {se:.1f}")
    if not within:
        return "Every difference above exceeds two standard errors of the per-seed means."
    return ("Within two standard errors of the per-seed means, so not resolved at this seed count: "
            + "; ".join(within) + ".")


def budget(study: TicketStudy) -> str:
    """The study's frames per level, and by how much it scales the paper's (the config's) budget down."""
    import yaml

    paper = yaml.safe_load((ROOT / "configs" / study.config).read_text())["data"]["init_args"]["total_frames"]
    if study.frames is None or study.frames == paper:
        return f"the paper's settings and budget ({paper // 1000}k frames per level)"
    return (f"the paper's settings at {study.frames // 1000}k frames per level instead of its {paper // 1000}k "
            f"({paper / study.frames:.0f}x less, to fit a session)")


def pruned_further(kept: dict[str, tuple[int, float]], ppo: str, distill: str) -> str:
    """The paper's RL-against-distillation claim on one env: the sparsest densities keeping 95% of the return."""
    (pl, pd), (dl, dd) = kept[ppo], kept[distill]
    holds = "the claim holds here" if dd < pd else "the claim does not hold here"
    return (f"{ppo.split(',')[0]} tickets (mask/weights) keep 95% of their dense return down to density {pd:.3f} "
            f"(level {pl}) with PPO and {dd:.3f} (level {dl}) with distillation: {holds}.")


def section(uri: str) -> str:
    """Run (or resume) every study, write its report, and return the Markdown section."""
    parts = ["## Tickets against baselines (paper Figures 2 and 3, SI Figure 15)", "",
             "All four conditions of the paper's Table 1, trained as populations (`lth imp --imp.conditions all`); "
             "each chain prunes 20% of the remaining actor and critic (or student) weights per level and rewinds "
             "to its initialisation. Figures: mean best greedy evaluation return ± 1 sd over seeds against "
             "density (log scale). \"Keeping 95%\" is measured above the task's worst return (0 on CartPole, "
             "-500 on Acrobot, whose episodes end after 500 steps at -1).", ""]
    kept, sparse = {}, {}
    for study in STUDIES:
        _, rows, stats = run_study(uri, study, OUT)
        kept[study.title] = stats["mask/weights"]["kept"]
        sparse[study.title] = {condition: s["sparse"] for condition, s in stats.items()}
        options = f" with `{' '.join(study.extra)}`" if study.extra else ""
        parts += [f"### {study.title}", "",
                  f"`configs/{study.config}`{options}: {budget(study)}; seeds {study.seeds}, {study.levels} "
                  f"levels (density down to {0.8 ** (study.levels - 1):.3f}); MLflow experiment `{study.experiment}`; "
                  f"{wall_minutes(uri, study.experiment):.0f} min on this machine, one process, sharing it with other "
                  "work.", "",
                  f"![{study.title}](results/{study.name}/return_vs_density.png)", "", *rows, "",
                  verdict(stats, study.floor), "",
                  f"Per level and seed: [the study's report](results/{study.name}/summary.md).", ""]
    pairs = [pair for pair in PAIRS if all(title in kept for title in pair)]
    if pairs:
        parts += ["### PPO against distillation", "",
                  "The paper reports that distilled students can be pruned further than PPO agents before they "
                  "degrade. " + " ".join(pruned_further(kept, *pair) for pair in pairs) +
                  " The students are the sizes of the paper's Tables 2 and 4 (CartPole 128-128 against PPO's 64-64; "
                  "Acrobot 128-64, as PPO's)."]
        actor_kept = kept.get("CartPole, PPO, actor only")
        if actor_kept:
            distill = kept["CartPole, distillation"]
            parts[-1] += (" The paper's section 4 says its CartPole PPO agents had only the actor pruned; pruned "
                          f"that way, CartPole PPO tickets keep 95% down to an actor density of {actor_kept[1]:.3f} "
                          f"(level {actor_kept[0]}), " + ("sparser than" if actor_kept[1] < distill[1] else
                                                         "no sparser than") +
                          " the student, with the critic left dense to guide learning: the claim depends on "
                          "which modules PPO prunes.")
        parts.append("")
    actor = sparse.get("CartPole, PPO, actor only")
    if actor:
        beats = actor["random/reinit"] > actor["permuted/permuted"]
        both = sparse["CartPole, PPO"]
        parts += ["### Actor-only pruning (SI Figure 15)", "",
                  "The paper says two things: its section 4 says that pruning only the actor (as it did for "
                  "CartPole, Acrobot and ATARI PPO) makes permuted/permuted stronger than when actor and critic are "
                  "pruned together (where it fell below random/reinit on PyBullet), while the caption of SI "
                  "Figure 15 (PyBullet, actor only) says random/reinit outperforms permuted/permuted. "
                  f"Mean best return at density <= 0.1 of the actor: random/reinit {actor['random/reinit']:.1f}, "
                  f"permuted/permuted {actor['permuted/permuted']:.1f}; with actor and critic pruned together "
                  f"{both['random/reinit']:.1f} and {both['permuted/permuted']:.1f}. "
                  + ("The caption's claim holds here" if beats else
                     "The caption's claim does not hold here on CartPole") + "; "
                  + ("the section 4 claim holds: permuted/permuted is stronger with the actor pruned alone"
                     if actor["permuted/permuted"] > both["permuted/permuted"] else
                     "the section 4 claim does not hold: permuted/permuted is not stronger with the actor alone")
                  + ".", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    configure_process()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    print(section(resolve_tracking_uri(DEFAULT_TRACKING_URI)))
