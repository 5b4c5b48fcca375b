"""Units per minute on a server store: the same CartPole study with ``--executor local`` and ``--executor ray``.

Starts ``python -m lth.store.server`` (PostgreSQL + ``mlflow server`` on 127.0.0.1, no auth) in a temporary folder, then
runs ``lth imp`` on it twice, each in its own experiment: one unit per chain (``--population 1``), the local
executor (one unit after another) against a local Ray on this machine's CPUs. Writes
``benchmarks/results/cluster_units.{json,md}``. Run on demand (``python benchmarks/cluster_units.py``), never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lth.store.server import launch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def study(args: argparse.Namespace, uri: str, experiment: str, executor: str) -> list[str]:
    return ["imp", "--config", str(ROOT / "configs" / "cartpole" / "ppo.yaml"), "--imp.conditions", "all",
            "--seeds", args.seeds, "--imp.levels", str(args.levels), "--population", "1",
            "--data.init_args.total_frames", str(args.frames), "--executor", executor,
            "--trainer.logger.init_args.tracking_uri", uri, "--trainer.logger.init_args.experiment_name", experiment,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def timed_study(argv: list[str], folder: Path) -> float:
    """Wall seconds of ``lth`` with ``argv`` in a child process (imports included, as a user waits for them)."""
    start = time.monotonic()
    code = f"from lth.cli import main; main({argv!r})"
    with open(folder / f"{argv[argv.index('--executor') + 1]}.log", "w") as log:
        subprocess.run([sys.executable, "-c", code], cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1", help="chains: 4 conditions per seed, one unit each")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16000, help="frames per level")
    args = parser.parse_args()
    units = 4 * len(args.seeds.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = launch(folder)
        uri = f"http://127.0.0.1:{server.port}"
        try:
            seconds = {executor: timed_study(study(args, uri, executor, executor), folder)
                       for executor in ("local", "ray")}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    result = {"units": units, "levels": args.levels, "frames_per_level": args.frames, "cpus": os.cpu_count(),
              "store": "lth.store.server (PostgreSQL + mlflow server, 127.0.0.1)",
              **{f"{executor}_s": round(s, 1) for executor, s in seconds.items()},
              **{f"{executor}_units_per_min": round(units / s * 60, 2) for executor, s in seconds.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cluster_units.json").write_text(json.dumps(result, indent=1) + "\n")
    table = ["| executor | wall s | units/min |", "| --- | ---: | ---: |",
             *(f"| {e} | {seconds[e]:.0f} | {units / seconds[e] * 60:.2f} |" for e in seconds)]
    (RESULTS / "cluster_units.md").write_text(
        f"{units} units (CartPole PPO, one chain each, {args.levels} levels x {args.frames} frames) on "
        f"{result['store']}, {os.cpu_count()} CPUs:\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
