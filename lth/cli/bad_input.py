"""Bad input as one line: jsonargparse's nested reports turned into ``option must be <valid values>, got <value>``
(:func:`one_line`), the value the command line or its config files gave an option (:func:`given_value`), and
config files that are not YAML mappings (:func:`check_config_files`)."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lth.errors import ConfigError
from lth.rl.domains import describe


def _init_hint(class_path: str, key: str) -> Any:
    """The annotation of ``key`` (``lr``, ``network.input_scale``) among ``class_path``'s constructor arguments."""
    try:
        module, _, name = class_path.rpartition(".")
        target: Any = getattr(importlib.import_module(module), name)
        for part in key.split("."):
            target = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)[part]
        return target
    except Exception:  # noqa: BLE001 - no annotation found: the message says less, nothing else changes
        return None


def _parser_hint(parser: Any, key: str) -> Any:
    if key.startswith("trainer."):
        return _init_hint("lightning.pytorch.Trainer", key.removeprefix("trainer."))
    action = getattr(parser, "_option_string_actions", {}).get(f"--{key}") if parser is not None else None
    return getattr(action, "_typehint", None)


def _flat(message: str) -> str:
    """A message on one line; a leading ``Parser key "k":`` becomes ``k:``."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return re.sub(r'^Parser key "([^"]+)":', r"\1:", text)


def given_value(option: str, args: Sequence[str]) -> str | None:
    """What the arguments gave ``option`` (``model.init_args.lr``): its last ``--option VALUE`` on the command
    line, else its value in the last ``--config`` YAML file that sets it; None if neither does."""
    import yaml

    args = list(args)
    flag = f"--{option}"
    for i in range(len(args) - 1, -1, -1):
        if args[i] == flag and i + 1 < len(args):
            return args[i + 1]
        if args[i].startswith(flag + "="):
            return args[i].split("=", 1)[1]
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    for path in reversed(paths):
        try:
            node: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        for part in option.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            return json.dumps(node) if isinstance(node, (dict, list)) else str(node)
    return None


_MISSING = object()


def one_line(message: str, parser: Any = None, args: Sequence[str] = ()) -> str:
    """jsonargparse's (multi-line, nested) report of a bad value as one line naming the option, its valid values
    and the value given: ``data.init_args.num_envs must be an integer > 0, got 0``. The value is what ``args`` (the
    command line and its config files) gave the option when found there: jsonargparse reports a nested option's
    whole section, or no value at all."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    class_path = re.search(r"Problem with given class_path '([^']+)'", message)
    unknown = re.search(r"Option '([^']+)' is not accepted", message)
    if class_path and keys:
        inner = unknown.group(1) if unknown else (keys[1] if len(keys) > 1 else None)
        if inner is None:
            return _flat(message)
        option = f"{keys[0]}.init_args.{inner}"
        if unknown:
            return f"{option}: {class_path.group(1)} takes no option {inner!r} (see --{keys[0]}.help {class_path.group(1)})"
        hint = _init_hint(class_path.group(1), inner)
    elif keys and keys[0] != "config":
        option, hint = keys[0], _parser_hint(parser, keys[0])
    else:
        return _flat(message)
    value = None
    for pattern in (r"NestedArg\(key='[^']*', val=(.*)\)\s*$", r"Not of type \w+: (.+?) does not conform",
                    r"Got value: (.*)", r"Given value: (.*)"):
        found = re.search(pattern, message, re.MULTILINE)
        if found:
            value = found.group(1).strip()
            value = value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value
            break
    value = given_value(option, args) or value
    if hint is not None:
        valid = describe(hint)
    else:
        types_ = re.findall(r"Expected an? <class '([\w.]+)'>", message)
        valid = " or ".join("null" if t == "NoneType" else f"a {t}" for t in types_) or "a valid value"
    shown = "an invalid value" if value is None else value if len(value) <= 100 else f"{value[:96]}... ({len(value):,} characters)"
    return f"{option} must be {valid}, got {shown}"


def check_config_files(args: Sequence[str]) -> None:
    """Refuse an empty or non-mapping ``--config`` YAML file with a clear line (jsonargparse says "Unexpected
    config:")."""
    import yaml

    args = list(args)
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                              "save the YAML file as UTF-8") from exc
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"--config {path}: not valid YAML ({first})") from exc
        if content is None:
            raise ConfigError(f"--config {path}: the file is empty; expected a YAML mapping of options "
                              "(trainer:, model:, data:, ...), e.g. configs/cartpole/ppo.yaml")
        if not isinstance(content, dict):
            raise ConfigError(f"--config {path}: expected a YAML mapping of options (trainer:, model:, data:, ...), "
                              f"got a {type(content).__name__}")
