"""Tickets against the three baselines (paper Figures 2 and 3; SI Figure 15 and its section 4 remark).

Each :class:`TicketStudy` is ``lth imp --imp.conditions all`` on one config, run as two Ray populations side by side
(:func:`studies.store.imp`) and exported to ``docs/results/<name>/``. :func:`section` renders docs/RESULTS.md's
block from those files alone, every verdict by the rule of :mod:`lth.analysis.verdicts`:

- *the mask carries the ticket* (Figures 2-4): each condition that keeps the IMP mask (mask/weights, mask/permuted)
  minus each baseline (permuted/permuted, random/reinit), paired by seed, on each seed's best return averaged over
  the levels at density <= 0.1, and per level;
- *distilled students prune further than PPO agents* (Figure 2): each seed's sparsest density keeping 95% of its
  own dense return, distillation against PPO (actor pruned) on the same env, as independent groups, on log density;
- *actor-only pruning* (section 4 and the caption of SI Figure 15): random/reinit minus permuted/permuted with the
  actor pruned alone, and permuted/permuted with the actor alone minus with actor and critic, paired by seed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.analysis import figures
from lth.analysis.per_seed import KEEP, PerSeed
from lth.analysis.verdicts import Interval, paired, unpaired
from lth.callbacks import condition_names
from studies.markdown import Section, budget, exploratory, interval, link, pruned, says, setting, table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SPARSE = 0.1  # "high sparsity": the levels at density <= 0.1, where the paper's curves separate
MASKED = ("mask/weights", "mask/permuted")
BASELINES = ("permuted/permuted", "random/reinit")
#: The paper's claim: each condition that keeps the IMP mask beats each baseline.
MASK_PAIRS = tuple((a, b) for a in MASKED for b in BASELINES)
PAPER_SEEDS = {"CartPole-v1": 15, "Acrobot-v1": 15, "lth/MazeGrid-v0": 5}  # runs behind the paper's Figures 2-4


@dataclass(frozen=True)
class TicketStudy:
    """All four conditions of one config over ``seeds`` (``0-14``), ``levels`` IMP levels."""

    name: str  # its folder under docs/results
    title: str  # its heading
    config: str  # under configs/
    experiment: str
    seeds: str
    levels: int
    return_range: tuple[float, float]  # the task's worst and best returns: "keeping 95%" is counted above the first
    frames: int | None = None  # env frames per level, when the paper's (the config's) do not fit
    expert_config: str | None = None  # a distillation study's teacher, trained by `lth expert`
    extra: tuple[str, ...] = ()  # further lth imp options
    paper_setting: bool = True  # False: an extra beside the paper's setting, labelled so
    analyse: Callable[[str, Any], dict[int, dict[str, float]]] | None = None  # (uri, chain) -> per-level columns
    root: Path = RESULTS  # where its folder lives
    claim_levels: int | None = None  # the mask claim uses levels below this (the paper's depth); None: every level

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def run(self, uri: str) -> None:
        """Train (or resume) the study and export its per-seed data."""
        from studies.store import expert_run, export, imp, paper_frames

        extra, meta = ["--imp.conditions", "all", *self.extra], {}
        if self.frames is not None:
            extra += ["--data.init_args.total_frames", str(self.frames)]
        if self.expert_config is not None:
            run_id, meta["expert_return"] = expert_run(uri, self.expert_config)
            extra += ["--data.init_args.expert", run_id]
        imp(self.config, self.experiment, self.seeds, self.levels, len(condition_names(paper=True)), extra)
        export(uri, self.experiment, self.folder, self.analyse, paper_frames=paper_frames(self.config), **meta)

    def done(self) -> bool:
        return (self.folder / "per_seed.csv").exists()

    def load(self) -> tuple[PerSeed, dict[str, Any]]:
        return PerSeed.read(self.folder / "per_seed.csv"), json.loads((self.folder / "study.json").read_text())


CARTPOLE = (0.0, 500.0)
ACROBOT = (-500.0, 0.0)  # episodes end after 500 steps at -1 each
#: CartPole's tickets run 28 levels (density 0.0024), past the paper's 20: at 20 (density 0.014) most PPO and many
#: distillation seeds still keep 95% of their dense return, so "which prunes further" would compare bounds.
#: Their mask claim keeps the paper's (and the issue's plan's) 20 levels, set before the deeper levels were run.
CARTPOLE_PPO = TicketStudy("cartpole_ppo_tickets", "CartPole, PPO", "cartpole/ppo.yaml",
                           "paper/CartPole-v1/ppo/tickets", "0-14", 28, CARTPOLE, claim_levels=20)
CARTPOLE_DISTILL = TicketStudy("cartpole_distill_tickets", "CartPole, distillation", "cartpole/distill.yaml",
                               "paper/CartPole-v1/distill/tickets", "0-14", 28, CARTPOLE,
                               expert_config="cartpole/ppo_expert.yaml", claim_levels=20)
#: Acrobot PPO: the paper's 15 seeds, 20 levels, 200k frames per level (2.5x below the paper's 500k), where PPO
#: solves Acrobot (dense best return -76.5, threshold -100). ~46k frames/s on both cores: 15 seeds take ~90 min
#: (units of 8 and 7 seeds); the paper's 500k would take ~3.6 h, more than a session can hold with its checks.
ACROBOT_PPO = TicketStudy("acrobot_ppo_tickets", "Acrobot, PPO", "acrobot/ppo.yaml", "paper/Acrobot-v1/ppo/tickets",
                          "0-14", 20, ACROBOT, frames=200_000)
ACROBOT_DISTILL = TicketStudy("acrobot_distill_tickets", "Acrobot, distillation", "acrobot/distill.yaml",
                              "paper/Acrobot-v1/distill/tickets", "0-14", 20, ACROBOT, expert_config="acrobot/ppo.yaml")
CARTPOLE_PPO_ACP = TicketStudy("cartpole_ppo_acp_tickets", "CartPole, PPO, actor and critic pruned (extra)",
                               "cartpole/ppo.yaml", "extra/CartPole-v1/ppo/tickets-actor-critic", "0-14", 20, CARTPOLE,
                               extra=("--imp.modules", "[actor, critic]"), paper_setting=False)
STUDIES = (CARTPOLE_PPO, CARTPOLE_DISTILL, ACROBOT_PPO, ACROBOT_DISTILL, CARTPOLE_PPO_ACP)


def mask_claim(data: PerSeed, within: range | None = None) -> dict[tuple[str, str], Interval]:
    """Each condition that keeps the mask minus each baseline, per seed averaged over the levels at density <= 0.1
    (those ``within``, if given)."""
    return {(a, b): paired(data.sparse_mean(a, SPARSE, within), data.sparse_mean(b, SPARSE, within))
            for a, b in MASK_PAIRS}


def per_level(data: PerSeed, a: str, b: str) -> dict[int, Interval]:
    """``a - b`` paired by seed at every pruned level both finished."""
    return {k: paired(data.returns(a, k), data.returns(b, k)) for k in data.levels(a) if k > 0 and k in data.levels(b)}


def claim_text(claims: dict[tuple[str, str], Interval]) -> tuple[str, str]:
    """The mask claim's verdict: a sentence for RESULTS and a short one for the README."""
    verdicts = {pair: value.verdict(+1) for pair, value in claims.items()}
    held = sum(v == "holds" for v in verdicts.values())
    if held == len(claims):
        return ("**holds**: all four paired differences at density <= 0.1 exclude zero in the paper's direction.",
                f"holds ({held} of {len(claims)} comparisons)")
    short = "is reversed" if all(v == "reversed" for v in verdicts.values()) else \
        f"holds in {held} of {len(claims)} comparisons"
    word = f"**{short}**"
    rest = [f"{a} − {b} {interval(claims[(a, b)])}, n={claims[(a, b)].n}: {verdicts[(a, b)]}"
            for a, b in claims if verdicts[(a, b)] != "holds"]
    return f"{word}; at density <= 0.1: " + "; ".join(rest) + ".", short


def ticket_text(value: Interval, span: float) -> tuple[str, str]:
    """mask/weights against mask/permuted, which the paper finds nearly equal (no direction is claimed); ``span``:
    the dense return above the task's worst, to say how large a resolved gap is."""
    size = f"{interval(value)}, n={value.n}, {abs(value.mean) / span:.1%} of the dense return above the task's worst"
    if value.verdict(+1) == "holds":
        return (f"The ticket scores above mask/permuted ({size}): its initial weights add to what the mask carries, "
                "where the paper's two curves nearly coincide.", "the ticket scores above mask/permuted")
    if value.verdict(+1) == "reversed":
        return (f"mask/permuted scores above the ticket ({size}): the mask with shuffled initial weights does better "
                "than the ticket's own.", "mask/permuted scores above the ticket")
    return (f"The ticket and mask/permuted are not distinguished ({size}), as the paper's two nearly coinciding curves "
            "suggest (an unresolved difference does not show they are equal).",
            "ticket and mask/permuted not distinguished")


def _sparsest(data: PerSeed, condition: str, floor: float) -> str:
    kept = sorted(data.sparsest_kept(condition, floor).values())
    return f"{statistics.median(kept):.3f} ({kept[0]:.3f}-{kept[-1]:.3f})"


def condition_rows(data: PerSeed, floor: float, within: range | None = None) -> list[str]:
    """One row per condition: seeds, dense return, per-seed sparsest density keeping 95%, mean return at density
    <= 0.1 with its interval, and the last level."""
    from lth.analysis.verdicts import bootstrap_mean

    rows = []
    for condition in data.conditions(condition_names()):
        last = data.levels(condition)[-1]
        sparse = data.sparse_mean(condition, SPARSE, within)
        rows.append([condition, str(len(data.seeds(condition))),
                     f"{statistics.fmean(data.returns(condition, 0).values()):.1f}", _sparsest(data, condition, floor),
                     interval(bootstrap_mean(list(sparse.values()))) if sparse else "-",
                     f"{statistics.fmean(data.returns(condition, last).values()):.1f} "
                     f"(density {data.density(condition, last):.3f})"])
    return table(["condition", "seeds", "dense return (mean)",
                  f"sparsest density keeping {KEEP:.0%} (median of seeds, range)",
                  "mean return at density <= 0.1 [95% CI]", "mean return at the last level"], rows)


def comparisons_md(study: TicketStudy, data: PerSeed, meta: dict[str, Any]) -> str:
    """``comparisons.md``: every comparison of the claims at every level, with its interval and verdict."""
    pairs = [*MASK_PAIRS, MASKED]
    lines = [f"# {study.title}: paired differences per level", "",
             f"{setting(meta)}. Each cell: the mean over seeds of the per-seed difference of best returns, its 95% "
             "bootstrap confidence interval and the verdict in the paper's direction (first condition higher; for "
             "mask/weights − mask/permuted no direction is claimed). Generated from `per_seed.csv`.", ""]
    by_pair = {pair: per_level(data, *pair) for pair in pairs}
    levels = sorted(set.intersection(*(set(v) for v in by_pair.values())))
    rows = [[str(k), f"{data.density('mask/weights', k):.3f}",
             *(f"{interval(by_pair[p][k])} {by_pair[p][k].verdict(+1)}" for p in pairs)] for k in levels]
    lines += table(["level", "density", *(f"{a} − {b}" for a, b in pairs)], rows, numeric_from=0)
    return "\n".join(lines) + "\n"


def study_section(study: TicketStudy, draw: bool, level: int = 3) -> tuple[Section, PerSeed, dict[str, Any]]:
    """One study's section under a heading of ``level`` (figures redrawn when ``draw``) and its README bullet."""
    data, meta = study.load()
    n = len(data.seeds())
    floor = study.return_range[0]
    window = None if study.claim_levels is None else range(study.claim_levels)
    claims = mask_claim(data, window)
    claim, claim_short = claim_text(claims)
    dense = statistics.fmean(data.returns(MASKED[0], 0).values())
    ticket, ticket_short = ticket_text(paired(data.sparse_mean(MASKED[0], SPARSE, window),
                                              data.sparse_mean(MASKED[1], SPARSE, window)), dense - floor)
    deeper = ""
    if window is not None and data.levels(MASKED[0])[-1] >= window.stop:
        beyond, _ = claim_text(mask_claim(data))
        past, _ = ticket_text(paired(data.sparse_mean(MASKED[0]), data.sparse_mean(MASKED[1])), dense - floor)
        deeper = (f" The claims use the paper's {window.stop} levels (density down to "
                  f"{data.density(MASKED[0], window.stop - 1):.3f}); the deeper levels serve the comparison with "
                  f"distillation below. Over every level at density <= 0.1 the mask claim {beyond.removesuffix('.')}; "
                  f"{past[0].lower()}{past[1:]}")
    if draw:
        figures.return_vs_density(data, study.folder / "return_vs_density.png", setting(meta), study.return_range)
        figures.differences(data, [*MASK_PAIRS, MASKED], study.folder / "differences.png",
                            f"Paired per-seed differences per level\n{setting(meta)}")
    paper_seeds = PAPER_SEEDS.get(meta["env"])
    seeds = f"{n} seeds" + ("" if paper_seeds is None else " as in the paper" if n == paper_seeds else
                             f", the paper {paper_seeds}")
    label = "" if study.paper_setting else "An extra beside the paper's setting. "
    collapsed = ""
    if all(statistics.fmean(data.sparse_mean(c, SPARSE, window).values()) - floor < 0.5 * (dense - floor)
           for c in data.conditions() if data.sparse_mean(c, SPARSE, window)):
        collapsed = (" Every condition has lost more than half of its dense return (counted above the task's worst) "
                     "at density <= 0.1, so these comparisons are between collapsed networks.")
    extra_options = f" with `{' '.join(study.extra)}`" if study.extra else ""
    expert = (f" The expert (`configs/{study.expert_config}`, `lth expert`) scores {meta['expert_return']:.1f}."
              if "expert_return" in meta else "")
    heading = f"{'#' * level} {study.title}"
    text = [heading, "",
            f"{label}`configs/{study.config}`{extra_options}: {pruned(meta)}, {budget(meta)}; {seeds}, "
            f"{meta['levels']} levels (density down to {data.density(MASKED[0], data.levels(MASKED[0])[-1]):.3f}); "
            f"MLflow experiment `{meta['experiment']}`; {meta['minutes']:.0f} min on this machine (two populations, "
            f"one per core).{expert}{exploratory(meta)}", "",
            f"![{study.title}](results/{study.name}/return_vs_density.png)", "",
            *condition_rows(data, floor, window), "",
            f"**The paper's claim** (the IMP mask carries the ticket effect: both conditions that keep it beat both "
            f"baselines at high sparsity) {claim}{collapsed} {ticket}{deeper}", "",
            f"![paired differences per level](results/{study.name}/differences.png)", "",
            f"Per level: [every comparison with its interval](results/{study.name}/comparisons.md); per seed: "
            f"[per_seed.csv](results/{study.name}/per_seed.csv).", ""]
    caveat = ", exploratory" if exploratory(meta) else ""
    bullet = (f"- {link(heading, study.title)} ({seeds}, {pruned(meta)}, {budget(meta)}{caveat}): the mask claim "
              f"{claim_short}; {ticket_short}.")
    return Section("\n".join(text), [bullet], {study.folder / "comparisons.md": comparisons_md(study, data, meta)}), \
        data, meta


def pruned_further(ppo: tuple[PerSeed, dict], distill: tuple[PerSeed, dict], floor: float) -> tuple[str, str]:
    """Distillation against PPO on one env: per-seed sparsest density keeping 95% of the dense return (the ticket,
    mask/weights), on log10 density; the paper's direction: distillation sparser (a negative difference). A seed that
    keeps it to its last level counts with that level's density: a bound, said so."""
    groups = {"PPO": ppo[0], "distillation": distill[0]}
    kept = {name: data.sparsest_kept("mask/weights", floor) for name, data in groups.items()}
    value = unpaired([math.log10(d) for d in kept["distillation"].values()], [math.log10(d) for d in kept["PPO"].values()])
    verdict = value.verdict(-1)
    bounds = []
    for name, data in groups.items():
        last = data.density("mask/weights", data.levels("mask/weights")[-1])
        censored = sum(d == last for d in kept[name].values())
        if censored:
            bounds.append(f"{censored} of {len(kept[name])} {name} seeds keep it to their last level (density "
                          f"{last:.3f}), so theirs is a bound")
    text = (f"{ppo[1]['env']}: tickets keep {KEEP:.0%} of their dense return down to a median density of "
            f"{statistics.median(kept['distillation'].values()):.3f} with distillation and "
            f"{statistics.median(kept['PPO'].values()):.3f} with PPO ({pruned(ppo[1])}); distillation sparser by a "
            f"factor {10 ** -value.mean:.1f} [{10 ** -value.high:.1f}, {10 ** -value.low:.1f}] (95% CI; "
            f"{len(kept['distillation'])} distillation and {len(kept['PPO'])} PPO seeds"
            + "".join(f"; {b}" for b in bounds) + f"): the claim {says(verdict)}.")
    return text, f"{ppo[1]['env']} {verdict}"


def actor_only(ap: tuple[PerSeed, dict], acp: tuple[PerSeed, dict]) -> str:
    """The paper's two statements on actor-only pruning, on CartPole, over the levels at density <= 0.1 both
    studies reached (both prune 20% per level: level k is the same step of pruning in both)."""
    both = set(ap[0].levels("permuted/permuted")) & set(acp[0].levels("permuted/permuted"))
    both &= set(ap[0].sparse_levels("permuted/permuted", SPARSE)) & set(acp[0].sparse_levels("permuted/permuted", SPARSE))
    caption = paired(ap[0].sparse_mean("random/reinit", SPARSE, both), ap[0].sparse_mean("permuted/permuted", SPARSE, both))
    section4 = paired(ap[0].sparse_mean("permuted/permuted", SPARSE, both),
                      acp[0].sparse_mean("permuted/permuted", SPARSE, both))
    return ("The caption of SI Figure 15 (PyBullet, actor only) says random/reinit outperforms permuted/permuted when "
            "only the actor is pruned; its section 4 says pruning only the actor makes permuted/permuted stronger than "
            f"pruning actor and critic together. On CartPole, best return averaged over levels {min(both)}-{max(both)} "
            "(density <= 0.1 in both studies), paired by seed: random/reinit − permuted/permuted with the actor "
            f"pruned {interval(caption)}, n={caption.n}: the caption's claim {says(caption.verdict(+1))}; "
            f"permuted/permuted with the actor pruned minus with actor and critic pruned {interval(section4)}, "
            f"n={section4.n}: the section 4 claim {says(section4.verdict(+1))}.")


def section(draw: bool = True) -> Section:
    """docs/RESULTS.md's tickets block and its README bullets, from the committed per-seed data."""
    out = Section("")
    parts = ["## Tickets against baselines (paper Figures 2 and 3)", "",
             "All four conditions of the paper's Table 1 (`lth imp --imp.conditions all`), 20% of the remaining "
             "prunable weights pruned per level, survivors rewound to their initialisation. A ticket's score is the "
             "best mean greedy evaluation return of its fit. Figures: mean over seeds with the 95% bootstrap "
             "confidence interval of the mean as a band; the second figure of each study shows the paired per-seed "
             f"differences the verdicts rest on. \"Keeping {KEEP:.0%}\" is counted above the task's worst return "
             "(0 on CartPole, -500 on Acrobot).", ""]
    loaded = {}
    pending = []
    for study in STUDIES:
        if not study.done():
            pending.append(study)
            continue
        sub, *loaded[study] = study_section(study, draw)
        parts.append(sub.markdown)
        out.readme += sub.readme
        out.files |= sub.files
    further = [(ppo, distill) for ppo, distill in ((CARTPOLE_PPO, CARTPOLE_DISTILL), (ACROBOT_PPO, ACROBOT_DISTILL))
               if ppo in loaded and distill in loaded]
    if further:
        heading = "### PPO against distillation"
        texts = [pruned_further(tuple(loaded[p]), tuple(loaded[d]), p.return_range[0]) for p, d in further]
        parts += [heading, "",
                  "The paper (Figure 2) reports that distilled students can be pruned further than PPO agents before "
                  "they degrade. Per seed, the sparsest density down to which every level keeps "
                  f"{KEEP:.0%} of that seed's dense return; distillation against PPO with the actor pruned, as "
                  "independent groups on log density. " + " ".join(t for t, _ in texts), ""]
        out.readme.append(f"- {link(heading)}: distilled students prune further: " + "; ".join(s for _, s in texts) + ".")
    if CARTPOLE_PPO in loaded and CARTPOLE_PPO_ACP in loaded:
        heading = "### Actor-only pruning (paper section 4, SI Figure 15)"
        text = actor_only(tuple(loaded[CARTPOLE_PPO]), tuple(loaded[CARTPOLE_PPO_ACP]))
        parts += [heading, "", text, ""]
    if pending:
        parts += ["Not run yet (`make results ITEMS=tickets` runs them): "
                  + ", ".join(f"{s.title} (`{s.experiment}`)" for s in pending) + ".", ""]
    out.markdown = "\n".join(parts)
    return out
