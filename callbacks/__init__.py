"""Lightning callbacks usable in any Lightning project (they import nothing from ``lth``)."""

from .masks import CONDITIONS, PAPER_CONDITIONS
from .pruning import PruningCallback

__all__ = ["CONDITIONS", "PAPER_CONDITIONS", "PruningCallback"]
