"""From command-line arguments to objects: the LightningCLI base of every ``lth`` command (the study commands'
are in :mod:`lth.cli.study_cli`), ``lth expert``'s, and :func:`parse`.

:mod:`lth.cli.runner` parses through :func:`parse` and runs; :mod:`lth.cli` (the ``lth`` command) only maps
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
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from lth.cli.bad_input import check_config_files, one_line
from lth.errors import ConfigError, behind
from lth.modules import AgentModule
from lth.store.experts import EXPERT_ARTIFACT
from lth.store.tracking import check_tracking_uri, default_tracking_uri, mark_model_training, resolve_tracking_uri
from lth.study.settings import ImpSettings


def mlflow_logger(config: Namespace, command: str) -> Namespace:
    """The config's MLFlowLogger spec (tracking URI resolved), or a clear error: ``command`` logs to MLflow."""
    logger = config.trainer.logger
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        raise ConfigError(
            f"lth {command} records its runs in MLflow: set trainer.logger to lightning.pytorch.loggers.MLFlowLogger"
        )
    logger.init_args.tracking_uri = resolve_tracking_uri(logger.init_args.tracking_uri or default_tracking_uri())
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

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's ``fit`` and ``validate``: lth's agents have no test or predict step (evaluation is validation:
        greedy episodes), so ``lth test`` and ``lth predict`` do not exist rather than crash."""
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.init_args.env_id", "model.init_args.env_id")
        parser.link_arguments("data.init_args.env_kwargs", "model.init_args.env_kwargs")
        # A config is one paper experiment, pruning included (configs/cartpole/ppo.yaml prunes the actor only, as
        # the paper's AP): every command reads and checks its imp: section, only lth imp acts on it.
        parser.add_class_arguments(ImpSettings, "imp")
        self.add_own_arguments(parser)

    @classmethod
    def add_own_arguments(cls, parser: Any) -> None:
        """The command's options beyond Lightning's and ``--imp.*`` (none here); bad values of them are described
        from these (:func:`_parser_of`)."""

    stores: list[str]  # the tracking URIs the command writes to
    #: The parsed config as given (before a subcommand makes it one fit), without its config file paths: data from
    #: which another process or fit rebuilds the command (:func:`parse` takes it), no file or argument needed.
    spec: Namespace

    def before_instantiate_classes(self) -> None:
        """Keep the :attr:`spec`; resolve and check the MLflow loggers' tracking URIs (a missing local store only for whether it can be made):
        the one a config or argument names, else MLflow's rule (:func:`lth.store.tracking.default_tracking_uri`)."""
        self.spec = self.config.clone()
        self.spec.pop("config", None)
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        self.stores = []
        for spec in logger if isinstance(logger, list) else [logger]:
            if spec is None or not str(getattr(spec, "class_path", "")).endswith("MLFlowLogger"):
                continue
            spec.init_args.tracking_uri = resolve_tracking_uri(spec.init_args.get("tracking_uri")
                                                               or default_tracking_uri())
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


def build_cli(args: list[str] | Namespace | None = None, run: bool = True, cli_class: type[LthCLI] = LthCLI,
              exit_on_error: bool = True) -> LthCLI:
    """The configured CLI (``run=False`` parses and instantiates without running a subcommand); ``args`` command-line
    style, or an already parsed config (a jsonargparse ``Namespace``, checked again as data).

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


def parse(config_args: Sequence[str] | Namespace, cli_class: type[LthCLI], exit_on_error: bool = False,
          run: bool = False) -> LthCLI:
    """Parse ``config_args`` (or take a parsed config, e.g. one arm of a transfer, as data) with ``cli_class`` and
    instantiate model, data and trainer (``run``: and run its subcommand).

    Every bad value, its type and domain included (the constructors' annotations, ``--imp.*``), raises one
    :class:`ConfigError` whose message is one line naming the option and its valid values, before anything
    runs. ``exit_on_error=True`` lets jsonargparse print its usage and exit instead.
    """
    parsed = isinstance(config_args, Namespace)
    if not parsed:
        check_config_files(config_args)
    _LIGHTNING_INFO.quiet()
    try:
        with warnings.catch_warnings():  # the arguments are ours, not the process's command line
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            args = config_args if parsed else list(config_args)
            return build_cli(args, run=run, cli_class=cli_class, exit_on_error=exit_on_error)
    except argparse.ArgumentError as exc:
        raise ConfigError(one_line(str(exc), _parser_of(cli_class), [] if parsed else config_args)) from exc
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
    cli_class.add_own_arguments(parser)
    return parser


class ExportExpert(Callback):
    """After a fit, stores the best checkpoint as the run's ``expert.ckpt`` and its score as ``expert/return``.

    ``lth expert`` adds it to ``lth fit``; a student config then names the expert by that MLflow run id.
    """

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or not checkpoint.best_model_path:
            raise ConfigError("lth expert needs a ModelCheckpoint monitoring eval/return in trainer.callbacks")
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                with tempfile.TemporaryDirectory() as folder:
                    target = Path(folder) / EXPERT_ARTIFACT
                    target.write_bytes(Path(checkpoint.best_model_path).read_bytes())
                    logger.experiment.log_artifact(logger.run_id, str(target))
                logger.experiment.log_metric(logger.run_id, "expert/return", float(checkpoint.best_model_score))
                logger.experiment.set_tag(logger.run_id, "lth.role", "expert")
                print(f"expert stored: run id {logger.run_id} (best eval return {checkpoint.best_model_score:.1f})")
