"""PPO throughput on CartPole-v1: lth (Lightning + TorchRL) against stable-baselines3, in one process.

Both libraries train PPO for ``--frames`` env frames with the paper's CartPole settings (Adam lr 5e-4,
gamma 0.99, GAE lambda 0.8, clip 0.2, value coef 0.5, entropy coef 0.001, 4 epochs of 4 minibatches of 128,
4 parallel envs x 128 steps, separate 64-64 tanh actor and critic). For each run the script records the
wall-clock and CPU seconds of training, frames/s and the final greedy return over 10 evaluation episodes.

What is timed:

* lth: ``Trainer.fit`` (collector and env construction included) with Lightning's validation loop switched
  off (``limit_val_batches=0``), so lth's periodic in-training evaluation is *excluded* from its timing; the
  final evaluation runs afterwards with :func:`lth.rl.evaluation.evaluate_episodes`.
* SB3: ``PPO.learn`` (it does no evaluation while learning); the final evaluation runs afterwards with
  :func:`stable_baselines3.common.evaluation.evaluate_policy`.

``lth.cli.runner.configure_process(--threads)`` (torch threads, no NVML probing per optimizer step) applies to both.
Results go to ``benchmarks/results/ppo_throughput.json`` and ``benchmarks/results/ppo_throughput.md``.

Usage::

    python benchmarks/ppo_throughput.py [--seeds 0 1 2] [--frames 80000] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import RunResult, cpu_model, summary, timed, versions  # noqa: E402

ENV_ID = "CartPole-v1"
NUM_ENVS = 4
ROLLOUT_STEPS = 128
BATCH_SIZE = 128
EPOCHS = 4
LR = 5e-4
GAMMA = 0.99
GAE_LAMBDA = 0.8
CLIP = 0.2
VALUE_COEF = 0.5
ENTROPY_COEF = 0.001
HIDDEN = [64, 64]
EVAL_EPISODES = 10
EVAL_SEED = 123
DEFAULT_OUT = ROOT / "benchmarks" / "results"


def run_lth(seed: int, frames: int) -> RunResult:
    """Train lth's PPO module through a Lightning Trainer fed by :class:`OnPolicyDataModule`."""
    import lightning as L

    from lth.datamodules import OnPolicyDataModule
    from lth.envs import make_env
    from lth.modules import PPO
    from lth.rl.evaluation import evaluate_episodes
    from lth.rl.networks import NetworkSpec

    L.seed_everything(seed, verbose=False)
    datamodule = OnPolicyDataModule(
        env_id=ENV_ID, num_envs=NUM_ENVS, rollout_steps=ROLLOUT_STEPS, total_frames=frames, seed=seed
    )
    module = PPO(
        env_id=ENV_ID,
        actor_hidden=HIDDEN,
        critic_hidden=HIDDEN,
        network=NetworkSpec(activation="tanh"),
        lr=LR,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        clip_epsilon=CLIP,
        value_coef=VALUE_COEF,
        entropy_coef=ENTROPY_COEF,
        epochs=EPOCHS,
        minibatches=NUM_ENVS * ROLLOUT_STEPS // BATCH_SIZE,
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,  # no in-training evaluation: it is not part of the timed work
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    def train() -> int:
        trainer.fit(module, datamodule)
        return module.frames

    used, wall, cpu = timed(train)
    env = make_env(ENV_ID, EVAL_EPISODES, seed=EVAL_SEED)
    returns = evaluate_episodes(env, module.policy)
    env.close()
    return RunResult(
        "lth", seed, used, wall, cpu, used / wall, returns.mean().item(), returns.std(unbiased=False).item()
    )


def run_sb3(seed: int, frames: int) -> RunResult:
    """Train stable-baselines3's PPO with the same settings."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    model = SB3PPO(
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed),
        n_steps=ROLLOUT_STEPS,
        batch_size=BATCH_SIZE,
        n_epochs=EPOCHS,
        learning_rate=LR,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        ent_coef=ENTROPY_COEF,
        vf_coef=VALUE_COEF,
        clip_range=CLIP,
        policy_kwargs={"net_arch": {"pi": HIDDEN, "vf": HIDDEN}, "activation_fn": nn.Tanh},
        device="cpu",
        seed=seed,
    )

    def train() -> int:
        model.learn(total_timesteps=frames)
        return int(model.num_timesteps)

    used, wall, cpu = timed(train)
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_EPISODES, seed=EVAL_SEED)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
    eval_env.close()
    return RunResult("sb3", seed, used, wall, cpu, used / wall, float(mean), float(std))


def _markdown(report: dict[str, Any]) -> str:
    meta, totals, runs = report["meta"], report["summary"], report["runs"]
    versions = meta["versions"]
    validation = "on" if meta["validate_args"] else "off for both (torchrl.modules turns it off on import)"
    setup = (
        f"Date: {meta['date']}. Machine: {meta['cores']} cores ({meta['cpu']}), no GPU, device=cpu. "
        f"`torch.set_num_threads({meta['threads']})` for both. "
        f"torch.distributions argument validation: {validation}."
    )
    stack = (
        f"Versions: torch {versions['torch']}, torchrl {versions['torchrl']}, tensordict {versions['tensordict']}, "
        f"lightning {versions['lightning']}, gymnasium {versions['gymnasium']}, "
        f"stable-baselines3 {versions['stable_baselines3']}, Python {versions['python']}."
    )
    budget = (
        f"Budget: {meta['frames']} frames requested ({NUM_ENVS} envs x {ROLLOUT_STEPS} steps per rollout); "
        f"seeds {meta['seeds']}. Final return: greedy, {EVAL_EPISODES} episodes, eval seed {EVAL_SEED}."
    )
    timing = (
        "lth timing: `Trainer.fit` with in-training evaluation **excluded** (`limit_val_batches=0`); "
        "SB3 timing: `PPO.learn` (no in-training evaluation)."
    )
    ratio = (
        f"Ratio lth/SB3 frames/s: **{totals['ratio_lth_over_sb3']:.2f}** (wall), "
        f"{totals['ratio_lth_over_sb3_cpu']:.2f} (CPU time)."
    )
    differences = (
        "Known differences kept as configured: SB3 standardises advantages per minibatch, clips gradients at "
        "norm 0.5 and uses orthogonal init; lth standardises advantages once per rollout (GAE "
        "`average_gae=True`), clips at norm 1.0 and uses PyTorch's default (kaiming-uniform) init. Both run in "
        "one process after `lightning` and `torchrl.modules` are imported, so process-wide side effects of those "
        "imports (distribution argument validation off) and `lth.cli.runner.configure_process` (torch threads, "
        "`PYTORCH_NVML_BASED_CUDA_CHECK=0`) apply to both."
    )
    lines = [
        "# PPO throughput: lth vs stable-baselines3 (CartPole-v1)",
        "",
        setup,
        stack,
        budget,
        timing,
        "",
        "| library | frames | wall s | frames/s (wall) | frames/s (CPU time) | final return (mean of seeds) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in (("lth", totals["lth"]), ("SB3", totals["sb3"])):
        frames = round(statistics.fmean(r["frames"] for r in runs if r["library"] == name.lower()))
        lines.append(
            f"| {name} | {frames} | {s['wall_s']:.1f} | {s['frames_per_s']:.0f} | {s['cpu_frames_per_s']:.0f} "
            f"| {s['eval_return_mean']:.1f} |"
        )
    lines += [
        "",
        ratio,
        "",
        "Per run:",
        "",
        "| library | seed | frames | wall s | CPU s | frames/s | final return (mean ± std) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r['library']} | {r['seed']} | {r['frames']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['frames_per_s']:.0f} | {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} |"
        )
    lines += ["", differences, ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--frames", type=int, default=80_000, help="env frames per run (default: 80000)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both (default: 1)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the JSON and Markdown go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    # Importing torchrl.modules (as lth does) calls Distribution.set_default_validate_args(False) for the whole
    # process; import it before any run so that both libraries train under the same setting, and record it.
    import lightning  # noqa: F401 - configures its loggers on import; quieten them afterwards
    import torchrl.modules  # noqa: F401

    from lth.cli.runner import configure_process

    configure_process(args.threads)  # the `lth` command's process settings, for both libraries
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    runs: list[RunResult] = []
    for seed in args.seeds:  # interleaved, so slow drifts in machine load hit both libraries alike
        for run in (run_lth, run_sb3):
            result = run(seed, args.frames)
            runs.append(result)
            print(
                f"{result.library:>3} seed {seed}: {result.frames} frames in {result.wall_s:.1f} s "
                f"({result.frames_per_s:.0f} frames/s, CPU {result.cpu_s:.1f} s), "
                f"return {result.eval_return_mean:.1f}",
                flush=True,
            )

    lth = summary([r for r in runs if r.library == "lth"])
    sb3 = summary([r for r in runs if r.library == "sb3"])
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "threads": args.threads,
            "validate_args": bool(torch.distributions.Distribution._validate_args),
            "frames": args.frames,
            "seeds": args.seeds,
            "env_id": ENV_ID,
            "settings": {
                "num_envs": NUM_ENVS,
                "rollout_steps": ROLLOUT_STEPS,
                "batch_size": BATCH_SIZE,
                "epochs": EPOCHS,
                "lr": LR,
                "gamma": GAMMA,
                "gae_lambda": GAE_LAMBDA,
                "clip": CLIP,
                "value_coef": VALUE_COEF,
                "entropy_coef": ENTROPY_COEF,
                "hidden": HIDDEN,
                "activation": "tanh",
            },
            "lth_in_training_eval": "excluded (limit_val_batches=0)",
            "versions": versions(),
        },
        "summary": {
            "lth": lth,
            "sb3": sb3,
            "ratio_lth_over_sb3": lth["frames_per_s"] / sb3["frames_per_s"],
            "ratio_lth_over_sb3_cpu": lth["cpu_frames_per_s"] / sb3["cpu_frames_per_s"],
        },
        "runs": [asdict(r) for r in runs],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ppo_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "ppo_throughput.md").write_text(_markdown(report))
    print(f"lth/SB3 frames/s ratio: {report['summary']['ratio_lth_over_sb3']:.2f}; wrote {args.out_dir}")
    return report


if __name__ == "__main__":
    main()
