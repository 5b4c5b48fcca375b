"""The prose and Markdown tables a study shows its reader: a chain run's and an experiment's MLflow notes, a chain's
table of levels, a level's layer densities and the summary ``lth imp`` prints. Pure text from plain values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from lth.callbacks import get_condition


class Scored(Protocol):
    """One level's score, as a study records it (``lth.study.chains.LevelResult``)."""

    condition: str
    level: int
    density: float
    best_return: float


def chain_note(algo: str, env: str, seed: int, condition: str, amount: float, modules: Sequence[str] | None,
               prune_from: str, rewind: str | int, chain_name: str) -> str:
    """What an IMP chain run is, for its MLflow note: the chain, its condition and pruning rule, and where its
    metrics and levels are."""
    rule = get_condition(condition)
    rewound_to = "initialisation" if rewind == "init" else f"weights after {rewind} optimizer steps"
    pruned = ", ".join(modules) if modules else "every prunable layer"
    return (
        f"IMP chain: {algo} on {env}, seed {seed}, condition {condition} (mask: {rule.mask}; weights: {rule.weights}; "
        f"layer ratios: {rule.layer_ratio}). Each level trains, then prunes {amount:.0%} of the remaining weights of "
        f"{pruned} by global magnitude from its {prune_from} weights (rewind point: {rewound_to}). Metrics "
        "`ticket/best_return`, `density` and `train_seconds` have one point per level (step = level); the child runs "
        f"`{chain_name} L<level>` hold each level's curves, ticket (`ticket.pt`), trained weights and input picture."
    )


def experiment_note(algo: str, env: str, chains_view: str, levels_view: str) -> str:
    """What an ``lth imp`` experiment holds and which saved views compare its conditions, for its MLflow note."""
    return (
        f"Lottery-ticket (IMP) study of {algo} on {env}, made by `lth imp`. Each top-level run is one chain (a seed "
        f"and a ticket condition) with one point per level; its child runs are the levels. To compare conditions, "
        f"open the saved view `{chains_view}` (the URL `lth imp` prints ends in `viewStateShareKey={chains_view}`): "
        f"chains grouped by condition (mean and spread over seeds), `ticket/best_return` against level "
        f"and against density. The view `{levels_view}` plots every level run's best return against its density."
    )


def density_table(per_layer: Mapping[str, float]) -> str:
    """A level's density per pruned layer, as Markdown."""
    rows = "\n".join(f"| `{name}` | {value:.4f} |" for name, value in per_layer.items())
    return f"| layer | density |\n| --- | --- |\n{rows}\n"


def levels_table(results: Iterable[Scored]) -> str:
    """One chain's density and best return per level, as Markdown."""
    rows = "\n".join(f"| {r.level} | {r.density:.4f} | {r.best_return:.1f} |" for r in results)
    return f"| level | density | best return |\n| ---: | ---: | ---: |\n{rows}\n"


def summary_table(results: Sequence[Scored]) -> str:
    """Best return per level (rows) and condition (columns), as Markdown."""
    conditions = list(dict.fromkeys(r.condition for r in results))
    levels = sorted({r.level for r in results})
    cell = {(r.condition, r.level): r for r in results}
    head = "| level | density | " + " | ".join(conditions) + " |"
    rule = "| --- | --- |" + " --- |" * len(conditions)
    lines = [head, rule]
    for level in levels:
        dens = next(r.density for r in results if r.level == level)
        scores = [f"{cell[(c, level)].best_return:.1f}" if (c, level) in cell else "" for c in conditions]
        lines.append(f"| {level} | {dens:.3f} | " + " | ".join(scores) + " |")
    return "\n".join(lines)
