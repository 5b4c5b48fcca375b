"""A study's seeds: ``--seeds`` forms (:func:`parse_seeds`), a config's seeds (:func:`study_seeds`), and one seed
applied to a config's trainer and data (:func:`apply_seed`)."""

from __future__ import annotations

import re

from jsonargparse import Namespace
from lightning.pytorch import seed_everything

from lth.errors import ConfigError


def apply_seed(config: Namespace, seed: int | None = None) -> None:
    """``--seed s`` (or ``seed``) sets the trainer's and the data's seed before the model is instantiated from it."""
    seed = config.seed if seed is None else seed
    if seed is not None:
        config.seed_everything = seed
        config.data.init_args.seed = seed
        seed_everything(seed)


SEEDS_FORMS = "a seed (3), a list (0,1,2), a range (0-4) or a mix (0-2,7) of integers >= 0"
MAX_SEEDS = 10_000  # a typo such as 0-1000000000 fails at once instead of filling the memory
_SEED_PART = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?")


def parse_seeds(text: str | int) -> list[int]:
    """The seeds ``--seeds`` names, in the given order without repeats: ``"3"`` -> ``[3]``, ``"0,1,2"``,
    ``"0-4"`` (both ends included), ``"0-2,7"``; whitespace around numbers, commas and dashes is allowed.

    Anything else (a negative or non-integer seed, an empty part, a descending range, more than
    :data:`MAX_SEEDS` seeds) raises :class:`ConfigError` with one line starting ``--seeds:`` that shows the
    accepted forms.
    """
    def bad(why: str) -> ConfigError:
        return ConfigError(f"--seeds: {why}; expected {SEEDS_FORMS}, got {text!r}")

    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise bad(f"not a string or an integer ({type(text).__name__})")
    if isinstance(text, int):
        if text < 0:
            raise bad("a seed must be an integer >= 0")
        return [text]
    if not text.strip():
        raise bad("no seed given")
    seeds: dict[int, None] = {}
    for part in text.split(","):
        found = _SEED_PART.fullmatch(part.strip())
        if found is None:
            raise bad(f"{part.strip()!r} is not a seed or a range" if part.strip() else "an empty item")
        first = int(found.group(1))
        last = first if found.group(2) is None else int(found.group(2))
        if last < first:
            raise bad(f"the range {first}-{last} descends")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise bad(f"more than {MAX_SEEDS} seeds")
        seeds.update(dict.fromkeys(range(first, last + 1)))
    return list(seeds)


def study_seeds(config: Namespace) -> list[int]:
    """The seeds of an ``lth imp`` config (one chain per seed and condition): ``--seeds`` parsed, else the
    single seed ``seed_everything`` set (0 if it set none)."""
    seeds = config.get("seeds")
    if seeds is not None:
        return parse_seeds(seeds)
    seed = config.get("seed_everything")
    return [seed] if isinstance(seed, int) and not isinstance(seed, bool) else [0]
