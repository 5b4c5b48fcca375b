"""A study's per-seed record: one CSV row per chain and level, the data every published verdict is computed from.

``per_seed.csv`` has the columns ``condition, seed, level, density, best_return`` and, where the study analysed
its input layers, one column ``inputs/<module>/<input>`` per input: the summed |weight| its first-layer column
still holds (0: the input is dead, the ticket no longer sees it); image studies add per-channel cell shares
``cells/<channel>/<measure>`` (e.g. MazeGrid's cells seen on and off each object map's support). :func:`write_per_seed` writes it from a study's
chains (read back from MLflow); :class:`PerSeed` reads it and answers the per-seed questions the claims ask,
without MLflow, Lightning or torch.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("condition", "seed", "level", "density", "best_return")
ANALYSED = ("inputs/", "cells/")  # the prefixes of input-survival columns: <prefix><module or channel>/<name>
KEEP = 0.95  # "keeps its dense return": at least this share of level 0's, counted above the task's worst return


@dataclass(frozen=True)
class Level:
    """One chain's record at one level."""

    density: float
    best_return: float
    inputs: Mapping[str, float] = field(default_factory=dict)  # input-survival columns (:data:`ANALYSED`) -> value


def _number(value: float) -> str:
    """A float as the shortest text that reads back to the same float (``repr``), so a CSV round trip is exact."""
    return repr(float(value))


def write_per_seed(rows: Iterable[tuple[str, int, int, Mapping[str, float]]], path: Path) -> None:
    """Write ``(condition, seed, level, metrics)`` rows, ``metrics`` holding ``density``, ``ticket/best_return``
    and any input-survival values (:data:`ANALYSED`), sorted by condition, seed and level."""
    rows = sorted(rows, key=lambda r: (r[0], r[1], r[2]))
    inputs = sorted({k for *_, metrics in rows for k in metrics if k.startswith(ANALYSED) and k.count("/") == 2})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*COLUMNS, *inputs])
        for condition, seed, level, metrics in rows:
            writer.writerow([condition, seed, level, _number(metrics["density"]),
                             _number(metrics.get("ticket/best_return", math.nan)),
                             *(_number(metrics[k]) if k in metrics else "" for k in inputs)])


class PerSeed:
    """A study's per-seed table: ``data[condition][seed][level]`` is a :class:`Level`."""

    def __init__(self, data: dict[str, dict[int, dict[int, Level]]]) -> None:
        self.data = data

    @classmethod
    def read(cls, path: Path) -> PerSeed:
        """The table of a ``per_seed.csv``; a missing column or a malformed value is a ``ValueError`` naming it."""
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)} first")
            data: dict[str, dict[int, dict[int, Level]]] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    inputs = {k: float(v) for k, v in row.items() if k.startswith(ANALYSED) and v != ""}
                    level = Level(float(row["density"]), float(row["best_return"]), inputs)
                    data.setdefault(row["condition"], {}).setdefault(int(row["seed"]), {})[int(row["level"])] = level
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{path}:{line}: {exc}") from exc
        return cls(data)

    def conditions(self, order: Sequence[str] = ()) -> list[str]:
        """The conditions measured, those in ``order`` first (in its order), then the rest sorted."""
        rank = {c: i for i, c in enumerate(order)}
        return sorted(self.data, key=lambda c: (rank.get(c, len(rank)), c))

    def seeds(self, condition: str | None = None) -> list[int]:
        """The seeds of ``condition`` (of every condition when None)."""
        groups = [self.data[condition]] if condition else self.data.values()
        return sorted({seed for group in groups for seed in group})

    def levels(self, condition: str) -> list[int]:
        """The levels every seed of ``condition`` finished."""
        return sorted(set.intersection(*(set(levels) for levels in self.data[condition].values())))

    def density(self, condition: str, level: int) -> float:
        """The mean density of ``condition`` at ``level`` (the same for every seed: (1 - amount)^level)."""
        return statistics.fmean(chain[level].density for chain in self.data[condition].values())

    def returns(self, condition: str, level: int) -> dict[int, float]:
        """Each seed's best return at ``level``."""
        return {seed: chain[level].best_return for seed, chain in self.data[condition].items()}

    def sparse_levels(self, condition: str, max_density: float = 0.1) -> list[int]:
        """The levels of ``condition`` at density <= ``max_density``."""
        return [k for k in self.levels(condition) if self.density(condition, k) <= max_density + 1e-12]

    def sparse_mean(self, condition: str, max_density: float = 0.1,
                    within: Collection[int] | None = None) -> dict[int, float]:
        """Each seed's best return averaged over the levels at density <= ``max_density`` (only those ``within``,
        e.g. the levels two studies both reached); empty if there are none."""
        low = [k for k in self.sparse_levels(condition, max_density) if within is None or k in within]
        if not low:
            return {}
        return {seed: statistics.fmean(chain[k].best_return for k in low) for seed, chain in self.data[condition].items()}

    def sparsest_kept(self, condition: str, floor: float = 0.0, keep: float = KEEP) -> dict[int, float]:
        """Per seed, the sparsest density down to which every level keeps ``keep`` of that seed's level-0 return,
        both counted above the task's worst return ``floor`` (a seed that keeps it to the last level gets the last
        level's density: a bound, not a measurement)."""
        kept = {}
        for seed, chain in self.data[condition].items():
            dense = chain[0].best_return
            last = 0
            for k in sorted(chain):
                if chain[k].best_return - floor < keep * (dense - floor):
                    break
                last = k
            kept[seed] = chain[last].density
        return kept

    def inputs(self, condition: str) -> list[str]:
        """The input-survival columns recorded for ``condition`` (:data:`ANALYSED`), in file order."""
        names: dict[str, None] = {}
        for chain in self.data[condition].values():
            for level in chain.values():
                names.update(dict.fromkeys(level.inputs))
        return list(names)

    def dead_from(self, condition: str, seed: int, column: str) -> int | None:
        """The first level at which input ``column`` (``inputs/<module>/<input>``) has no weight left, or None."""
        dead = [k for k, level in sorted(self.data[condition][seed].items()) if level.inputs.get(column) == 0]
        return dead[0] if dead else None
