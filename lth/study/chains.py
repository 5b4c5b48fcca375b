"""What a study is made of: its shared setup (:class:`Study`), its chains (a seed and a condition), each level's score,
and the progress line with its ETA. Data only: no training, no store."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L

from lth.modules import AgentModule
from lth.store.chain_store import chain_run_name


@dataclass
class LevelResult:
    """One finished level of one chain: its density and best evaluation return."""

    condition: str
    level: int
    density: float
    best_return: float


@dataclass
class Study:
    """What every chain of a study shares: the model as configured (an ordinary agent), data, trainer options,
    store, seeds, and how many chains may train together as one population."""

    model: AgentModule
    datamodule: L.LightningDataModule
    trainer_kwargs: dict[str, Any]
    tracking_uri: str
    experiment: str
    seeds: list[int]
    tags: dict[str, str]
    description: dict[str, Any] | None = None  # JSON data: model, data, trainer budget, seed (lth.store.chain_identity)
    population: int | None = None  # at most this many chains per population; None: all of them
    config_yaml: str = ""  # the resolved command config, stored as each chain's config.yaml
    #: Per description section (model, data, trainer) the constructor defaults a chain's identity leaves out.
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """One IMP chain of a study: its seed and condition."""

    seed: int
    condition: str

    @property
    def prefix(self) -> str:
        return f"[{self.condition} seed {self.seed}]"

    @property
    def name(self) -> str:
        """Its chain run's name, e.g. ``mask/weights s0``."""
        return chain_run_name(self.condition, self.seed)


@dataclass
class Progress:
    """How far a study is, for the ETA on each level's line: level runs recorded by this process, of those left."""

    left: int  # level runs the study has yet to record (finished ones found on resume are taken off)
    done: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    def record(self) -> str:
        """Count one recorded level run; its progress note, e.g. ``12/80 levels, ETA 4 min``."""
        self.done += 1
        if self.done >= self.left:
            return f"{self.done}/{self.left} levels"
        eta = (time.monotonic() - self.started) / self.done * (self.left - self.done)
        return f"{self.done}/{self.left} levels, ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"
