"""What every results section shares: its Markdown and README lines, anchors, budget and setting phrases."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.analysis.verdicts import Interval

#: A study this many times below the paper's per-level budget says its return comparisons are exploratory.
EXPLORATORY = 10
ALGORITHMS = {"ppo": "PPO", "dqn": "DQN", "distill": "distillation"}


@dataclass
class Section:
    """A block of docs/RESULTS.md, the README bullets that summarise it, and the text files beside it (a study's
    ``comparisons.md``), all generated."""

    markdown: str
    readme: list[str] = field(default_factory=list)
    files: dict[Path, str] = field(default_factory=dict)


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lstrip("#").strip().lower())
    return text.replace(" ", "-")


def link(heading: str, text: str | None = None) -> str:
    """A README link to a heading of docs/RESULTS.md."""
    return f"[{text or heading.lstrip('#').strip()}](docs/RESULTS.md#{anchor(heading)})"


def factor(meta: dict[str, Any]) -> float:
    """By how much the study's frames per level fall below the paper's (1: the paper's budget)."""
    return meta["paper_frames"] / meta["frames"]


def times(meta: dict[str, Any]) -> str:
    """The factor as written: ``2.5x``, ``5x`` (``:.0f`` would round 2.5 to 2)."""
    return f"{round(factor(meta), 1):g}x"


def budget(meta: dict[str, Any]) -> str:
    """``the paper's 80k frames per level`` or ``100k frames per level, 5x below the paper's 500k``."""
    if meta["frames"] >= meta["paper_frames"]:
        return f"the paper's {meta['frames'] // 1000}k frames per level"
    return (f"{meta['frames'] // 1000}k frames per level, {times(meta)} below the paper's "
            f"{meta['paper_frames'] // 1000}k")


def exploratory(meta: dict[str, Any]) -> str:
    """The caveat of a study :data:`EXPLORATORY` or more times below the paper's budget (else empty)."""
    if factor(meta) < EXPLORATORY:
        return ""
    return (f" At {times(meta)} below the paper's budget its return comparisons are exploratory: they test this "
            "budget, not the paper's setting.")


def pruned(meta: dict[str, Any]) -> str:
    """``actor pruned``, ``actor and critic pruned`` or ``every layer pruned``."""
    modules = meta["modules"]
    return "every layer pruned" if not modules else " and ".join(modules) + " pruned"


def setting(meta: dict[str, Any], seeds: int | None = None, dense: bool = False) -> str:
    """A figure title: env, algorithm, pruned modules (``dense``: none, a dense fit), budget, seeds."""
    n = len(meta["seeds"]) if seeds is None else seeds
    what = "dense, " if dense else f"{pruned(meta)}, "
    return (f"{meta['env']}, {ALGORITHMS.get(meta['algo'], meta['algo'])}, {what}{meta['frames'] // 1000}k frames"
            f"{'' if dense else ' per level'}, {n} seeds")


def table(head: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    """A Markdown table, right-aligned from column ``numeric_from`` on."""
    align = ["---"] * numeric_from + ["---:"] * (len(head) - numeric_from)
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(row) + " |" for row in rows)]


def says(verdict: str) -> str:
    """A verdict as a predicate: ``holds``, ``is reversed``, ``is not resolved`` (bold)."""
    return f"**{verdict}**" if verdict == "holds" else f"is **{verdict}**"


def interval(value: Interval, digits: int = 1) -> str:
    """``12.3 [4.5, 20.1]``: a mean with its 95% confidence interval."""
    return f"{value.mean:.{digits}f} [{value.low:.{digits}f}, {value.high:.{digits}f}]"
