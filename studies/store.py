"""The MLflow side of the results: run (or resume) a study with ``lth imp`` and export what its verdicts need.

Everything here needs the store and trains; everything downstream (:mod:`studies.tickets`, :mod:`studies.inputs`)
reads only what :func:`export` committed: ``docs/results/<study>/per_seed.csv`` and ``study.json`` (what ran: env,
algorithm, pruned modules, frames per level, seeds, levels, wall-clock minutes on this machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from lth.analysis.per_seed import write_per_seed
from lth.cli import main as lth
from lth.cli.runner import run_imp
from lth.report.chains import Chain, load_chains

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
CORES = 2  # the machine's cores: a study runs as this many Ray populations side by side


def imp(config: str, experiment: str, seeds: str, levels: int, conditions: int, extra: Sequence[str] = ()) -> None:
    """Run (or resume: finished levels are found in MLflow) ``lth imp`` on ``configs/<config>``, one chain per seed
    and each of its ``conditions``, split into :data:`CORES` Ray populations that train side by side; a seed's
    chains stay in one population (they share one dense level 0)."""
    from lth.cli.seeds import parse_seeds

    population = -(-len(parse_seeds(seeds)) // CORES) * conditions
    run_imp(["--config", str(ROOT / "configs" / config), "--seeds", seeds, "--imp.levels", str(levels),
             "--trainer.logger.init_args.experiment_name", experiment, "--population", str(population),
             "--executor", "ray", *extra, *QUIET])


def paper_frames(config: str) -> int:
    """The frames per level of ``configs/<config>``: the paper's budget (the configs hold its SI tables' values)."""
    import yaml

    return int(yaml.safe_load((ROOT / "configs" / config).read_text())["data"]["init_args"]["total_frames"])


def expert_run(uri: str, config: str) -> tuple[str, float]:
    """The run id and best return of the newest finished expert of ``configs/<config>``'s experiment, trained now
    (``lth expert``) if there is none."""
    import yaml

    path = ROOT / "configs" / config
    experiment = yaml.safe_load(path.read_text())["trainer"]["logger"]["init_args"]["experiment_name"]
    client = MlflowClient(uri)

    def newest() -> Any:
        found = client.get_experiment_by_name(experiment)
        runs = [] if found is None else client.search_runs(
            [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
        return next((r for r in runs if any(a.path == "expert.ckpt" for a in client.list_artifacts(r.info.run_id))),
                    None)

    if newest() is None:
        lth(["expert", "--config", str(path), *QUIET])
    run = newest()
    assert run is not None, f"lth expert stored no expert.ckpt in {experiment}"
    return run.info.run_id, float(run.data.metrics["expert/return"])


def busy_minutes(intervals: list[tuple[int, int]]) -> float:
    """The length of the union of ``(start, end)`` intervals in milliseconds, in minutes: the time during which at
    least one run was open, so idle time between the sessions of a resumed study does not count."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total / 60000


def wall_minutes(uri: str, experiment: str) -> float:
    """Minutes during which at least one level run of ``experiment`` was open (:func:`busy_minutes`)."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.level != ''",
                              max_results=50_000)
    return busy_minutes([(r.info.start_time, r.info.end_time) for r in runs if r.info.end_time])


def chain_setting(chains: list[Chain]) -> dict[str, Any]:
    """What every chain of a study ran with, read back from their params: env, algorithm, pruned modules, frames per
    level and pruning amount (a study whose chains disagree on one of these is refused)."""
    def one(key: str) -> Any:
        values = {c.params.get(key, "null") for c in chains}
        if len(values) != 1:
            raise ValueError(f"the study's chains differ in {key}: {sorted(values)}")
        return json.loads(values.pop())

    algo = one("model.class_path").rsplit(".", 1)[-1].lower()
    return {"env": one("data.init_args.env_id"), "algo": algo, "modules": one("imp.modules"),
            "frames": one("data.init_args.total_frames"), "amount": one("imp.amount")}


def export(uri: str, experiment: str, out: Path,
           analyse: Callable[[str, Chain], dict[int, dict[str, float]]] | None = None, **extra: Any) -> dict[str, Any]:
    """Write ``out/per_seed.csv`` (every chain's finished levels, with input survival where logged, and the
    per-level columns ``analyse(uri, chain)`` computes) and ``out/study.json`` (:func:`chain_setting`, seeds, levels,
    wall-clock minutes, and ``extra``) from ``experiment``'s chains; returns the metadata."""
    chains = load_chains(uri, [experiment])
    rows = []
    for chain in chains:
        added = analyse(uri, chain) if analyse else {}
        rows += [(chain.condition, chain.seed, level, {**metrics, **added.get(level, {})})
                 for level, metrics in chain.levels.items()]
    write_per_seed(rows, out / "per_seed.csv")
    meta = {"experiment": experiment, **chain_setting(chains), "seeds": sorted({c.seed for c in chains}),
            "levels": max(len(c.levels) for c in chains), "minutes": round(wall_minutes(uri, experiment), 1), **extra}
    (out / "study.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def export_transfer(uri: str, transfer: Any, out: Path, **extra: Any) -> dict[str, Any]:
    """Write ``out/curves.csv`` (arm, seed, frames, return: every evaluation of every finished fit) and
    ``out/transfer.json`` (experiment, wall-clock minutes, ``extra``) of a :class:`lth.cli.runner.TransferRun`."""
    import csv

    from lth.report.transfer import load_curves
    from lth.store.tracking import tag_query
    from lth.study.transfer import transfer_tags

    curves = sorted(load_curves(uri, transfer.experiment, transfer.settings), key=lambda c: (c.arm, c.seed))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "curves.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["arm", "seed", "frames", "return"])
        for curve in curves:
            writer.writerows([curve.arm, curve.seed, f, repr(float(r))] for f, r in zip(curve.frames, curve.returns))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(transfer.experiment).experiment_id],
                              tag_query(transfer_tags(transfer.settings)), max_results=10_000)
    meta = {"experiment": transfer.experiment, "kept": next((c.kept for c in curves if c.arm == "ticket"), ""),
            "minutes": round(busy_minutes([(r.info.start_time, r.info.end_time) for r in runs if r.info.end_time]), 1),
            **extra}
    (out / "transfer.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta
