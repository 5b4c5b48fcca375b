"""Analyses of tickets: which observation inputs a pruned network still uses."""

from lth.analysis.inputs import (
    InputReport,
    alive_inputs,
    dead_inputs,
    input_layers,
    input_mass,
    input_names,
    input_report,
    last_alive_level,
)

__all__ = [
    "InputReport",
    "alive_inputs",
    "dead_inputs",
    "input_layers",
    "input_mass",
    "input_names",
    "input_report",
    "last_alive_level",
]
