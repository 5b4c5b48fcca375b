"""Lightning callbacks usable in any Lightning project (they import nothing from ``lth``).

The condition registry and the mask maths need only torch; :class:`PruningCallback` (Lightning) loads on first
use, so code that only names conditions (``lth.store.ui_views``) does not import Lightning.
"""

from typing import Any

from .conditions import Condition, condition_names, get_condition, register_condition, unregister_condition


def __getattr__(name: str) -> Any:
    if name == "PruningCallback":
        from .pruning import PruningCallback

        return PruningCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Condition",
    "PruningCallback",
    "condition_names",
    "get_condition",
    "register_condition",
    "unregister_condition",
]
