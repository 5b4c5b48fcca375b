"""The CLIs of studies: ``lth imp`` (:class:`ImpCLI`: ``--imp.*``, ``--seeds``, ``--population``, ``--resume``,
``--executor``) with the checks that need the built objects, and ``lth transfer``'s fits (:class:`TransferCLI`)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionYesNo
from jsonargparse.typing import PositiveInt

from lth.cli.parsing import LthCLI, mlflow_logger
from lth.cli.seeds import apply_seed, study_seeds
from lth.console import VERBOSE_HELP
from lth.errors import ConfigError
from lth.modules import AgentModule
from lth.study.settings import ImpSettings
from lth.study.transfer import TransferSettings, configure_fit


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
                      "Conditions (--imp.conditions NAME, [NAME,NAME], NAME,NAME or all = the paper's four, *):",
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

    @classmethod
    def add_own_arguments(cls, parser: Any) -> None:
        _add_study_arguments(parser)

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        # still read (the configs set seed_everything: 0; study_seeds falls back to it) but not offered: --seeds
        parser._option_string_actions["--seed_everything"].help = argparse.SUPPRESS

    def before_instantiate_classes(self) -> None:
        self.seeds = study_seeds(self.config)  # a bad --seeds fails here, before anything is built
        self.settings = ImpSettings(**self.config.imp.as_dict())
        self.settings.chain_conditions()  # conditions and levels, before anything runs
        if self.settings.condition is not None:
            print("lth: warning: --imp.condition is deprecated: --imp.conditions NAME says the same", file=sys.stderr)
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
        from lth.store.chain_store import ChainStore

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
    from lth.callbacks.layers import PRUNABLE_TYPES, selects

    layers = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    names = list(getattr(model, "network_names", ())) or sorted({n.split(".")[0] for n in layers})
    for pattern in modules:
        if not any(selects(n, [pattern]) for n in layers):
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

    @classmethod
    def add_own_arguments(cls, parser: Any) -> None:
        parser.add_class_arguments(TransferSettings, "transfer")
        _add_seed_argument(parser)

    def before_instantiate_classes(self) -> None:
        # the spec (LthCLI's) is the config before it is made one arm's fit of one seed: run_transfer makes the
        # transfer's other fits from it as data
        super().before_instantiate_classes()
        apply_seed(self.config)
        configure_fit(self.config, mlflow_logger(self.config, "transfer").init_args)
