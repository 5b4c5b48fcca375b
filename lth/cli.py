"""The ``lth`` command: Lightning's CLI for single fits and IMP studies, with MLflow as the default store.

``lth fit --config configs/cartpole/ppo.yaml`` trains one agent; ``lth expert --config ...`` trains one and
stores it as a distillation expert; ``lth imp --config ... --imp.levels 20 --imp.conditions all --seed 3``
runs IMP chains; ``lth report --experiment NAME`` draws a study's figures from MLflow; ``lth transfer
--config ... --ticket RUN --level K`` trains dense agents on a ticket's surviving inputs. Configuration
problems end with one line naming the problem and the valid choices (exit code 2) instead of a traceback.

This module only maps arguments to library calls and prints: configs are parsed by :mod:`lth.parsing`,
studies and transfers run in :mod:`lth.runner` (``run_imp``, ``run_transfer``), reports in :mod:`lth.report`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from lth.errors import ConfigError
from lth.imp import summary_table
from lth.parsing import ExpertCLI, ImpCLI, LthCLI, TransferCLI, build_cli, config_error, parse
from lth.runner import configure_process, run_imp, run_transfer
from lth.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are :class:`ConfigError` (one ``lth: error:`` line, exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def imp(args: list[str]) -> None:
    """``lth imp``: run or resume the IMP chains a config and ``--imp.*`` describe, then print a summary."""
    run = run_imp(args)
    print("\nBest evaluation return per level and condition:\n")
    print(summary_table(run.results))
    print(f"\nCompare the chains in the MLflow UI:  mlflow ui --backend-store-uri {run.tracking_uri}")


def transfer(args: list[str]) -> None:
    """``lth transfer --config CFG --ticket RUN --level K``: dense agents on all inputs and on the ticket's."""
    parser = _Parser(
        prog="lth transfer", description=transfer.__doc__,
        epilog="Every other argument (--config, overrides such as --data.init_args.total_frames) configures the fits.",
    )
    parser.add_argument("--ticket", required=True, help="parent run id of the IMP chain whose input mask to use")
    parser.add_argument("--level", type=int, required=True, help="the chain level whose masks to transfer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one fit per arm and seed")
    parser.add_argument("--modules", nargs="+", default=None, help="input layers of these sub-modules only")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: reports/transfer_...)")
    ns, rest = parser.parse_known_args(args)
    run = run_transfer(rest, ns.ticket, ns.level, ns.seeds, ns.modules, ns.out)
    print(f"wrote {run.summary} and its figure; runs in MLflow experiment {run.experiment!r}")


def report(args: list[str]) -> None:
    """``lth report --experiment NAME [--experiment NAME ...]``: figures and a summary from MLflow."""
    from lth.report import run_report

    parser = _Parser(prog="lth report", description=report.__doc__)
    parser.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeatable)")
    parser.add_argument("--tracking_uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<experiment>)")
    parser.add_argument("--no_mlflow", action="store_true", help="do not log the report back to MLflow")
    ns = parser.parse_args(args)
    out = ns.out or Path("reports") / ns.experiment[0].replace("/", "_")
    summary = run_report(ns.experiment, resolve_tracking_uri(ns.tracking_uri), out, log_to_mlflow=not ns.no_mlflow)
    print(f"wrote {summary} and its figures")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    configure_process()  # $LTH_NUM_THREADS torch threads, default 1
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # main passes argv itself
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["imp"]:
            imp(argv[1:])
        elif argv[:1] == ["report"]:
            report(argv[1:])
        elif argv[:1] == ["transfer"]:
            transfer(argv[1:])
        elif argv[:1] == ["expert"]:
            parse(["fit", *argv[1:]], ExpertCLI, run=True)
        else:
            parse(argv, LthCLI, run=True)
    except KeyboardInterrupt:  # Ctrl-C outside a fit (Lightning handles it inside one): no traceback
        print("lth: interrupted; the same command resumes where this one stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        problem = config_error(exc)
        if problem is None:
            raise
        print(f"lth: error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["ExpertCLI", "ImpCLI", "LthCLI", "TransferCLI", "build_cli", "imp", "main", "report", "transfer"]
