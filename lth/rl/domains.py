"""Value domains of constructor arguments, declared once as annotations (jsonargparse's restricted types).

The ``lth`` command's parser checks them while parsing (command line and YAML alike); :func:`check_domains`
gives Python callers who build a module or datamodule directly the same refusal.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from jsonargparse.typing import restricted_number_type

from lth.errors import ConfigError

#: A discount factor: in (0, 1].
Discount = restricted_number_type("Discount", float, [(">", 0), ("<=", 1)], docstring="a number in (0, 1]")


_OPS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def describe(hint: Any) -> str:
    """A type annotation as the valid values it allows: ``PositiveInt`` -> ``an integer > 0``,
    ``NonNegativeInt | Literal["init"]`` -> ``an integer >= 0 or 'init'``, ``OpenUnitInterval`` -> ``a number
    in (0, 1)``. The domains are declared once, as the annotations (jsonargparse checks values against them)."""
    restrictions = getattr(hint, "_restrictions", None)
    if restrictions:
        base = "an integer" if issubclass(getattr(hint, "_type", float), int) else "a number"
        bounds = {_OPS.get(getattr(op, "__name__", str(op)), str(op)): value for op, value in restrictions}
        low = next(((op, v) for op, v in bounds.items() if op in (">", ">=")), None)
        high = next(((op, v) for op, v in bounds.items() if op in ("<", "<=")), None)
        if low and high:
            return f"{base} in {'(' if low[0] == '>' else '['}{low[1]}, {high[1]}{')' if high[0] == '<' else ']'}"
        return f"{base} " + " and ".join(f"{op} {v}" for op, v in bounds.items())
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin in (list, tuple, Sequence) and args:
        return f"a list of values each {describe(args[0])}"
    if hint is bool:
        return "true or false"
    if isinstance(hint, type) and issubclass(hint, int):
        return "an integer"
    if isinstance(hint, type) and issubclass(hint, float):
        return "a number"
    if hint is str:
        return "a string"
    return getattr(hint, "__name__", str(hint))


def check_domains(cls: type, values: dict[str, Any]) -> None:
    """Check ``values`` of ``cls``'s constructor arguments against the domains their annotations declare
    (jsonargparse restricted types such as ``PositiveInt``, also as list items): the parser checks these for the
    ``lth`` command; this gives the same refusal, a :class:`ConfigError` naming the argument, to Python callers."""
    for name, hint in typing.get_type_hints(cls.__init__).items():
        items = [values.get(name)]
        if typing.get_origin(hint) is list:
            hint, items = (typing.get_args(hint) or (None,))[0], list(values.get(name) or [])
        if not getattr(hint, "_restrictions", None) or name not in values:
            continue
        for value in items:
            try:
                hint(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be {describe(hint)}, got {value!r}") from None
