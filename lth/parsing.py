"""From command-line arguments to objects: the LightningCLI classes of every ``lth`` command, and :func:`parse`.

:mod:`lth.runner` parses through :func:`parse` and runs; :mod:`lth.cli` (the ``lth`` command) only maps
arguments to those calls and prints. Configuration problems raise :class:`lth.errors.ConfigError`.

Every value is checked before anything trains or any MLflow run exists. Domains are declared once, as the
annotations of the constructors and of ``ImpSettings``/``TransferSettings`` (jsonargparse's restricted types such
as ``PositiveInt`` or ``OpenUnitInterval``, ``Literal`` choices), which jsonargparse checks while parsing;
:func:`one_line` turns its nested report into one line naming the option and its valid values (:func:`describe`).
Checks that need the built objects (``--imp.modules``, ``--imp.branch_from``, a late ``--imp.rewind``, lth
expert's checkpoint callback, lth transfer's ticket and level) run right after instantiation.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import re
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionYesNo, Namespace
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from lth.console import VERBOSE_HELP
from lth.domains import describe
from lth.errors import ConfigError, behind
from lth.experts import ExportExpert
from lth.modules import AgentModule
from lth.settings import ImpSettings
from lth.tracking import DEFAULT_TRACKING_URI, check_tracking_uri, mark_model_training, resolve_tracking_uri
from lth.transfer import TransferSettings, configure_fit


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


def mlflow_logger(config: Namespace, command: str) -> Namespace:
    """The config's MLFlowLogger spec (tracking URI resolved), or a clear error: ``command`` logs to MLflow."""
    logger = config.trainer.logger
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        raise ConfigError(
            f"lth {command} records its runs in MLflow: set trainer.logger to lightning.pytorch.loggers.MLFlowLogger"
        )
    logger.init_args.tracking_uri = resolve_tracking_uri(logger.init_args.tracking_uri or DEFAULT_TRACKING_URI)
    return logger


class _LightningInfo:
    """Lightning's INFO lines ("Seed set to", "GPU available", tips) held back while a config is parsed, so that a
    bad value ends with the one ``lth: error:`` line; a subcommand that runs (``lth fit``) shows them again, as far
    as :func:`lth.console.quiet` lets them through (``lth --verbose``: all)."""

    names = ("lightning.pytorch", "lightning.fabric")

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}

    def quiet(self) -> None:
        for name in self.names:
            found = logging.getLogger(name)
            self.levels.setdefault(name, found.level)
            found.setLevel(max(found.getEffectiveLevel(), logging.WARNING))

    def restore(self) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        self.levels = {}


_LIGHTNING_INFO = _LightningInfo()


class SaveConfigToMLflow(SaveConfigCallback):
    """Stores the resolved CLI config as ``config.yaml`` in each MLflow run (Lightning's stock callback
    asserts on ``trainer.log_dir``, which MLflow loggers do not have)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, "config.yaml")
                client = logger.experiment
                mark_model_training(client, client.get_experiment(logger.experiment_id))


class LthCLI(LightningCLI):
    """LightningCLI with the env id and kwargs shared by data and model and evaluation scheduled in env frames."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.init_args.env_id", "model.init_args.env_id")
        parser.link_arguments("data.init_args.env_kwargs", "model.init_args.env_kwargs")
        # A config is one paper experiment, pruning included (configs/cartpole/ppo.yaml prunes the actor only, as
        # the paper's AP): every command reads and checks its imp: section, only lth imp acts on it.
        parser.add_class_arguments(ImpSettings, "imp")

    stores: list[str]  # the tracking URIs the command writes to

    def before_instantiate_classes(self) -> None:
        """Resolve and check the loggers' tracking URIs (a missing local store only for whether it can be made)."""
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        self.stores = []
        for spec in logger if isinstance(logger, list) else [logger]:
            uri = getattr(spec, "init_args", {}).get("tracking_uri") if spec is not None else None
            if uri:
                spec.init_args.tracking_uri = resolve_tracking_uri(uri)
                check_tracking_uri(spec.init_args.tracking_uri, create=False)
                self.stores.append(spec.init_args.tracking_uri)

    def instantiate_classes(self) -> None:
        self.build_components()
        self.check_instantiated()
        for uri in self.stores:  # every check has passed: create a new store now, under its lock
            check_tracking_uri(uri)
        _LIGHTNING_INFO.restore()  # what the subcommand (e.g. ``lth fit``) logs is shown as usual

    def build_components(self) -> None:
        """LightningCLI's instantiation of model, data, trainer and its callbacks and loggers."""
        super().instantiate_classes()

    def check_instantiated(self) -> None:
        """Checks of the command's options that need the built model, data and trainer (before any store is
        created)."""

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        interval = getattr(self.datamodule, "eval_interval", None)
        if interval is not None:
            trainer.val_check_interval = interval  # datamodules schedule evaluation in env frames
        return trainer


EXPERT_DESCRIPTION = ("Train one agent as lth fit does and store its best checkpoint (ModelCheckpoint on eval/return) "
                      "as a distillation expert: the MLflow run's expert.ckpt artifact, which "
                      "data.init_args.expert of a distillation config names by run id.")


class ExpertCLI(LthCLI):
    """``lth fit`` that stores the best checkpoint as an expert for distillation (see :class:`ExportExpert`)."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        """Lightning's parsers, the fit subcommand's (what ``lth expert --help`` shows) named ``lth expert``."""
        fit = {**subparser_kwargs.get("fit", {}), "description": EXPERT_DESCRIPTION}
        super().setup_parser(add_subcommands, main_kwargs, {**subparser_kwargs, "fit": fit})
        if add_subcommands:
            self._subcommand_parsers["fit"].prog = "lth expert"

    def before_instantiate_classes(self) -> None:
        """Refuse a config without a ``ModelCheckpoint`` that monitors a metric, from the config itself: before the
        logger is built (MLflow's client creates the store) and before anything trains."""
        super().before_instantiate_classes()
        callbacks = self.config.get(str(self.subcommand), self.config).get("trainer", {}).get("callbacks") or []
        if not any(str(getattr(c, "class_path", "")).endswith(".ModelCheckpoint")
                   and getattr(c, "init_args", {}).get("monitor") for c in callbacks):
            raise ConfigError("trainer.callbacks: lth expert needs a ModelCheckpoint monitoring eval/return "
                              "(it stores the best checkpoint as the expert), as in configs/*/ppo.yaml")

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(ExportExpert())
        return trainer


def _add_seed_argument(parser: Any) -> None:
    parser.add_argument(
        "--seed",
        type=int | None,
        default=None,
        help="study seed: seeds the model, the envs and every pruning choice",
    )


def _add_study_arguments(parser: Any) -> None:
    """``lth imp``'s ``--seeds``, ``--population``, ``--resume``, ``--executor`` and ``--ray.*``."""
    parser.add_argument(
        "--seeds",
        type=str | int | None,  # int: a YAML ``seeds: 3``; the command line gives a string
        default=None,
        help="the study's seeds, e.g. 0,1,2 or 0-4; one chain per seed and condition (default: the config's "
             "seed_everything, or 0)",
    )
    parser.add_argument(
        "--population",
        type=PositiveInt | None,
        default=None,
        help="at most this many chains train together as one batched population network per process "
             "(default: all chains of the study, as far as DQN members' replay buffers fit in memory)",
    )
    parser.add_argument(
        "--resume",
        action=ActionYesNo,
        default=True,
        help="continue the chain with the same configuration at its first unfinished level (--no_resume: a new chain)",
    )
    parser.add_argument(
        "--executor",
        type=typing.Literal["local", "ray"],
        default="local",
        help="where the study's populations (units) train: local (one after another in this process) or ray (one "
             "Ray task each, retried from MLflow's records if its worker dies)",
    )
    parser.add_argument(
        "--ray.address",
        type=str | None,
        default=None,
        help="with --executor ray: the Ray cluster to connect to (auto or HOST:PORT; default: start a local Ray on "
             "every CPU); a sqlite store needs every Ray node on this machine",
    )
    parser.add_argument(
        "--ray.cpus_per_unit",
        type=PositiveInt,
        default=1,
        help="with --executor ray: CPUs Ray reserves for each unit's task",
    )


IMP_DESCRIPTION = (
    "Iterative magnitude pruning (IMP) studies. A chain trains the configured agent --imp.levels times; after "
    "each fit it prunes --imp.amount of the remaining weights by magnitude and rewinds the survivors "
    "(--imp.rewind). One chain per condition and seed; every level is a nested MLflow run holding its ticket; "
    "the same command resumes an interrupted study."
)


def imp_help() -> str:
    """The top of ``lth imp --help``: lth's own options with descriptions and defaults, and the valid conditions
    (Lightning's options, hundreds of lines, follow it)."""
    import textwrap

    from jsonargparse import ArgumentParser

    from lth.callbacks import condition_names, get_condition

    parser = ArgumentParser(
        prog="lth imp",
        usage="lth imp --config CONFIG [--imp.* ...] [--seeds SEEDS] [--population N] [--no_resume] [--verbose] "
              "[Lightning's options]",
        description=IMP_DESCRIPTION,
        add_help=False,
    )
    parser.add_class_arguments(ImpSettings, "imp")
    study = parser.add_argument_group("The study")
    _add_study_arguments(study)
    study.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    rows = []
    for name in condition_names():
        c = get_condition(name)
        rows.append(textwrap.fill(f"{name:<18} weights: {c.weights}; mask: {c.mask}{f' ({c.note})' if c.note else ''}",
                                  width=100, initial_indent=f"  {'*' if c.paper else ' '} ", subsequent_indent=" " * 23))
    return "\n".join([parser.format_help().rstrip(), "",
                      "Conditions (--imp.condition NAME, --imp.conditions NAME,NAME,... or all = the paper's four, *):",
                      *rows, ""])


class ImpCLI(LthCLI):
    """The fit CLI plus ``--imp.*`` study options, ``--seeds`` (the study's seeds), ``--population`` and
    ``--resume``.

    The seeds and ``--imp.*`` settings are checked before anything is built (``cli.seeds``, ``cli.settings``); the
    model and data are built with the first seed.
    """

    seeds: list[int]
    settings: ImpSettings

    def init_parser(self, **kwargs: Any) -> Any:
        """Lightning's parser, named ``lth imp``; its help follows :func:`imp_help`'s in ``lth imp --help``."""
        description = "Every option of lth imp: the config, Lightning's --trainer.*, --model.*, --data.* and the above."
        return super().init_parser(**{"prog": "lth imp", "description": description, **kwargs})

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        _add_study_arguments(parser)
        # still read (the configs set seed_everything: 0; study_seeds falls back to it) but not offered: --seeds
        parser._option_string_actions["--seed_everything"].help = argparse.SUPPRESS

    def before_instantiate_classes(self) -> None:
        self.seeds = study_seeds(self.config)  # a bad --seeds fails here, before anything is built
        self.settings = ImpSettings(**self.config.imp.as_dict())
        self.settings.chain_conditions()  # conditions and levels, before anything runs
        super().before_instantiate_classes()
        if self.config.seeds is not None:
            apply_seed(self.config, self.seeds[0])  # model and data of the first seed

    def build_components(self) -> None:
        # lth imp logs each level to its own MLflow run; the config's logger only names the store and experiment
        # (imp_study reads it), so it is not built: MLflow's client would create the store before the checks.
        logger, self.config.trainer.logger = self.config.trainer.logger, False
        try:
            super().build_components()
        finally:
            self.config.trainer.logger = logger

    def check_instantiated(self) -> None:
        check_imp_settings(self)


def check_imp_settings(cli: ImpCLI) -> None:
    """The ``--imp.*`` checks that need the instantiated model, data and trainer: ``modules`` names sub-modules
    with prunable layers, ``branch_from`` is a stored chain, and a late ``rewind`` falls within the first fit."""
    settings = cli.settings
    if settings.modules is not None:
        check_modules(cli.model, settings.modules)
    logger = cli.config.trainer.logger
    if settings.branch_from and str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        from lth.chain_store import ChainStore

        try:
            ChainStore.of_run(logger.init_args.tracking_uri, settings.branch_from)
        except ConfigError as exc:
            raise ConfigError(f"imp.branch_from: {exc}") from exc
    if settings.rewind != "init":
        steps = fit_optimizer_steps(cli.model, cli.datamodule, cli.trainer)
        if steps is not None and settings.rewind > steps:
            raise ConfigError(
                f"imp.rewind must be 'init' or an integer in [0, {steps}] (the optimizer steps of the first fit), "
                f"got {settings.rewind}: raise data total_frames or rewind earlier"
            )


def check_modules(model: Any, modules: Sequence[str]) -> None:
    """Each ``--imp.modules`` pattern must select a Linear/Conv layer of ``model`` (as the pruning callback does)."""
    import fnmatch

    from lth.callbacks.pruning import PRUNABLE_TYPES

    layers = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    names = list(getattr(model, "network_names", ())) or sorted({n.split(".")[0] for n in layers})
    for pattern in modules:
        if not any(n == pattern or n.startswith(pattern + ".") or fnmatch.fnmatchcase(n, pattern) for n in layers):
            raise ConfigError(f"imp.modules: {pattern!r} selects no prunable layer of {type(model).__name__}; "
                              f"valid: sub-modules {names} (or layer names / glob patterns)")


def fit_optimizer_steps(model: Any, datamodule: Any, trainer: Any) -> int | None:
    """How many optimizer steps one fit of ``model`` on ``datamodule`` makes, or ``None`` if it is not known.

    A fit is the datamodule's ``total_updates`` or ``batches`` training batches of ``frames_per_batch`` frames,
    each making :meth:`AgentModule.optimizer_steps_per_batch` steps; the trainer's ``limit_train_batches``,
    ``max_epochs`` and ``max_steps`` apply.
    """
    batches = getattr(datamodule, "total_updates", None) or getattr(datamodule, "batches", None)
    frames = getattr(datamodule, "frames_per_batch", None)
    if not isinstance(batches, int) or not isinstance(frames, int) or not isinstance(model, AgentModule):
        return None
    per_batch = model.optimizer_steps_per_batch(frames)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    epochs = trainer.max_epochs
    if epochs is None or epochs < 0:
        return None if trainer.max_steps is None or trainer.max_steps < 0 else trainer.max_steps
    steps = batches * per_batch * max(epochs, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps is not None and trainer.max_steps >= 0 else steps


class TransferCLI(LthCLI):
    """The fit CLI for one transfer fit: ``--transfer.*`` picks the ticket and the arm, ``--seed`` the seed.

    The ticket arm's env (training and evaluation) shows only the inputs the ticket kept; the run goes to
    ``<experiment>/transfer`` with tags naming the ticket, level, arm and seed.
    """

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(TransferSettings, "transfer")
        _add_seed_argument(parser)

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        apply_seed(self.config)
        configure_fit(self.config, mlflow_logger(self.config, "transfer").init_args)


def build_cli(args: list[str] | None = None, run: bool = True, cli_class: type[LthCLI] = LthCLI,
              exit_on_error: bool = True) -> LthCLI:
    """The configured CLI (``run=False`` parses and instantiates without running a subcommand).

    A bad argument prints the usage and exits with code 2, or, with ``exit_on_error=False``, raises
    :class:`argparse.ArgumentError`.
    """
    return cli_class(
        AgentModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToMLflow,
        trainer_defaults={"max_epochs": 1, "num_sanity_val_steps": 0},
        args=args,
        run=run,
        auto_configure_optimizers=False,
        parser_kwargs={"exit_on_error": exit_on_error},
    )


def parse(config_args: Sequence[str], cli_class: type[LthCLI], exit_on_error: bool = False,
          run: bool = False) -> LthCLI:
    """Parse ``config_args`` with ``cli_class`` and instantiate model, data and trainer (``run``: and run its
    subcommand).

    Every bad value, its type and domain included (the constructors' annotations, ``--imp.*``), raises one
    :class:`ConfigError` whose message is one line naming the option and its valid values, before anything
    runs. ``exit_on_error=True`` lets jsonargparse print its usage and exit instead.
    """
    check_config_files(config_args)
    _LIGHTNING_INFO.quiet()
    try:
        with warnings.catch_warnings():  # the arguments are ours, not the process's command line
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return build_cli(list(config_args), run=run, cli_class=cli_class, exit_on_error=exit_on_error)
    except argparse.ArgumentError as exc:
        raise ConfigError(one_line(str(exc), _parser_of(cli_class), config_args)) from exc
    except Exception as exc:
        problem = behind(exc, ConfigError)
        if problem is None or problem is exc:
            raise
        raise ConfigError(str(problem)) from exc  # the problem itself, not jsonargparse's wrapper
    finally:
        _LIGHTNING_INFO.restore()


def _parser_of(cli_class: type[LthCLI]) -> Any:
    """A parser of ``cli_class``'s own options (``--imp.*``, ``--seeds``, ``--population``, ``--transfer.*``,
    ``--seed``), to describe their types."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImpSettings, "imp")
    if issubclass(cli_class, ImpCLI):
        _add_study_arguments(parser)
    if issubclass(cli_class, TransferCLI):
        parser.add_class_arguments(TransferSettings, "transfer")
        _add_seed_argument(parser)
    return parser
