"""The ``lth`` command: Lightning's CLI for single fits and IMP studies, with MLflow as the default store.

``lth fit --config configs/cartpole/ppo.yaml`` trains one agent; ``lth expert --config ...`` trains one and
stores it as a distillation expert; ``lth imp --config ... --imp.levels 20 --imp.conditions all --seed 3``
runs IMP chains; ``lth report --experiment NAME`` draws a study's figures from MLflow; ``lth transfer
--config ... --ticket RUN --level K`` trains dense agents on a ticket's surviving inputs. Configuration
problems end with one line naming the problem and the valid choices (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

import torch
from jsonargparse import ActionYesNo
from lightning.pytorch import LightningDataModule, seed_everything
from lightning.pytorch.cli import LightningCLI

from lth.errors import ConfigError
from lth.experts import ExportExpert
from lth.imp import ImpSettings, Study, run_study, summary_table
from lth.modules import AgentModule
from lth.tracking import DEFAULT_TRACKING_URI, SaveConfigToMLflow, check_tracking_uri, resolve_tracking_uri
from lth.transfer import (
    ARMS,
    TransferSettings,
    describe_inputs,
    finished_fit,
    ticket_inputs,
    transfer_experiment,
    transfer_report,
    transfer_tags,
)


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


def _apply_seed(config: Any) -> None:
    """``--seed s`` sets the trainer's and the data's seed before the model is instantiated from it."""
    if config.seed is not None:
        config.seed_everything = config.seed
        config.data.init_args.seed = config.seed
        seed_everything(config.seed)


def _mlflow_logger(config: Any, command: str) -> Any:
    """The config's MLFlowLogger spec, or a clear error: ``command`` records its runs in MLflow."""
    logger = config.trainer.logger
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("MLFlowLogger"):
        raise ConfigError(
            f"lth {command} records its runs in MLflow: set trainer.logger to lightning.pytorch.loggers.MLFlowLogger"
        )
    logger.init_args.tracking_uri = resolve_tracking_uri(logger.init_args.tracking_uri or DEFAULT_TRACKING_URI)
    return logger


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
        _apply_seed(self.config)


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
        _apply_seed(self.config)
        config = self.config
        settings = TransferSettings(**config.transfer.as_dict())
        if settings.arm not in ARMS:
            raise ConfigError(f"transfer.arm must be one of {list(ARMS)}, got {settings.arm!r}")
        logger = _mlflow_logger(config, "transfer")
        tags = transfer_tags(settings, config.seed_everything)
        if settings.arm == "ticket":
            keep = ticket_inputs(logger.init_args.tracking_uri, settings)
            env_kwargs = {**(config.data.init_args.env_kwargs or {}), "keep_inputs": keep}
            config.data.init_args.env_kwargs = env_kwargs
            config.model.init_args.env_kwargs = env_kwargs
            tags["kept_inputs"] = describe_inputs(config.data.init_args.env_id, keep, env_kwargs)
        logger.init_args.experiment_name = transfer_experiment(logger.init_args.experiment_name)
        logger.init_args.run_name = f"{settings.arm} inputs, seed {config.seed_everything}"
        logger.init_args.tags = {**(logger.init_args.tags or {}), **tags}


def build_cli(args: list[str] | None = None, run: bool = True, cli_class: type[LthCLI] = LthCLI) -> LthCLI:
    """The configured CLI (``run=False`` parses and instantiates without running a subcommand)."""
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
    )


def imp(args: list[str]) -> None:
    """``lth imp``: run or resume the IMP chains a config and ``--imp.*`` describe, then print a summary."""
    cli = build_cli(args, run=False, cli_class=ImpCLI)
    config = cli.config
    logger = _mlflow_logger(config, "imp")
    uri = logger.init_args.tracking_uri
    trainer_kwargs = {
        k: v for k, v in config.trainer.as_dict().items() if k not in ("logger", "callbacks", "enable_checkpointing")
    }
    study = Study(
        model=cli.model,
        datamodule=cli.datamodule,
        trainer_kwargs=trainer_kwargs,
        tracking_uri=uri,
        experiment=logger.init_args.experiment_name,
        seed=config.seed_everything,
        tags={"env": config.data.init_args.env_id, "algo": type(cli.model).__name__.lower()},
    )
    results = run_study(study, ImpSettings(**config.imp.as_dict()), resume=config.resume)
    print("\nBest evaluation return per level and condition:\n")
    print(summary_table(results))
    print(f"\nCompare the chains in the MLflow UI:  mlflow ui --backend-store-uri {uri}")


def transfer(args: list[str]) -> None:
    """``lth transfer --config CFG --ticket RUN --level K``: dense agents on all inputs and on the ticket's."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="lth transfer", description=transfer.__doc__,
        epilog="Every other argument (--config, overrides such as --data.init_args.total_frames) configures the fits.",
    )
    parser.add_argument("--ticket", required=True, help="parent run id of the IMP chain whose input mask to use")
    parser.add_argument("--level", type=int, required=True, help="the chain level whose masks to transfer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one fit per arm and seed")
    parser.add_argument("--modules", nargs="+", default=None, help="input layers of these sub-modules only")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: reports/transfer_...)")
    ns, rest = parser.parse_known_args(args)
    common = [*rest, "--transfer.ticket", ns.ticket, "--transfer.level", str(ns.level)]
    if ns.modules:
        common += ["--transfer.modules", json.dumps(ns.modules)]
    for seed in ns.seeds:
        for arm in ARMS:
            cli = build_cli([*common, "--transfer.arm", arm, "--seed", str(seed)], run=False, cli_class=TransferCLI)
            logger = cli.config.trainer.logger.init_args
            uri, experiment = logger.tracking_uri, logger.experiment_name
            tags = {k: v for k, v in logger.tags.items() if k != "kept_inputs"}
            if finished_fit(uri, experiment, tags):
                print(f"[transfer seed {seed}] {arm} inputs: already finished, skipped", flush=True)
                continue
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            print(f"[transfer seed {seed}] {arm} inputs ({logger.tags.get('kept_inputs', 'all')}): "
                  f"best return {cli.model.best_return:.1f}", flush=True)
    out = ns.out or Path("reports") / f"transfer_{ns.ticket[:8]}_level{ns.level}"
    summary = transfer_report(uri, experiment, TransferSettings(ns.ticket, ns.level, ns.modules), out)
    print(f"wrote {summary} and its figure; runs in MLflow experiment {experiment!r}")


def report(args: list[str]) -> None:
    """``lth report --experiment NAME [--experiment NAME ...]``: figures and a summary from MLflow."""
    import argparse
    from pathlib import Path

    from lth.report import run_report
    from lth.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

    parser = argparse.ArgumentParser(prog="lth report", description=report.__doc__)
    parser.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeatable)")
    parser.add_argument("--tracking_uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<experiment>)")
    parser.add_argument("--no_mlflow", action="store_true", help="do not log the report back to MLflow")
    ns = parser.parse_args(args)
    out = ns.out or Path("reports") / ns.experiment[0].replace("/", "_")
    summary = run_report(ns.experiment, resolve_tracking_uri(ns.tracking_uri), out, log_to_mlflow=not ns.no_mlflow)
    print(f"wrote {summary} and its figures")


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``exc``, if any (jsonargparse wraps errors raised while instantiating)."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def configure_process(threads: int = 1) -> None:
    """Process-wide torch settings for small RL networks on CPU (the ``lth`` command and the benchmarks).

    Torch runs single-threaded by default: the paper's small networks gain nothing from intra-op threads, which
    on two cores fight the environments for CPU (up to 10x slower). Lightning sets
    ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import (fork-safe CUDA probing), after which torch queries NVML on
    every optimizer step, ~75 us each without a GPU; lth never forks after touching CUDA, so it probes directly.
    TorchRL's INFO messages are silenced.
    """
    torch.set_num_threads(threads)
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # e.g. one INFO line per replay-buffer allocation


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    configure_process(int(os.environ.get("LTH_NUM_THREADS", "1")))
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # `lth imp` passes its own args
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.14, not ours to fix
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["imp"]:
            imp(argv[1:])
        elif argv[:1] == ["report"]:
            report(argv[1:])
        elif argv[:1] == ["transfer"]:
            transfer(argv[1:])
        elif argv[:1] == ["expert"]:
            build_cli(["fit", *argv[1:]], cli_class=ExpertCLI)
        else:
            build_cli(argv)
    except Exception as exc:
        problem = _config_error(exc)
        if problem is None:
            raise
        print(f"lth: error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["ExpertCLI", "ImpCLI", "LthCLI", "TransferCLI", "build_cli", "configure_process", "imp", "main", "transfer"]
