"""Lightning callbacks usable in any Lightning project (they import nothing from ``lth``)."""

from callbacks.masks import CONDITIONS, PAPER_CONDITIONS
from callbacks.pruning import PruningCallback

__all__ = ["CONDITIONS", "PAPER_CONDITIONS", "PruningCallback"]
