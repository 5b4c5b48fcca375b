"""The ``lth`` command: Lightning's CLI for single fits, with MLflow as the default store.

``lth fit --config configs/cartpole/ppo.yaml`` trains one agent. Configuration problems end with one
line naming the problem and the valid choices (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import MLFlowLogger

from lth.errors import ConfigError
from lth.modules import AgentModule
from lth.tracking import SaveConfigToMLflow, check_tracking_uri


class LthCLI(LightningCLI):
    """LightningCLI with the env id shared by data and model and evaluation scheduled in env frames."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.init_args.env_id", "model.init_args.env_id")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        logger = config.get("trainer", {}).get("logger")
        for spec in logger if isinstance(logger, list) else [logger]:
            uri = getattr(spec, "init_args", {}).get("tracking_uri") if spec is not None else None
            if uri:
                check_tracking_uri(uri)

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        interval = getattr(self.datamodule, "eval_interval", None)
        if interval is not None:
            trainer.val_check_interval = interval  # datamodules schedule evaluation in env frames
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> LthCLI:
    """The configured CLI (``run=False`` parses and instantiates without running a subcommand)."""
    return LthCLI(
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


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``exc``, if any (jsonargparse wraps errors raised while instantiating)."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        build_cli(argv)
    except Exception as exc:
        problem = _config_error(exc)
        if problem is None:
            raise
        print(f"lth: error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["LthCLI", "MLFlowLogger", "build_cli", "main"]
