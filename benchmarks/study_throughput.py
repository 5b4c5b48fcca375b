"""IMP study throughput on CartPole-v1: lth populations, lth one chain at a time, and stable-baselines3, side by side.

The study is the paper's CartPole PPO IMP study (``configs/cartpole/ppo.yaml``, Table 3: 4 envs x 128 steps,
80k frames per level, evaluation every 5000 frames over 10 episodes) cut to ``--levels`` levels: the four
paper conditions x ``--seeds`` chains. Every arm uses both cores, one process per core:

* ``population``: two ``lth imp`` processes, each running two of the four conditions for every seed as one
  batched population (``--population`` = its chain count);
* ``sequential``: the same two processes with ``--population 1`` (one chain after another, today's path);
* ``sb3``: stable-baselines3 PPO with the config's hyperparameters, one fit per condition, seed and level
  (conditions and levels are plain repeats with their own seeds: SB3 has no pruning), over a pool of two
  processes; each fit is evaluated like lth's (``EvalCallback``, deterministic) and keeps its best mean return.

Every ``lth imp`` process has its own MLflow sqlite store in a temporary folder, ``LTH_NUM_THREADS=1`` and no
progress bar; its wall time includes the process start and MLflow writes, as a study's does. Frames/s is all
fits' env frames over the arm's wall time. Learning is the number of level-0 chains (or fits) whose best
evaluation return reaches 475, read for lth from each chain's parent run (``ticket/best_return`` at step 0).
The projected full study (16 levels) is the measured time per level x 16.

``--dqn`` adds DQN on MazeGrid (``configs/mazegrid/dqn.yaml``, object maps): one ``lth imp`` process with 8
members (``--seeds 0-7 --imp.levels 1 --population 8``) against 8 SB3 DQN fits in one process, both for
``--dqn-frames`` frames each, with frames/s and peak RSS per member; a failing lth run is recorded, not raised.

Results go to ``<out>/<name>.json`` and ``<out>/<name>.md`` (``--name``, default ``study_throughput``).

Usage::

    python benchmarks/study_throughput.py [--seeds 0-4] [--levels 2] [--frames 80000]
        [--arms population,sequential,sb3] [--dqn] [--dqn-frames 100000] [--out benchmarks/results]
        [--name study_throughput]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import math
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import cpu_model, versions  # noqa: E402

from lth.cli.seeds import parse_seeds  # noqa: E402

PPO_CONFIG = ROOT / "configs" / "cartpole" / "ppo.yaml"
DQN_CONFIG = ROOT / "configs" / "mazegrid" / "dqn.yaml"
LTH = ROOT / ".venv" / "bin" / "lth"
CONDITIONS = ("mask/weights", "mask/permuted", "permuted/permuted", "random/reinit")
ARMS = ("population", "sequential", "sb3")
PROCESSES = 2  # one per core
SOLVED = 475.0  # CartPole-v1's solved threshold
FULL_LEVELS = 16
DQN_MEMBERS = 8
DEFAULT_OUT = ROOT / "benchmarks" / "results"


@dataclass
class Fit:
    """One SB3 training run: which study cell it stands for, its seed and frame budget."""

    condition: str
    seed: int
    level: int
    fit_seed: int
    frames: int


@dataclass
class FitResult:
    """What one SB3 fit did: env frames, best evaluation mean return, wall seconds, its process's peak RSS (KiB)."""

    condition: str
    seed: int
    level: int
    frames: int
    best_return: float
    wall_s: float
    peak_rss_kib: int


def config_settings(config: Path) -> dict[str, Any]:
    """The model's and data's init arguments of an lth config, the classes' defaults filled in."""
    raw = yaml.safe_load(config.read_text())
    settings: dict[str, Any] = {}
    for part in ("model", "data"):
        module_name, _, class_name = raw[part]["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        settings.update(defaults | raw[part].get("init_args", {}))
    return settings


def _worker_init() -> None:
    """Pool workers: one torch thread, quiet warnings."""
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sb3_ppo_fit(fit: Fit) -> FitResult:
    """Train SB3 PPO with the CartPole config's hyperparameters, evaluating like lth; keep the best mean return."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    s = config_settings(PPO_CONFIG)
    frames_per_batch = s["num_envs"] * s["rollout_steps"]
    rollouts = math.ceil(fit.frames / frames_per_batch)
    eval_rollouts = max(1, min(rollouts, round(s["eval_every"] / frames_per_batch)))  # lth's eval_interval
    model = PPO(
        "MlpPolicy", make_vec_env(s["env_id"], n_envs=s["num_envs"], seed=fit.fit_seed),
        learning_rate=s["lr"], n_steps=s["rollout_steps"], batch_size=frames_per_batch // s["minibatches"],
        n_epochs=s["epochs"], gamma=s["gamma"], gae_lambda=s["gae_lambda"], clip_range=s["clip_epsilon"],
        ent_coef=s["entropy_coef"], vf_coef=s["value_coef"], max_grad_norm=s["max_grad_norm"],
        normalize_advantage=True, device="cpu", seed=fit.fit_seed,
        policy_kwargs={"net_arch": {"pi": s["actor_hidden"], "vf": s["critic_hidden"]}, "activation_fn": nn.Tanh},
    )
    evaluator = EvalCallback(
        make_vec_env(s["env_id"], n_envs=s["eval_episodes"], seed=fit.fit_seed + 1),
        n_eval_episodes=s["eval_episodes"], eval_freq=eval_rollouts * s["rollout_steps"], deterministic=True,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=fit.frames, callback=evaluator)
    return FitResult(fit.condition, fit.seed, fit.level, int(model.num_timesteps), float(evaluator.best_mean_reward),
                     time.perf_counter() - start, _peak_rss_kib())


def sb3_dqn_fit(fit: Fit) -> FitResult:
    """Train SB3 DQN with the MazeGrid config's settings (uniform replay, max-target Q), evaluating like lth."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    import lth  # noqa: F401 - registers lth/MazeGrid-v0

    s = config_settings(DQN_CONFIG)
    frames_per_update = s["batch_size"] // s["replay_ratio"]
    model = DQN(
        "MlpPolicy", make_vec_env(s["env_id"], n_envs=s["num_envs"], seed=fit.fit_seed, env_kwargs=s["env_kwargs"]),
        learning_rate=s["lr"], buffer_size=s["buffer_size"], learning_starts=s["warmup_frames"],
        batch_size=s["batch_size"], gamma=s["gamma"], train_freq=max(frames_per_update // s["num_envs"], 1),
        gradient_steps=1, target_update_interval=s["target_update_interval"] * frames_per_update,
        exploration_initial_eps=s["eps_start"], exploration_final_eps=s["eps_end"],
        exploration_fraction=s["eps_frames"] / fit.frames, max_grad_norm=s["max_grad_norm"],
        policy_kwargs={"net_arch": s["hidden"], "activation_fn": nn.ReLU}, device="cpu", seed=fit.fit_seed,
    )
    evaluator = EvalCallback(
        make_vec_env(s["env_id"], n_envs=s["eval_episodes"], seed=fit.fit_seed + 1, env_kwargs=s["env_kwargs"]),
        n_eval_episodes=s["eval_episodes"], eval_freq=max(s["eval_every"] // s["num_envs"], 1), deterministic=True,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=fit.frames, callback=evaluator)
    return FitResult(fit.condition, fit.seed, fit.level, int(model.num_timesteps), float(evaluator.best_mean_reward),
                     time.perf_counter() - start, _peak_rss_kib())


def run_pool(train: Any, fits: list[Fit], processes: int) -> tuple[list[FitResult], float]:
    """Run ``fits`` over a spawn pool of ``processes`` single-threaded workers; return results and wall seconds."""
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(processes, initializer=_worker_init) as pool:
        results = pool.map(train, fits, chunksize=1)
    return results, time.perf_counter() - start


def run_lth(jobs: list[list[str]], workdir: Path) -> dict[str, Any]:
    """Run one ``lth imp`` process per job (argument list after ``lth imp``) in parallel, each with its own MLflow
    store under ``workdir``; return wall seconds, each process's peak RSS, store URIs, and the first error."""
    env = {**os.environ, "LTH_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs, uris, logs = [], [], []
    start = time.perf_counter()
    for i, job in enumerate(jobs):
        store = workdir / f"mlruns_{i}"
        store.mkdir(parents=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        log = workdir / f"lth_{i}.log"
        command = [str(LTH), "imp", *job, "--trainer.logger.init_args.tracking_uri", uri,
                   "--trainer.enable_progress_bar", "false",
                   "--trainer.enable_model_summary", "false"]
        with log.open("w") as out:
            procs.append(subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT))
        uris.append(uri)
        logs.append(log)
    rss, error = [], None
    for proc, log in zip(procs, logs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss.append(usage.ru_maxrss)
        if proc.returncode != 0 and error is None:
            tail = log.read_text().strip().splitlines()[-15:]
            error = f"lth imp exited with {proc.returncode}: " + "\n".join(tail)
    return {"wall_s": time.perf_counter() - start, "peak_rss_kib": rss, "uris": uris, "error": error}


def level0_returns(uris: list[str]) -> list[float]:
    """Each chain's level-0 ``ticket/best_return``, from the parent runs in the given MLflow stores."""
    from mlflow import MlflowClient

    returns = []
    for uri in uris:
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        for parent in client.search_runs(experiments, "tags.`lth.role` = 'chain'", max_results=10_000):
            history = client.get_metric_history(parent.info.run_id, "ticket/best_return")
            returns += [m.value for m in history if m.step == 0]
    return returns


def rollout_frames(frames: int, frames_per_batch: int) -> int:
    """The frames a fit of ``frames`` collects: whole batches, rounded up (lth's data modules and SB3 alike)."""
    return math.ceil(frames / frames_per_batch) * frames_per_batch


def population_size(seeds: list[int]) -> int:
    """The members of one population process: its share of the conditions, for every seed."""
    return len(CONDITIONS) // PROCESSES * len(seeds)


def ppo_lth_arm(arm: str, seeds: str, levels: int, frames: int) -> dict[str, Any]:
    """The ``population`` or ``sequential`` arm: two ``lth imp`` processes, two conditions each, every seed."""
    s = config_settings(PPO_CONFIG)
    share = len(CONDITIONS) // PROCESSES
    parts = [CONDITIONS[i : i + share] for i in range(0, len(CONDITIONS), share)]
    chains = len(CONDITIONS) * len(parse_seeds(seeds))
    jobs = [
        ["--config", str(PPO_CONFIG), "--imp.conditions", ",".join(part), "--imp.levels", str(levels),
         "--seeds", seeds, "--population", str(population_size(parse_seeds(seeds)) if arm == "population" else 1),
         "--data.init_args.total_frames", str(frames)]
        for part in parts
    ]
    with tempfile.TemporaryDirectory(prefix=f"study_{arm}_") as tmp:
        run = run_lth(jobs, Path(tmp))
        returns = [] if run["error"] else level0_returns(run["uris"])
    total = chains * levels * rollout_frames(frames, s["num_envs"] * s["rollout_steps"])
    return arm_summary(total, chains * levels, run["wall_s"], levels, returns, jobs, run["error"])


def ppo_sb3_arm(seeds: str, levels: int, frames: int) -> dict[str, Any]:
    """The ``sb3`` arm: one SB3 PPO fit per condition, seed and level over a pool of two processes."""
    fits = [Fit(c, seed, level, 1000 * seed + 100 * i + level, frames)
            for i, c in enumerate(CONDITIONS) for seed in parse_seeds(seeds) for level in range(levels)]
    results, wall = run_pool(sb3_ppo_fit, fits, PROCESSES)
    returns = [r.best_return for r in results if r.level == 0]
    report = arm_summary(sum(r.frames for r in results), len(fits), wall, levels, returns, None, None)
    report["fits_detail"] = [asdict(r) for r in results]
    return report


def arm_summary(frames: int, fits: int, wall: float, levels: int, returns: list[float],
                jobs: list[list[str]] | None, error: str | None) -> dict[str, Any]:
    """One arm's record: frames, wall time, frames/s, level-0 learning and the projected 16-level study."""
    report: dict[str, Any] = {
        "fits": fits, "frames": frames, "wall_s": wall, "frames_per_s": frames / wall,
        "level0_solved": sum(r >= SOLVED for r in returns), "level0_chains": len(returns),
        "level0_best_returns": returns, "projected_full_study_s": wall / levels * FULL_LEVELS,
    }
    if jobs is not None:
        report["commands"] = [" ".join(["lth", "imp", *job]) for job in jobs]
    if error is not None:
        report["error"] = error
    return report


def dqn_comparison(frames: int) -> dict[str, Any]:
    """DQN on MazeGrid: one lth population process of 8 members against 8 SB3 fits in one process."""
    s = config_settings(DQN_CONFIG)
    job = ["--config", str(DQN_CONFIG), "--seeds", f"0-{DQN_MEMBERS - 1}", "--imp.levels", "1",
           "--population", str(DQN_MEMBERS), "--data.init_args.total_frames", str(frames)]
    with tempfile.TemporaryDirectory(prefix="study_dqn_") as tmp:
        run = run_lth([job], Path(tmp))
    lth_frames = DQN_MEMBERS * rollout_frames(frames, s["num_envs"] * s["collect_steps"])
    lth_report: dict[str, Any] = {"command": " ".join(["lth", "imp", *job]), "wall_s": run["wall_s"],
                                  "peak_rss_mib": run["peak_rss_kib"][0] / 1024,
                                  "peak_rss_mib_per_member": run["peak_rss_kib"][0] / 1024 / DQN_MEMBERS}
    if run["error"] is None:
        lth_report |= {"frames": lth_frames, "frames_per_s": lth_frames / run["wall_s"]}
    else:
        lth_report["error"] = run["error"]
    fits = [Fit("mask/weights", seed, 0, seed, frames) for seed in range(DQN_MEMBERS)]
    results, wall = run_pool(sb3_dqn_fit, fits, 1)
    sb3_frames = sum(r.frames for r in results)
    return {
        "env_id": s["env_id"], "env_kwargs": s["env_kwargs"], "members": DQN_MEMBERS, "frames_per_member": frames,
        "lth_population": lth_report,
        "sb3": {"frames": sb3_frames, "wall_s": wall, "frames_per_s": sb3_frames / wall,
                "peak_rss_mib": max(r.peak_rss_kib for r in results) / 1024,
                "peak_rss_mib_per_member": results[0].peak_rss_kib / 1024,
                "best_returns": [r.best_return for r in results]},
        "note": "one process (one core) each; SB3 trains its members one after another in one worker, whose peak "
                "RSS after the first fit is the per-member figure (later fits add what the allocator keeps); "
                "SB3 DQN has uniform replay and max-target Q (lth: prioritized, double Q)",
    }


def markdown(report: dict[str, Any]) -> str:
    """The JSON report as a Markdown table with the setup and the projected full study."""
    meta = report["meta"]
    arms = {name: report[name] for name in ARMS if name in report}
    sb3_fps = arms.get("sb3", {}).get("frames_per_s")
    members = f" (a population process: {population_size(meta['seeds'])} members)" if "population" in arms else ""
    lines = [
        "# IMP study throughput: lth populations vs one chain at a time vs stable-baselines3 (CartPole-v1 PPO)",
        "",
        (f"Date: {meta['date']}. Machine: {meta['cores']} cores ({meta['cpu']}), no GPU; {PROCESSES} processes per "
         f"arm, 1 torch thread each{members}. Study: {len(CONDITIONS)} conditions x seeds {meta['seeds']} x "
         f"{meta['levels']} level(s) x {meta['frames']} frames, `{PPO_CONFIG.relative_to(ROOT)}` (evaluation every "
         f"{meta['settings']['eval_every']} frames, {meta['settings']['eval_episodes']} episodes, included)."),
        "",
        f"| arm | fits | frames | wall s | frames/s | x SB3 | level-0 >= {SOLVED:.0f} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, arm in arms.items():
        if "error" in arm:
            lines.append(f"| {name} | {arm['fits']} | error: see JSON | | | | |")
            continue
        ratio = f"{arm['frames_per_s'] / sb3_fps:.2f}" if sb3_fps else ""
        lines.append(f"| {name} | {arm['fits']} | {arm['frames']} | {arm['wall_s']:.1f} | {arm['frames_per_s']:.0f} "
                     f"| {ratio} | {arm['level0_solved']}/{arm['level0_chains']} |")
    projected = ", ".join(f"{name} {arm['projected_full_study_s'] / 3600:.2f} h" for name, arm in arms.items()
                          if "error" not in arm)
    if projected:
        lines += ["", (f"Projected {FULL_LEVELS}-level study ({len(CONDITIONS)} conditions x {len(meta['seeds'])} "
                       f"seeds x {FULL_LEVELS} levels x {meta['frames']} frames; measured time per level x "
                       f"{FULL_LEVELS}): {projected}.")]
    lines.append("")
    if "dqn" in report:
        dqn = report["dqn"]
        lines += [(f"DQN on {dqn['env_id']} {dqn['env_kwargs']}: {dqn['members']} members x "
                   f"{dqn['frames_per_member']} frames, one process each."), "",
                  "| library | frames/s | wall s | peak RSS MiB | per member MiB |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, side in (("lth population", dqn["lth_population"]), ("sb3", dqn["sb3"])):
            fps = f"{side['frames_per_s']:.0f}" if "frames_per_s" in side else "error: see JSON"
            lines.append(f"| {name} | {fps} | {side['wall_s']:.1f} | {side['peak_rss_mib']:.0f} "
                         f"| {side['peak_rss_mib_per_member']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-4", help="study seeds, as lth imp reads them (default: 0-4)")
    parser.add_argument("--levels", type=int, default=2, help="IMP levels per chain (default: 2)")
    parser.add_argument("--frames", type=int, default=None, help="frames per level (default: the config's)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)} ('': none)")
    parser.add_argument("--dqn", action="store_true", help="also compare DQN populations on MazeGrid with SB3")
    parser.add_argument("--dqn-frames", type=int, default=100_000, help="frames per DQN member (default: 100000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the JSON and Markdown results")
    parser.add_argument("--name", default="study_throughput", help="file name of the results, without extension")
    args = parser.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arm(s) {sorted(unknown)}; choose from {list(ARMS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen arms one after another and write the JSON and Markdown reports."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    settings = config_settings(PPO_CONFIG)
    frames = args.frames or settings["total_frames"]
    arms: dict[str, Any] = {}
    for arm in (a for a in ARMS if a in args.arms):
        if arm == "sb3":
            arms[arm] = ppo_sb3_arm(args.seeds, args.levels, frames)
        else:
            arms[arm] = ppo_lth_arm(arm, args.seeds, args.levels, frames)
        summary = arms[arm].get("error") or (
            f"{arms[arm]['frames']} frames in {arms[arm]['wall_s']:.1f} s ({arms[arm]['frames_per_s']:.0f} frames/s), "
            f"level 0 >= {SOLVED:.0f}: {arms[arm]['level0_solved']}/{arms[arm]['level0_chains']}")
        print(f"{arm}: {summary}", flush=True)
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "cpu": cpu_model(), "versions": versions(), "config": str(PPO_CONFIG.relative_to(ROOT)),
            "seeds": parse_seeds(args.seeds), "levels": args.levels, "frames": frames, "processes": PROCESSES,
            "settings": {k: v for k, v in settings.items() if isinstance(v, (int, float, str, list, type(None)))},
        },
        **arms,
    }
    sb3 = arms.get("sb3", {})
    for key, arm in (("ratio_vs_sb3", "population"), ("sequential_vs_sb3", "sequential")):
        if "frames_per_s" in sb3 and "frames_per_s" in arms.get(arm, {}) and "error" not in arms[arm]:
            report[key] = arms[arm]["frames_per_s"] / sb3["frames_per_s"]
    if args.dqn:
        report["dqn"] = dqn_comparison(args.dqn_frames)
        print(f"dqn: {json.dumps({k: report['dqn'][k] for k in ('lth_population', 'sb3')}, default=str)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(f"wrote {args.out / args.name}.json and .md", flush=True)
    return report


if __name__ == "__main__":
    main()
