"""A chain's identity is its configuration: a stable hash of everything that shapes its masks.

Like open_lth's hashed run descriptions (``Desc.hashname``), an IMP chain is described by a plain JSON
document and identified by the hash of its canonical form (keys sorted, no whitespace, no object reprs).
The same command resumes the chain with the same hash; any change that can change the masks starts a new
chain. The description holds:

- ``model`` and ``data``: the parsed ``class_path`` / ``init_args`` of both, in full (``data.init_args.seed``
  is the study seed);
- ``trainer``: the parsed trainer options minus :data:`TRAINER_KEYS_IGNORED`, the options that only decide
  what is shown or written where, or that ``lth imp`` overrides per level (its logger and callbacks);
- ``imp``: every ``--imp.*`` setting except ``levels`` (extending a chain resumes it) and ``condition``,
  ``conditions`` and ``branch_from``, which are the chain's own ``condition`` and ``branch_from`` keys (a
  ``--imp.conditions`` study is one chain per condition);
- ``seed``, ``condition``, ``branch_from`` and ``version`` (of this description's layout).

A chain is identified by its description with every option at its default left out (:func:`identity`: the
defaults of the configured classes, the Trainer and the ``--imp.*`` settings, given by the caller), so a later lth
that adds an option with a default resumes the chains stored before it instead of silently starting new ones. The
price: a default that a later version changes is not seen; such a change of lth's behaviour bumps :data:`VERSION`.
The chain run's params still show every option (the full description), and so do the differences printed when a
changed configuration starts a new chain.

Not in it: the tracking URI and experiment name (where the chain is stored, not what it is), ``--config``
paths, ``--resume``. Paths that only locate outputs differ between machines and are left out for that
reason; a value that shapes results stays in even if it is a path.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

VERSION = 2  # 2: options at their defaults left out of the identity

TRAINER_KEYS_IGNORED = (
    "logger",  # lth imp logs each level to its own MLflow run
    "callbacks",  # lth imp trains with its own callbacks only (FitEnd, PruningCallback)
    "enable_checkpointing",  # forced off per level
    "enable_progress_bar",
    "enable_model_summary",
    "enable_autolog_hparams",
    "log_every_n_steps",  # how often metrics are logged, not what is trained
    "default_root_dir",  # a local output folder
    "profiler",
    "model_registry",
)
IMP_KEYS_IGNORED = ("levels", "condition", "conditions", "branch_from")


def plain(value: Any) -> Any:
    """``value`` as JSON data: mappings (keys as strings), lists, strings, finite numbers, booleans and None.

    Paths become strings, enums their value; any other object its class's import path (never a repr with
    an address, which would differ between processes).
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace
        return plain(value.as_dict())
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def study_description(config: Any) -> dict[str, Any]:
    """What every chain of an ``lth imp`` study shares, from its parsed config (a jsonargparse Namespace)."""
    as_dict = config.as_dict() if hasattr(config, "as_dict") else dict(config)
    trainer = {k: v for k, v in (as_dict.get("trainer") or {}).items() if k not in TRAINER_KEYS_IGNORED}
    return plain({"model": as_dict.get("model"), "data": as_dict.get("data"), "trainer": trainer,
                  "seed": as_dict.get("seed_everything")})


def member_description(study: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The study description of its chains with seed ``seed`` (``seed`` and ``data.init_args.seed``): what that
    chain is, whichever population it trains in."""
    data = dict(study.get("data") or {})
    if isinstance(data.get("init_args"), Mapping):
        data["init_args"] = {**data["init_args"], "seed": seed}
    return {**study, "seed": seed, "data": data}


def chain_description(study: Mapping[str, Any], settings: Mapping[str, Any], condition: str) -> dict[str, Any]:
    """One chain's description: the study's, its ``--imp.*`` settings (minus levels), condition and branch source."""
    imp = {k: v for k, v in settings.items() if k not in IMP_KEYS_IGNORED}
    return plain({**study, "imp": imp, "condition": condition, "branch_from": settings.get("branch_from"),
                  "version": VERSION})


def _without(options: Mapping[str, Any], defaults: Mapping[str, Any] | None, keep: tuple[str, ...] = ()) -> dict:
    """``options`` minus those equal (as plain data) to their value in ``defaults`` (except the ``keep`` ones)."""
    defaults = defaults or {}
    return {k: v for k, v in options.items()
            if k in keep or k not in defaults or plain(v) != plain(defaults[k])}


def identity(description: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What identifies a chain: its :func:`chain_description` with the options at their ``defaults`` left out
    (``defaults``: per section, ``model`` and ``data`` (their init args), ``trainer`` and ``imp``, the constructor
    defaults); the chain's seed always stays."""
    out = dict(plain(description))
    for section in ("model", "data"):
        part = out.get(section)
        if isinstance(part, Mapping) and isinstance(part.get("init_args"), Mapping):
            keep = ("seed",) if section == "data" else ()
            out[section] = {**part, "init_args": _without(part["init_args"], defaults.get(section), keep)}
    for section in ("trainer", "imp"):
        if isinstance(out.get(section), Mapping):
            out[section] = _without(out[section], defaults.get(section))
    return out


def canonical_json(description: Mapping[str, Any]) -> str:
    return json.dumps(plain(description), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def chain_hash(description: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the description's canonical JSON: the same in every process."""
    return hashlib.sha256(canonical_json(description).encode()).hexdigest()[:16]


def flatten(description: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted option names (``model.init_args.lr``) -> canonical JSON of their values; lists stay whole."""
    flat: dict[str, str] = {}
    for key, value in description.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(plain(value), sort_keys=True, separators=(",", ":"))
    return flat


def differences(old: Mapping[str, str], new: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(key, old value, new value)`` for every flattened key whose value differs (``-`` where one is missing)."""
    return [(k, old.get(k, "-"), new.get(k, "-")) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def describe_differences(diffs: list[tuple[str, str, str]], limit: int = 8) -> str:
    """``imp.amount (0.2 -> 0.5), model.init_args.lr (0.0005 -> 0.003)``, at most ``limit`` keys then a count."""
    if not diffs:
        return "nothing its stored options show (an older description layout)"
    shown = ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, a, b in diffs[:limit])
    return shown + (f" and {len(diffs) - limit} more" if len(diffs) > limit else "")


def _short(value: str, width: int = 40) -> str:
    value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return value if len(value) <= width else value[: width - 3] + "..."
