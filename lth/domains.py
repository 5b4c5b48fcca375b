"""Value domains of constructor arguments, declared once as annotations (jsonargparse's restricted types).

The ``lth`` command's parser checks them while parsing (command line and YAML alike); :func:`check_domains`
gives Python callers who build a module or datamodule directly the same refusal.
"""

from __future__ import annotations

import typing
from typing import Any

from jsonargparse.typing import restricted_number_type

from lth.errors import ConfigError

#: A discount factor: in (0, 1].
Discount = restricted_number_type("Discount", float, [(">", 0), ("<=", 1)], docstring="a number in (0, 1]")


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
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name} must be a {hint.__name__}, got {value!r} ({exc})") from None
