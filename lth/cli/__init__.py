"""The ``lth`` command: Lightning's CLI for single fits and IMP studies, with MLflow as the default store.

``lth fit --config configs/cartpole/ppo.yaml`` trains one agent; ``lth expert --config ...`` trains one and
stores it as a distillation expert; ``lth imp --config ... --imp.levels 20 --imp.conditions all --seeds 3``
runs IMP chains; ``lth report --experiment NAME`` draws a study's figures from MLflow; ``lth transfer
--config ... --ticket RUN --level K`` trains dense agents on a ticket's surviving inputs; ``lth ui`` starts the
MLflow UI on the store. Configuration problems end with one line naming the problem and the valid choices (exit
code 2) instead of a traceback. ``lth --help`` lists the subcommands; ``--verbose`` shows Lightning's info lines.

This module only maps arguments to library calls and prints: configs are parsed by :mod:`lth.cli.parsing`,
studies and transfers run in :mod:`lth.cli.runner` (``run_imp``, ``run_transfer``), reports in :mod:`lth.report.chains`.
It imports those (and so Lightning, TorchRL, MLflow and torch) only inside the subcommands, so that
``lth --help`` answers at once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from lth.console import VERBOSE_HELP, quiet
from lth.errors import ConfigError, LthError, behind

#: What ``--tracking_uri`` of ``lth ui`` and ``lth report`` defaults to (:func:`lth.store.tracking.default_tracking_uri`).
STORE_HELP = "the MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db; now %(default)s)"

#: The port ``lth ui`` serves on unless given ``--port`` (MLflow's own default).
DEFAULT_UI_PORT = 5000

#: Every subcommand with its line in ``lth --help``.
SUBCOMMANDS = {
    "fit": "train one agent (Lightning's fit), logged to MLflow",
    "validate": "evaluate one agent with greedy episodes (Lightning's validate)",
    "imp": "run or resume IMP chains (lottery tickets), one per condition and seed, and print their best returns",
    "report": "draw a study's figures and summary from its MLflow records",
    "transfer": "train dense agents on all inputs and on the inputs a ticket kept",
    "expert": "train one agent and store its best checkpoint as a distillation expert",
    "server": "serve an MLflow tracking store for a cluster: PostgreSQL (or --backend-store-uri), proxied artifacts",
    "ui": "start the MLflow UI on the store (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db in this folder)",
}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are :class:`ConfigError` (one ``lth: error:`` line, exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")


def top_help() -> str:
    """``lth --help``: every subcommand in one line, without loading Lightning (the subcommands' help does)."""
    parser = _Parser(
        prog="lth",
        description="Lottery tickets in deep reinforcement learning, on Lightning, TorchRL and MLflow.",
        epilog="lth SUBCOMMAND --help describes a subcommand's options, e.g. lth imp --help.",
    )
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    for name, line in SUBCOMMANDS.items():
        subcommands.add_parser(name, help=line)
    return parser.format_help()


def study_url(tracking_uri: str, experiment: str, port: int = DEFAULT_UI_PORT) -> str:
    """The address, in the MLflow UI that ``lth ui --port PORT`` serves, of a study's saved chains view: its chain
    runs grouped by condition, with the conditions' charts (:mod:`lth.store.ui_views`)."""
    from mlflow import MlflowClient

    from lth.store.tracking import runs_url
    from lth.store.ui_views import CHAINS_VIEW

    found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    return runs_url(f"http://127.0.0.1:{port}", found.experiment_id, CHAINS_VIEW)


def imp(args: list[str]) -> None:
    """``lth imp``: run or resume the IMP chains a config and ``--imp.*`` describe, then print a summary."""
    from lth.cli.parsing import parse
    from lth.cli.runner import run_imp
    from lth.cli.study_cli import ImpCLI, imp_help
    from lth.report.notes import summary_table
    from lth.store.tracking import default_tracking_uri, resolve_tracking_uri

    if "-h" in args or "--help" in args:
        print(imp_help(), flush=True)  # lth's options first; Lightning's help follows and exits
        parse(args, ImpCLI)
    run = run_imp(args)
    print("\nBest evaluation return per level and condition:\n")
    print(summary_table(run.results))
    ui_command = "lth ui" if run.tracking_uri == resolve_tracking_uri(default_tracking_uri()) else \
        f"lth ui --tracking_uri {run.tracking_uri}"
    print(f"\nCompare the chains in the MLflow UI (start it with: {ui_command}):")
    print(f"  {study_url(run.tracking_uri, run.experiment)}")


def transfer(args: list[str]) -> None:
    """``lth transfer --config CFG --ticket RUN --level K``: dense agents on all inputs and on the ticket's."""
    from lth.cli.runner import run_transfer
    from lth.cli.seeds import SEEDS_FORMS, parse_seeds

    parser = _Parser(
        prog="lth transfer", description=transfer.__doc__,
        epilog="Every other argument (--config, overrides such as --data.init_args.total_frames) configures the fits.",
    )
    parser.add_argument("--ticket", required=True, help="parent run id of the IMP chain whose input mask to use")
    parser.add_argument("--level", type=int, required=True, help="the chain level whose masks to transfer")
    parser.add_argument("--seeds", nargs="+", default=["0-2"],
                        help=f"one fit per arm and seed: {SEEDS_FORMS}, as lth imp takes them (default: 0-2)")
    parser.add_argument("--modules", nargs="+", default=None,
                        help="input layers of these sub-modules only: [actor,critic] as --imp.modules takes them, "
                             "or names")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: reports/transfer_...)")
    ns, rest = parser.parse_known_args(args)
    seeds = parse_seeds(",".join(ns.seeds))  # "0-4", "0,1,7" (and "0 1 7") alike
    modules = [m.strip(" []'\"") for part in ns.modules for m in part.split(",")] if ns.modules else None
    run = run_transfer(rest, ns.ticket, ns.level, seeds, [m for m in modules if m] if modules else None, ns.out)
    print(f"wrote {run.summary} and its figure; runs in MLflow experiment {run.experiment!r}")


def report(args: list[str]) -> None:
    """``lth report --experiment NAME [--experiment NAME ...]``: figures and a summary from MLflow."""
    from lth.store.tracking import default_tracking_uri, resolve_tracking_uri

    parser = _Parser(prog="lth report", description=report.__doc__)
    parser.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeatable)")
    parser.add_argument("--tracking_uri", default=default_tracking_uri(), help=STORE_HELP)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<experiment>)")
    parser.add_argument("--no_mlflow", action="store_true", help="do not log the report back to MLflow")
    ns = parser.parse_args(args)
    from lth.report.chains import run_report

    out = ns.out or Path("reports") / ns.experiment[0].replace("/", "_")
    summary = run_report(ns.experiment, resolve_tracking_uri(ns.tracking_uri), out, log_to_mlflow=not ns.no_mlflow)
    print(f"wrote {summary} and its figures")


def ui(args: list[str]) -> None:
    """``lth ui [--tracking_uri URI] [--port 5000]``: the MLflow UI on the store, run by this Python (MLflow's
    ``mlflow`` command need not be on PATH), until Ctrl-C."""
    from lth.store.tracking import check_tracking_uri, default_tracking_uri, resolve_tracking_uri

    parser = _Parser(prog="lth ui", description=ui.__doc__)
    parser.add_argument("--tracking_uri", default=default_tracking_uri(), help=STORE_HELP)
    parser.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help="the port to serve on (default: %(default)s)")
    ns = parser.parse_args(args)
    uri = resolve_tracking_uri(ns.tracking_uri)
    # Opened (and, if new, created) here under the store's lock, as lth imp does: MLflow's server would migrate a new
    # sqlite store without it and die when an lth imp started beside it migrates the same file.
    check_tracking_uri(uri, write=False)
    print(f"MLflow UI of {uri} at http://127.0.0.1:{ns.port} (Ctrl-C stops it)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--port", str(ns.port)]
    try:
        code = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:  # the server got the Ctrl-C as well and stopped
        return
    if code:
        raise SystemExit(code)


def _run(command: str, args: list[str]) -> None:
    """Run one subcommand (``lth`` without ``--verbose`` and the subcommand's name is ``[command, *args]``)."""
    if command == "ui":
        ui(args)
        return
    if command == "report":
        report(args)
        return
    if command == "server":
        from lth.store.server import main as serve

        code = serve(args, prog="lth server", parser_class=_Parser)
        if code:
            raise SystemExit(code)
        return
    if command not in SUBCOMMANDS and not command.startswith("-"):  # "-c CFG fit": Lightning's top-level options
        raise ConfigError(f"unknown subcommand {command!r}; valid: {', '.join(SUBCOMMANDS)} (see lth --help)")
    from lth.cli.parsing import ExpertCLI, LthCLI, parse
    from lth.cli.runner import configure_process

    configure_process()  # $LTH_NUM_THREADS torch threads, default 1
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # main passes argv itself
    if command == "imp":
        imp(args)
    elif command == "transfer":
        transfer(args)
    elif command == "expert":
        parse(["fit", *args], ExpertCLI, run=True)
    else:
        parse([command, *args], LthCLI, run=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``lth [--verbose] SUBCOMMAND ...``; bare ``lth``, ``-h`` or ``--help`` list them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv
    argv = [arg for arg in argv if arg != "--verbose"]  # not an option of the LightningCLI parsers
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help(), end="")
        return
    quiet(verbose)
    try:
        _run(argv[0], argv[1:])
    except KeyboardInterrupt:  # Ctrl-C outside a fit (Lightning handles it inside one): no traceback
        print("lth: interrupted; the same command resumes where this one stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        problem = behind(exc, LthError)
        if problem is None:
            raise
        print(f"lth: error: {problem}", file=sys.stderr)
        raise SystemExit(problem.exit_code) from None


_PARSING_NAMES = {"ExpertCLI": "lth.cli.parsing", "LthCLI": "lth.cli.parsing", "build_cli": "lth.cli.parsing",
                  "ImpCLI": "lth.cli.study_cli", "TransferCLI": "lth.cli.study_cli"}


def __getattr__(name: str) -> Any:
    """The CLI classes and :func:`build_cli`, re-exported from :mod:`lth.cli.parsing` and :mod:`lth.cli.study_cli` when
    first asked for (lazily: importing this module must not load Lightning)."""
    if name in _PARSING_NAMES:
        import importlib

        return getattr(importlib.import_module(_PARSING_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_PARSING_NAMES, "DEFAULT_UI_PORT", "SUBCOMMANDS", "imp", "main", "report", "study_url", "top_help",
           "transfer", "ui"]
