"""How every chain of an ``lth imp`` study prunes and rewinds: the ``--imp.*`` options, checked as they are parsed.

Its own module (below :mod:`lth.cli.parsing` and :mod:`lth.study.imp`, above nothing of lth's but the condition registry), so
that parsing a config does not import the study engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt

from lth.callbacks import condition_names
from lth.errors import ConfigError

#: The condition of a study that names none: the lottery ticket itself.
DEFAULT_CONDITION = "mask/weights"


@dataclass
class ImpSettings:
    """How every chain of lth imp prunes and rewinds (--imp.* options).

    Args:
        levels: fits per chain; level k trains the network of density (1 - amount)^k
        condition: deprecated alias of --imp.conditions NAME (one chain of that condition)
        conditions: one chain per condition: a list ([a,b], as --imp.modules takes), a comma-separated string, or
            all (the paper's four); default: mask/weights (lth imp --help lists the conditions)
        amount: the fraction of the remaining weights each level prunes
        modules: sub-modules to prune, e.g. [actor] (the paper's AP); default: every prunable layer
        rewind: where the surviving weights restart each level: init (their initial values) or N (their values
            after N optimizer steps of the first fit: late rewinding)
        prune_from: the weights whose magnitudes pick the next mask: those of the fit's best evaluation, or its last
        branch_from: parent run id of a stored ticket chain whose level-k masks level k reuses instead of pruning
    """

    levels: PositiveInt = 20
    condition: str | None = None
    conditions: list[str] | str | None = None
    amount: OpenUnitInterval = 0.2
    modules: list[str] | None = None
    rewind: NonNegativeInt | Literal["init"] = "init"
    prune_from: Literal["best", "last"] = "best"
    branch_from: str | None = None

    def chain_conditions(self) -> list[str]:
        """The conditions to run, one chain each, validated."""
        if self.conditions is not None and self.condition is not None:
            raise ConfigError("imp.condition is the deprecated alias of imp.conditions: give imp.conditions only")
        if self.conditions is None:
            chosen = [self.condition or DEFAULT_CONDITION]
        elif self.conditions in ("all", ["all"]):
            chosen = list(condition_names(paper=True))
        else:
            parts = self.conditions if isinstance(self.conditions, list) else self.conditions.split(",")
            chosen = [c.strip() for c in parts if c.strip()]
        unknown = [c for c in chosen if c not in condition_names()]
        if unknown:
            option = "imp.conditions" if self.conditions is not None else "imp.condition"
            raise ConfigError(f"{option}: unknown condition(s) {unknown}; valid: {list(condition_names())} or 'all'")
        if self.levels < 1:
            raise ConfigError(f"imp.levels must be >= 1, got {self.levels}")
        return chosen
