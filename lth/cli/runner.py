"""Run IMP studies and input-mask transfers from config arguments: the library behind ``lth imp`` and ``lth transfer``.

``run_imp(["--config", "configs/cartpole/ppo.yaml", "--imp.levels", "5", "--seed", "3"])`` and
``run_transfer(["--config", ...], ticket=RUN_ID, level=8)`` take the arguments the commands take (parsed by
the same LightningCLI classes, :mod:`lth.cli.parsing`), run, and return what they did. The ``lth`` command and
``make results`` (``docs/make_results.py``) call them; the benchmarks share :func:`configure_process` with the
command. Configuration problems, bad arguments included, raise :class:`lth.errors.ConfigError` (the command
prints it as one line with exit code 2). Every value is checked before anything trains or any MLflow run exists.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from lth.cli.parsing import LthCLI, mlflow_logger, parse
from lth.cli.seeds import study_seeds
from lth.cli.study_cli import ImpCLI, TransferCLI
from lth.errors import ConfigError
from lth.report.transfer import transfer_report
from lth.store.chain_identity import study_description
from lth.store.tracking import tag_query
from lth.study.chains import Chain, LevelResult, Study
from lth.study.executors import make_executor
from lth.study.imp import run_population, run_study
from lth.study.transfer import ARMS, TransferSettings


def configure_process(threads: int | None = None) -> None:
    """Process-wide torch settings for small RL networks on CPU (the ``lth`` command and the benchmarks).

    Torch runs ``threads`` threads (default: ``$LTH_NUM_THREADS``, else ``$OMP_NUM_THREADS``, the convention torch
    and OpenMP follow, else 1): the paper's small networks gain nothing from intra-op threads, which on two cores
    fight the environments for CPU (up to 10x slower).
    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import (fork-safe CUDA probing), after which torch
    queries NVML on every optimizer step, ~75 us each without a GPU; lth never forks after touching CUDA, so it
    probes directly. TorchRL's INFO messages, Lightning's LeafSpec deprecation warnings and MLflow's progress bar
    for every small artifact a resume reads are silenced.
    """
    if threads is None:
        threads = int(os.environ.get("LTH_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1)
    torch.set_num_threads(threads)
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # e.g. one INFO line per replay-buffer allocation
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.14, not ours to fix


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The default of each of ``cls``'s constructor arguments that has one (what a chain's identity leaves out)."""
    return {name: p.default for name, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def imp_study(cli: LthCLI) -> Study:
    """The :class:`Study` of a parsed ``lth imp`` config: model, data, trainer options, MLflow store, seed, tags,
    and the plain description of the config that, with the ``--imp.*`` settings, identifies a chain."""
    config = cli.config
    logger = mlflow_logger(config, "imp")
    trainer_kwargs = {
        k: v for k, v in config.trainer.as_dict().items() if k not in ("logger", "callbacks", "enable_checkpointing")
    }
    return Study(
        model=cli.model,
        datamodule=cli.datamodule,
        trainer_kwargs=trainer_kwargs,
        tracking_uri=logger.init_args.tracking_uri,
        experiment=logger.init_args.experiment_name,
        seeds=study_seeds(config),
        tags={"env": config.data.init_args.env_id, "algo": type(cli.model).__name__.lower()},
        description=study_description(config),
        population=config.population,
        config_yaml=cli.parser.dump(config, skip_none=False),
        defaults={"model": constructor_defaults(type(cli.model)), "data": constructor_defaults(type(cli.datamodule)),
                  "trainer": constructor_defaults(Trainer)},
    )


@dataclass
class ImpRun:
    """What :func:`run_imp` did: every finished level's score, and the MLflow store and experiment of its chains."""

    results: list[LevelResult]
    tracking_uri: str
    experiment: str


def run_imp(config_args: Sequence[str], exit_on_error: bool = False) -> ImpRun:
    """Run or resume the IMP chains of ``lth imp``'s arguments (config, ``--imp.*``, ``--seeds``, ``--population``,
    ``--resume``, ``--executor``, ``--ray.*``)."""
    cli = parse(config_args, ImpCLI, exit_on_error)
    study = imp_study(cli)
    executor = make_executor(cli.config, study.tracking_uri)
    unit = ImpUnit(cli.spec, os.getcwd()) if executor.remote else None  # rebuilds the study elsewhere
    results = run_study(study, cli.settings, resume=cli.config.resume,
                        executor=executor, unit=unit)
    return ImpRun(results, study.tracking_uri, study.experiment)


def finished_fit(tracking_uri: str, experiment: str, tags: dict[str, str]) -> bool:
    """Whether a finished run with exactly these tags exists in ``experiment``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    return bool(client.search_runs([found.experiment_id], f"{tag_query(tags)} and attributes.status = 'FINISHED'"))


@dataclass
class TransferFit:
    """One fit of a transfer: its arm and seed, the inputs it saw, and its best return (``None``: skipped)."""

    arm: str
    seed: int
    kept: str
    best_return: float | None


@dataclass
class TransferRun:
    """What :func:`run_transfer` did: its fits, the report it wrote, and where MLflow recorded them."""

    settings: TransferSettings  # the ticket, level and sub-modules (``arm`` unused: both arms ran)
    fits: list[TransferFit]
    summary: Path
    tracking_uri: str
    experiment: str


def default_transfer_out(ticket: str, level: int) -> Path:
    """The report folder ``lth transfer`` writes when given no ``--out``."""
    return Path("reports") / f"transfer_{ticket[:8]}_level{level}"


def run_transfer(config_args: Sequence[str], ticket: str, level: int, seeds: Sequence[int] = (0, 1, 2),
                 modules: Sequence[str] | None = None, out: Path | None = None, log_to_mlflow: bool = True,
                 exit_on_error: bool = False) -> TransferRun:
    """Dense fits on all inputs and on the ticket's per seed (skipping finished ones), then their report."""
    if not seeds:
        raise ConfigError("lth transfer needs at least one seed")
    modules = list(modules) if modules else None
    common = [*config_args, "--transfer.ticket", ticket, "--transfer.level", str(level), "--seed", str(seeds[0])]
    if modules:
        common += ["--transfer.modules", json.dumps(modules)]
    # The arguments are parsed once (checking the ticket, level and modules, so nothing trains on bad ones); every
    # fit is that spec with its arm and seed set, as data.
    spec = parse([*common, "--transfer.arm", ARMS[0]], TransferCLI, exit_on_error).spec
    fits: list[TransferFit] = []
    for seed in seeds:
        for arm in ARMS:
            fit = spec.clone()
            fit.transfer.arm, fit.seed = arm, seed
            cli = parse(fit, TransferCLI, exit_on_error)
            logger = cli.config.trainer.logger.init_args
            uri, experiment = logger.tracking_uri, logger.experiment_name
            kept = logger.tags.get("kept_inputs", "all")
            tags = {k: v for k, v in logger.tags.items() if k != "kept_inputs"}
            if finished_fit(uri, experiment, tags):
                print(f"[transfer seed {seed}] {arm} inputs: already finished, skipped", flush=True)
                fits.append(TransferFit(arm, seed, kept, None))
                continue
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            best = float(cli.model.best_returns[0])  # transfer arms are solo agents
            print(f"[transfer seed {seed}] {arm} inputs ({kept}): best return {best:.1f}", flush=True)
            fits.append(TransferFit(arm, seed, kept, best))
    settings = TransferSettings(ticket, level, modules)
    summary = transfer_report(uri, experiment, settings, out or default_transfer_out(ticket, level), log_to_mlflow)
    return TransferRun(settings, fits, summary, uri, experiment)


@dataclass(frozen=True)
class ImpUnit:
    """Trains one unit of an ``lth imp`` study in another process: rebuilds the study from its parsed config
    (``LthCLI.spec``: data, not the command's arguments or config files) in the command's folder when this machine
    has it (relative store and expert paths), and resumes the unit's chains."""

    spec: Any  # the command's parsed config (a jsonargparse Namespace, picklable)
    cwd: str

    def __call__(self, chains: list[Chain]) -> list[LevelResult]:
        from lth.console import quiet

        if os.path.isdir(self.cwd):
            os.chdir(self.cwd)
        quiet()
        configure_process()
        cli = parse(self.spec, ImpCLI)
        return run_population(imp_study(cli), cli.settings, chains, resume=True)
