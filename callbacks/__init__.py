"""Lightning callbacks usable in any Lightning project (they import nothing from ``lth``)."""

from .conditions import Condition, condition_names, get_condition, register_condition, unregister_condition
from .pruning import PruningCallback

__all__ = [
    "Condition",
    "PruningCallback",
    "condition_names",
    "get_condition",
    "register_condition",
    "unregister_condition",
]

