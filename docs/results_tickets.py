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

    def args(self, uri: str) -> list[str]:
        args = ["--config", str(ROOT / "configs" / self.config), "--imp.conditions", "all", "--seeds", self.seeds,
                "--imp.levels", str(self.levels), "--trainer.logger.init_args.experiment_name", self.experiment,
                *self.extra, *QUIET]
        if self.expert_config is not None:
            args += ["--data.init_args.expert", expert_run(uri, ROOT / "configs" / self.expert_config)]
        return args


STUDIES = (
    TicketStudy("cartpole_ppo_tickets", "CartPole, PPO", "cartpole/ppo.yaml", "paper/CartPole-v1/ppo/tickets",
                "0-9", 20),
    TicketStudy("cartpole_distill_tickets", "CartPole, distillation", "cartpole/distill.yaml",
                "paper/CartPole-v1/distill/tickets", "0-9", 20, expert_config="cartpole/ppo_expert.yaml"),
)


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


def wall_minutes(uri: str, experiment: str) -> float:
    """Minutes from the study's first level run's start to its last one's end, as MLflow recorded them (chain runs
    are left out: a resume reopens them)."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.level != ''",
                              max_results=5000)
    ends = [r.info.end_time for r in runs if r.info.end_time]
    return (max(ends) - min(r.info.start_time for r in runs)) / 60000 if ends else 0.0


def mean_curve(chains: list[Chain]) -> dict[int, tuple[float, float, float]]:
    """Per level every chain has: (density, mean best return, sd)."""
    levels = sorted(set.intersection(*(set(c.levels) for c in chains)))
    return {k: (statistics.fmean(c.levels[k]["density"] for c in chains),
                *mean_sd([c.levels[k]["ticket/best_return"] for c in chains])) for k in levels}


def sparsest_kept(curve: dict[int, tuple[float, float, float]]) -> tuple[int, float]:
    """The sparsest level (and its density) up to which every level keeps :data:`KEEP` of level 0's mean."""
    dense = curve[0][1]
    last = 0
    for k in sorted(curve):
        if curve[k][1] < KEEP * dense:
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
        level, density = sparsest_kept(curve)
        sparse = [curve[k][1] for k in curve if curve[k][0] <= 0.1]
        last = max(curve)
        stats[condition] = {"curve": curve, "kept": (level, density), "sparse": statistics.fmean(sparse)
                            if sparse else float("nan"), "last": curve[last]}
        rows.append(f"| {condition} | {len(group)} | {curve[0][1]:.1f} ± {curve[0][2]:.1f} | {density:.3f} "
                    f"(level {level}) | {stats[condition]['sparse']:.1f} | {curve[last][1]:.1f} ± "
                    f"{curve[last][2]:.1f} (density {curve[last][0]:.3f}) |")
    return rows, stats


def verdict(stats: dict[str, dict]) -> str:
    """The paper's ordering (mask/weights ~ mask/permuted >> permuted/permuted, random/reinit) against the
    measured mean returns at density <= 0.1 and the sparsest densities keeping 95% of the dense return."""
    sparse = {c: s["sparse"] for c, s in stats.items()}
    kept = {c: s["kept"][1] for c, s in stats.items()}
    order = sorted(sparse, key=sparse.get, reverse=True)
    weights, permuted = sparse["mask/weights"], sparse["mask/permuted"]
    held = min(weights, permuted) > max(sparse["permuted/permuted"], sparse["random/reinit"])
    close = abs(weights - permuted) <= 0.1 * max(weights, 1.0)
    text = f"Ordered by mean best return at density <= 0.1: {', '.join(f'{c} {sparse[c]:.1f}' for c in order)}. "
    if held and close:
        return text + ("Both conditions that keep the IMP mask beat both that permute it, and mask/permuted is within "
                       "10% of mask/weights: the paper's claim holds, the mask carries the ticket effect.")
    if held:
        return text + ("Partly as the paper claims: both conditions that keep the IMP mask beat both that permute "
                       "it, so the mask carries most of the effect; but mask/permuted stays below mask/weights "
                       f"({permuted:.1f} against {weights:.1f}; 95% of the dense return kept down to density "
                       f"{kept['mask/permuted']:.3f} against {kept['mask/weights']:.3f}), so here the ticket's initial "
                       "weights matter too, where the paper's two curves nearly coincide.")
    return text + "Unlike in the paper, the conditions that keep the IMP mask do not beat both baselines here."


def section(uri: str) -> str:
    """Run (or resume) every study, write its report, and return the Markdown section."""
    parts = ["## Tickets against baselines (paper Figures 2 and 3, SI Figure 15)", "",
             "All four conditions of the paper's Table 1, trained as populations (`lth imp --imp.conditions all`); "
             "each chain prunes 20% of the remaining actor and critic (or student) weights per level and rewinds "
             "to its initialisation. Figures: mean best greedy evaluation return ± 1 sd over seeds against "
             "density (log scale).", ""]
    kept = {}
    for study in STUDIES:
        run_imp(study.args(uri))
        run_report([study.experiment], uri, OUT / study.name)
        chains = load_chains(uri, [study.experiment])
        rows, stats = study_rows(study, chains)
        kept[study.title] = stats["mask/weights"]["kept"]
        parts += [f"### {study.title}", "",
                  f"`configs/{study.config}` (the paper's settings), seeds {study.seeds}, {study.levels} levels "
                  f"(density down to {0.8 ** (study.levels - 1):.3f}); MLflow experiment `{study.experiment}`; "
                  f"{wall_minutes(uri, study.experiment):.0f} min on this machine, one process, sharing it with other "
                  "work.", "",
                  f"![{study.title}](results/{study.name}/return_vs_density.png)", "", *rows, "",
                  verdict(stats), "", f"Per level and seed: [the study's report](results/{study.name}/summary.md).",
                  ""]
    ppo, distill = kept.get("CartPole, PPO"), kept.get("CartPole, distillation")
    if ppo and distill:
        more = distill[1] < ppo[1]
        parts += ["### PPO against distillation", "",
                  "The paper reports that distilled students can be pruned further than PPO agents before they "
                  "degrade. CartPole tickets (mask/weights) keep 95% of their dense return down to density "
                  f"{ppo[1]:.3f} (level {ppo[0]}) with PPO and {distill[1]:.3f} (level {distill[0]}) with "
                  "distillation: " + ("the claim holds here" if more else "the claim does not hold here") +
                  ". The student (128-128, Table 2) is wider than the PPO actor (64-64, Table 3), as in the paper.", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    configure_process()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    print(section(resolve_tracking_uri(DEFAULT_TRACKING_URI)))
