"""Minimal task representations (paper section 4.2, Figure 8): which observation inputs IMP keeps in the actor's
first layer, and whether dense agents learn from those inputs alone.

An :class:`InputStudy` is the ticket chain (mask/weights) of every seed with the 0.1-scaled Kaiming input layer
(the paper's heuristic), exported with each input's surviving first-layer |weight| per level. Its claims, per seed
(the unit), by :mod:`lth.analysis.verdicts`' share rule:

- *IMP cuts the task-irrelevant inputs first*: every input the paper calls irrelevant (CartPole's cart position
  and velocity; Acrobot's four cos/sin) loses its last actor weight before any input it keeps (the pole angle and
  angular velocity; the two angular velocities);
- what is kept is reported beside it: the level from which the actor sees exactly the kept inputs, its return
  there, and when a kept input dies too.

The transfer (Figure 8 bottom) trains dense agents on the inputs of the first seed (in seed order) whose actor
sees exactly the kept inputs at some level and still solves the task there, against dense agents on every input;
per seed: does the kept-input agent solve the task (share rule), and the paired difference of best returns.
CartPole also compares the input-layer initialisations (section 4.2): how fast each scheme cuts the cart inputs.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from lth.analysis import figures
from lth.analysis.per_seed import PerSeed
from lth.analysis.verdicts import Interval, bootstrap_mean, paired, share_text, share_verdict
from studies.markdown import Section, budget, exploratory, interval, link, says, setting, table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
TICKET = "mask/weights"
ACTOR = "inputs/actor/"


@dataclass(frozen=True)
class InputStudy:
    """The ticket chains of one config, and what the paper says their actor's input layer keeps."""

    name: str  # folder under docs/results (the transfer's: ``<name>_transfer``)
    title: str
    config: str  # under configs/
    experiment: str
    seeds: str
    levels: int
    dropped: tuple[str, ...]  # the inputs the paper says IMP cuts
    kept: tuple[str, ...]  # the inputs it says IMP keeps
    solved: float  # a best return at or above this solves the task
    return_range: tuple[float, float]
    claim: str  # the paper's words
    frames: int | None = None  # per level, when the paper's (the config's) do not fit
    transfer: bool = True
    root: Path = RESULTS  # where its folders live

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def transfer_folder(self) -> Path:
        return self.root / f"{self.name}_transfer"

    def frame_args(self) -> list[str]:
        return [] if self.frames is None else ["--data.init_args.total_frames", str(self.frames)]

    def run(self, uri: str) -> None:
        """Train (or resume) the chains and the transfer, and export both."""
        from lth.cli.runner import run_transfer
        from lth.cli.seeds import parse_seeds
        from lth.report.chains import load_chains
        from studies.store import QUIET, export, export_transfer, imp, paper_frames

        seeds = parse_seeds(self.seeds)
        imp(self.config, self.experiment, self.seeds, self.levels, 1, self.frame_args())
        export(uri, self.experiment, self.folder, paper_frames=paper_frames(self.config))
        if not self.transfer:
            return
        data, _ = self.load()
        source = self.transfer_source(data)
        if source is None:
            return
        seed, level = source
        chain = next(c for c in load_chains(uri, [self.experiment]) if c.seed == seed and c.condition == TICKET)
        config = ["--config", str(ROOT / "configs" / self.config), *self.frame_args(), *QUIET]
        run = run_transfer(config, ticket=chain.run_id, level=level, seeds=seeds, modules=["actor"],
                           out=ROOT / "mlruns" / "reports" / self.name, log_to_mlflow=False)
        export_transfer(uri, run, self.transfer_folder, source_seed=seed, source_level=level)

    def done(self) -> bool:
        return (self.folder / "per_seed.csv").exists()

    def load(self) -> tuple[PerSeed, dict[str, Any]]:
        return PerSeed.read(self.folder / "per_seed.csv"), json.loads((self.folder / "study.json").read_text())

    def sees_only_kept(self, data: PerSeed, seed: int) -> int | None:
        """The first level at which the actor sees every kept input and no dropped one (None: never)."""
        for level, record in sorted(data.data[TICKET][seed].items()):
            alive = {name: record.inputs[ACTOR + name] > 0 for name in (*self.dropped, *self.kept)}
            if all(alive[n] for n in self.kept) and not any(alive[n] for n in self.dropped):
                return level
        return None

    def dropped_first(self, data: PerSeed, seed: int) -> bool:
        """The criterion: every dropped input dies, and before any kept input does."""
        deaths = {n: data.dead_from(TICKET, seed, ACTOR + n) for n in (*self.dropped, *self.kept)}
        if any(deaths[n] is None for n in self.dropped):
            return False
        last_dropped = max(deaths[n] for n in self.dropped)
        return all(deaths[n] is None or deaths[n] > last_dropped for n in self.kept)

    def transfer_source(self, data: PerSeed) -> tuple[int, int] | None:
        """The first seed whose actor sees exactly the kept inputs at a level where it still solves the task."""
        for seed in data.seeds(TICKET):
            level = self.sees_only_kept(data, seed)
            if level is not None and data.data[TICKET][seed][level].best_return >= self.solved:
                return seed, level
        return None


def read_curves(path: Path) -> dict[str, dict[int, dict[int, float]]]:
    """``curves.csv`` as ``curves[arm][seed][frames] = return``."""
    curves: dict[str, dict[int, dict[int, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            curves.setdefault(row["arm"], {}).setdefault(int(row["seed"]), {})[int(row["frames"])] = float(row["return"])
    return curves


def _level(level: int | None) -> str:
    return "alive" if level is None else str(level)


def seed_rows(study: InputStudy, data: PerSeed) -> list[str]:
    """Per seed: each input's death level, the kept-only level and its return, the first kept input's death."""
    rows = []
    for seed in data.seeds(TICKET):
        chain = data.data[TICKET][seed]
        only = study.sees_only_kept(data, seed)
        kept_deaths = [k for n in study.kept if (k := data.dead_from(TICKET, seed, ACTOR + n)) is not None and k > 0]
        first = min(kept_deaths) if kept_deaths else None
        drop = "" if first is None else f"{chain[first - 1].best_return:.1f} → {chain[first].best_return:.1f}"
        rows.append([str(seed), *(_level(data.dead_from(TICKET, seed, ACTOR + n)) for n in (*study.dropped, *study.kept)),
                     "never" if only is None else str(only), "" if only is None else f"{chain[only].best_return:.1f}",
                     f"{chain[0].best_return:.1f}", drop])
    return table(["seed", *study.dropped, *study.kept, "actor sees only the kept inputs from level",
                  "best return there", "dense best return", "best return before → at the first kept input's death"],
                 rows, numeric_from=0)


def claim_counts(study: InputStudy, data: PerSeed) -> dict[str, int]:
    """Per seed counts: the criterion met, the actor seeing exactly the kept inputs at some level, solving there,
    and a kept input dying too."""
    seeds = data.seeds(TICKET)
    only = {s: study.sees_only_kept(data, s) for s in seeds}
    return {"n": len(seeds), "first": sum(study.dropped_first(data, s) for s in seeds),
            "only": sum(level is not None for level in only.values()),
            "solved": sum(level is not None and data.data[TICKET][s][level].best_return >= study.solved
                          for s, level in only.items()),
            "kept_dies": sum(any(data.dead_from(TICKET, s, ACTOR + n) is not None for n in study.kept) for s in seeds)}


def compared(difference: Interval) -> str:
    """A kept-minus-all difference in words (the paper claims no direction: both arms learn alike)."""
    return {"holds": "the kept-input agents score higher", "reversed": "the kept-input agents score lower",
            "not resolved": "no difference resolved"}[difference.verdict(+1)]


def transfer_part(study: InputStudy, study_meta: dict[str, Any], draw: bool) -> tuple[list[str], str]:
    """The transfer's subsection and its README clause (empty when no transfer ran)."""
    folder = study.transfer_folder
    if not (folder / "curves.csv").exists():
        return (["No seed's actor sees exactly the kept inputs at a level where it still solves the task, so no "
                 "transfer was run."] if study.transfer else []), ""
    curves = read_curves(folder / "curves.csv")
    meta = json.loads((folder / "transfer.json").read_text())
    best = {arm: {seed: max(c.values()) for seed, c in seeds.items()} for arm, seeds in curves.items()}
    averaged = {arm: {seed: statistics.fmean(c.values()) for seed, c in seeds.items()} for arm, seeds in curves.items()}
    if draw:
        figures.learning_curves({("all inputs" if arm == "all" else f"kept inputs ({meta['kept']})"): curves[arm]
                                 for arm in ("all", "ticket")}, folder / "learning_curves.png",
                                f"Dense agents on all inputs and on the kept ones\n"
                                f"{setting(study_meta, len(best['ticket']), dense=True)}",
                                study.return_range)
    rows = []
    for arm in ("all", "ticket"):
        solved = sum(v >= study.solved for v in best[arm].values())
        rows.append([arm, "all" if arm == "all" else meta["kept"], str(len(best[arm])),
                     f"{solved} of {len(best[arm])}", interval(bootstrap_mean(list(best[arm].values()))),
                     interval(bootstrap_mean(list(averaged[arm].values())))])
    solved = sum(v >= study.solved for v in best["ticket"].values())
    n = len(best["ticket"])
    verdict = share_verdict(solved, n)
    difference = paired(best["ticket"], best["all"])
    averaged_difference = paired(averaged["ticket"], averaged["all"])
    text = [f"Dense agents (same config and budget, fresh weights) on the inputs seed {meta['source_seed']}'s actor "
            f"keeps at level {meta['source_level']} (the first seed, in seed order, whose actor sees exactly the kept "
            f"inputs at a level where it still solves the task: {meta['kept']}; the others zeroed in every "
            f"observation) against dense agents on all inputs, paired by seed; MLflow experiment `{meta['experiment']}`"
            f", {meta['minutes']:.0f} min here.", "",
            f"![transfer learning curves](results/{folder.name}/learning_curves.png)", "",
            *table(["inputs", "kept", "seeds", f"seeds solving (best return >= {study.solved:g})",
                    "best return [95% CI]", "return averaged over the evaluations [95% CI]"], rows, numeric_from=2), "",
            f"The paper's claim (Figure 8 bottom: agents learn the task from the kept inputs alone): "
            f"{share_text(solved, n)} solve it on the kept inputs: the claim {says(verdict)}. Paired by seed, kept "
            f"minus all inputs: best return {interval(difference)}, n={difference.n}: {compared(difference)}; "
            f"return averaged over each run's evaluations {interval(averaged_difference)}: "
            f"{compared(averaged_difference)}.", "",
            f"Per seed: [curves.csv](results/{folder.name}/curves.csv)."]
    return text, f"dense agents on the kept inputs solve it: {verdict} ({solved} of {n} seeds)"


def section(study: InputStudy, draw: bool, extra: list[str] | None = None) -> Section:
    """The study's block of docs/RESULTS.md and its README bullet."""
    heading = f"## {study.title}"
    if not study.done():
        return Section(f"{heading}\n\nNot run yet (`make results ITEMS=...` runs `{study.experiment}`).\n")
    data, meta = study.load()
    counts = claim_counts(study, data)
    n = counts["n"]
    verdict = share_verdict(counts["first"], n)
    columns = [c for c in data.inputs(TICKET) if c.startswith(ACTOR) and c != ACTOR + "alive"]  # alive: a count
    if draw:
        figures.input_survival(data, TICKET, columns, study.folder / "inputs_actor.png",
                               f"Actor input layer: {setting(meta)}")
        figures.return_vs_density(data, study.folder / "return_vs_density.png", setting(meta), study.return_range)
    transfer, transfer_short = transfer_part(study, meta, draw)
    last = data.levels(TICKET)[-1]
    text = [heading, "",
            f"**Setup.** The ticket chain (mask/weights) of `configs/{study.config}` (Kaiming-uniform init with the "
            f"input layer scaled by 0.1, the paper's section 4.2 heuristic; {', '.join(meta['modules'] or ['all'])} "
            f"pruned, 20% per level, rewound to init), {budget(meta)}; {n} seeds"
            f"{' as in the paper (Figure 8: 10)' if n == 10 else ', the paper 10 (Figure 8)'}, "
            f"{meta['levels']} levels (density down to {data.density(TICKET, last):.3f}); MLflow experiment "
            f"`{meta['experiment']}`; {meta['minutes']:.0f} min on this machine.{exploratory(meta)} An input is *dead* "
            "at a level when its column in the actor's first layer has no weight left.", "",
            f"**The paper's claim** ({study.claim}). Criterion per seed: every one of {', '.join(study.dropped)} dies "
            f"before any of {', '.join(study.kept)}. It is met in {share_text(counts['first'], n)}: the claim "
            f"{says(verdict)}.", "",
            f"**What is kept.** In {counts['only']} of {n} seeds the actor sees exactly {', '.join(study.kept)} at some "
            f"level, and in {counts['solved']} of those it still solves the task there (best return >= "
            f"{study.solved:g}). In {counts['kept_dies']} of {n} seeds a kept input dies too by level {last}: the "
            "0.1-scaled input layer keeps losing weights once the others are gone. Level at which each input loses "
            f"its last actor weight (`alive`: still connected at level {last}):", "",
            *seed_rows(study, data), "",
            f"![actor input weight against density](results/{study.name}/inputs_actor.png)", "",
            f"![ticket return against density](results/{study.name}/return_vs_density.png)", "",
            f"Per seed and level, with every input's surviving weight in actor and critic: "
            f"[per_seed.csv](results/{study.name}/per_seed.csv).", ""]
    if transfer:
        text += ["### Transfer: dense agents on the kept inputs (Figure 8 bottom)", "", *transfer, ""]
    text += extra or []
    bullet = (f"- {link(heading, study.title)} ({n} seeds, {budget(meta)}): IMP cuts "
              f"{', '.join(study.dropped)} first: {verdict} ({counts['first']} of {n} seeds)"
              + (f"; {transfer_short}" if transfer_short else "") + ".")
    return Section("\n".join(text), [bullet])


CARTPOLE = InputStudy(
    "cartpole_inputs", "Minimal task representations in CartPole (paper section 4.2, Figure 8 top)",
    "init_study/cartpole_kaiming_input0.1.yaml", "paper/CartPole-v1/ppo/inputs-kaiming_input0.1", "0-9", 16,
    dropped=("cart position", "cart velocity"), kept=("pole angle", "pole angular velocity"), solved=475.0,
    return_range=(0.0, 500.0), claim="Figure 8 top: IMP prunes the cart position and velocity and keeps the pole "
    "angle and angular velocity")
ACROBOT = InputStudy(
    "acrobot_inputs", "Minimal task representations in Acrobot (paper section 4.2, Figure 8 middle)",
    "init_study/acrobot_kaiming_input0.1.yaml", "paper/Acrobot-v1/ppo/inputs-kaiming_input0.1", "0-9", 16,
    dropped=("cos theta1", "sin theta1", "cos theta2", "sin theta2"), kept=("theta1 velocity", "theta2 velocity"),
    solved=-100.0, return_range=(-500.0, 0.0), frames=100_000,
    claim="Figure 8 middle: IMP removes the sine and cosine of both link angles and keeps the two angular "
    "velocities")
#: Section 4.2's input-layer initialisations, fastest to cut the cart inputs first (the paper's order).
SCHEMES = (CARTPOLE,
           InputStudy("cartpole_inputs_xavier", "xavier", "init_study/cartpole_xavier.yaml",
                      "paper/CartPole-v1/ppo/inputs-xavier", "0-9", 16, CARTPOLE.dropped, CARTPOLE.kept, 475.0,
                      (0.0, 500.0), CARTPOLE.claim, transfer=False),
           InputStudy("cartpole_inputs_kaiming", "kaiming", "init_study/cartpole_kaiming.yaml",
                      "paper/CartPole-v1/ppo/inputs-kaiming", "0-9", 16, CARTPOLE.dropped, CARTPOLE.kept, 475.0,
                      (0.0, 500.0), CARTPOLE.claim, transfer=False))
SCHEME_NAMES = ("kaiming_input0.1", "xavier", "kaiming")


def cut_level(study: InputStudy, data: PerSeed) -> dict[int, int | None]:
    """Per seed, the level by which every dropped input is dead (None: one survives to the last level)."""
    out = {}
    for seed in data.seeds(TICKET):
        deaths = [data.dead_from(TICKET, seed, ACTOR + n) for n in study.dropped]
        out[seed] = None if None in deaths else max(deaths)
    return out


def schemes_part() -> list[str]:
    """Section 4.2's initialisation comparison on CartPole: how fast each scheme cuts the cart inputs."""
    done = [(name, study) for name, study in zip(SCHEME_NAMES, SCHEMES) if study.done()]
    if len(done) < len(SCHEMES):
        return []
    cut = {name: cut_level(study, study.load()[0]) for name, study in done}
    never = SCHEMES[0].levels  # one past the last level: a lower bound for a seed that keeps a cart input
    levels = {name: {s: float(never if k is None else k) for s, k in v.items()} for name, v in cut.items()}
    rows = [[name, str(len(v)), f"{statistics.fmean(levels[name].values()):.1f}",
             f"{sum(k is not None for k in v.values())} of {len(v)}"] for name, v in cut.items()]
    later = [paired(levels[b], levels[a]) for a, b in pairwise(SCHEME_NAMES)]
    return ["### Input-layer initialisation (section 4.2)", "",
            "The same ticket chains with the input layer initialised by Xavier-uniform and by plain Kaiming-uniform "
            "(PyTorch's default), next to the 0.1-scaled Kaiming above, same seeds. The paper reports that the "
            "0.1-scaled Kaiming input layer separates the inputs within a few levels, Xavier later, and that plain "
            "Kaiming, whose fan-in scaling gives CartPole's 4-input layer its largest weights, is pruned late.", "",
            *table(["input-layer init", "seeds", "level by which both cart inputs are dead (mean; never = one past "
                    "the last level)", "seeds where both die"], rows), "",
            "Paired by seed, the level by which both cart inputs are dead: "
            + "; ".join(f"{b} − {a} {interval(v)}, n={v.n}: {v.verdict(+1)}"
                        for (a, b), v in zip(pairwise(SCHEME_NAMES), later))
            + " (the paper's order holds where each later scheme cuts them later).", "",
            "Per seed: " + ", ".join(f"[{name}](results/{study.name}/per_seed.csv)" for name, study in done) + ".", ""]
