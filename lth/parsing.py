"""From command-line arguments to objects: the LightningCLI classes of every ``lth`` command, and :func:`parse`.

:mod:`lth.runner` parses through :func:`parse` and runs; :mod:`lth.cli` (the ``lth`` command) only maps
arguments to those calls and prints. Configuration problems raise :class:`lth.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionYesNo, Namespace
from lightning.pytorch import LightningDataModule, seed_everything
from lightning.pytorch.cli import LightningCLI

from lth.errors import ConfigError
from lth.experts import ExportExpert
from lth.imp import ImpSettings
from lth.modules import AgentModule
from lth.tracking import DEFAULT_TRACKING_URI, SaveConfigToMLflow, check_tracking_uri, resolve_tracking_uri
from lth.transfer import TransferSettings, configure_fit


def apply_seed(config: Namespace) -> None:
    """``--seed s`` sets the trainer's and the data's seed before the model is instantiated from it."""
    if config.seed is not None:
        config.seed_everything = config.seed
        config.data.init_args.seed = config.seed
        seed_everything(config.seed)


def mlflow_logger(config: Namespace, command: str) -> Namespace:
    """The config's MLFlowLogger spec (tracking URI resolved), or a clear error: ``command`` logs to MLflow."""
    logger = config.trainer.logger
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        raise ConfigError(
            f"lth {command} records its runs in MLflow: set trainer.logger to lightning.pytorch.loggers.MLFlowLogger"
        )
    logger.init_args.tracking_uri = resolve_tracking_uri(logger.init_args.tracking_uri or DEFAULT_TRACKING_URI)
    return logger


def config_error(exc: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``exc``, if any (jsonargparse wraps errors raised while instantiating)."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class LthCLI(LightningCLI):
    """LightningCLI with the env id and kwargs shared by data and model and evaluation scheduled in env frames."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.init_args.env_id", "model.init_args.env_id")
        parser.link_arguments("data.init_args.env_kwargs", "model.init_args.env_kwargs")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        for spec in logger if isinstance(logger, list) else [logger]:
            uri = getattr(spec, "init_args", {}).get("tracking_uri") if spec is not None else None
            if uri:
                spec.init_args.tracking_uri = resolve_tracking_uri(uri)
                check_tracking_uri(spec.init_args.tracking_uri)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        interval = getattr(self.datamodule, "eval_interval", None)
        if interval is not None:
            trainer.val_check_interval = interval  # datamodules schedule evaluation in env frames
        return trainer


class ExpertCLI(LthCLI):
    """``lth fit`` that stores the best checkpoint as an expert for distillation (see :class:`ExportExpert`)."""

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


class ImpCLI(LthCLI):
    """The fit CLI plus ``--imp.*`` study options, ``--seed`` (the study seed) and ``--resume``."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(ImpSettings, "imp")
        _add_seed_argument(parser)
        parser.add_argument(
            "--resume",
            action=ActionYesNo,
            default=True,
            help="continue the newest chain with the same tags at its first unfinished level",
        )

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        apply_seed(self.config)


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


def parse(config_args: Sequence[str], cli_class: type[LthCLI], exit_on_error: bool = False) -> LthCLI:
    """Parse ``config_args`` with ``cli_class`` and instantiate model, data and trainer, without running them."""
    try:
        with warnings.catch_warnings():  # the arguments are ours, not the process's command line
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return build_cli(list(config_args), run=False, cli_class=cli_class, exit_on_error=exit_on_error)
    except argparse.ArgumentError as exc:
        raise ConfigError(str(exc)) from exc
    except Exception as exc:
        problem = config_error(exc)
        if problem is None or problem is exc:
            raise
        raise ConfigError(str(problem)) from exc  # the problem itself, not jsonargparse's wrapper
