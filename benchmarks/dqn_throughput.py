"""DQN throughput and learning on MinAtar Breakout: lth (Lightning + TorchRL) against stable-baselines3.

Both libraries train DQN for ``--frames`` env frames with the paper's MinAtar settings (Table 11: Adam lr
2.5e-4, gamma 0.99, batch 256, buffer 100k, Huber loss, gradient-norm clip 10, data replay ratio 4 = one
update per 64 frames), a 512-256 ReLU MLP on the flattened 10x10x4 maps, 16 envs, 50k warm-up frames, a hard
target update every 19,968 frames, and epsilon annealed 1 -> 0.05 over the first quarter of the frames (the
paper's 7.5M-frame schedule does not fit a short run). lth uses prioritized replay (alpha 0.6, beta 0.4 -> 1)
and double Q; SB3's DQN has neither (uniform replay, max-target Q), as the table notes.

What is timed: lth's ``Trainer.fit`` with in-training evaluation switched off, and SB3's ``DQN.learn``. The
final greedy return (10 episodes) is measured afterwards, next to a uniformly random policy's. Results go to
``benchmarks/results/dqn_throughput.json`` and ``.md``.

Usage::

    python benchmarks/dqn_throughput.py [--seeds 0] [--frames 1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import RunResult, cpu_model, summary, timed, versions  # noqa: E402

ENV_ID = "MinAtar/Breakout-v1"
NUM_ENVS = 16
COLLECT_STEPS = 4
BATCH_SIZE = 256
REPLAY_RATIO = 4  # sampled / collected transitions: one update per BATCH_SIZE / REPLAY_RATIO = 64 frames
BUFFER_SIZE = 100_000
WARMUP = 50_000
LR = 2.5e-4
GAMMA = 0.99
MAX_GRAD_NORM = 10.0
TARGET_EVERY_UPDATES = 312  # rlpyt's default; SB3 counts it in frames (x 64)
EPS_END = 0.05
EPS_FRACTION = 0.25
HIDDEN = [512, 256]
EVAL_EPISODES = 10
EVAL_SEED = 123
DEFAULT_OUT = ROOT / "benchmarks" / "results"


def _random_return() -> float:
    """Mean return of a uniformly random policy over the evaluation episodes (the bar to beat)."""
    from lth.envs import env_shapes, make_env
    from lth.rl.agents import EpsilonGreedyActing
    from lth.rl.evaluation import evaluate_episodes

    _, spec = env_shapes(ENV_ID)
    env = make_env(ENV_ID, EVAL_EPISODES, seed=EVAL_SEED)
    returns = evaluate_episodes(env, EpsilonGreedyActing(nn.Sequential(nn.Flatten(-3, -1), nn.LazyLinear(spec.n)),
                                                         int(spec.n), eps=1.0))
    env.close()
    return returns.mean().item()


def run_lth(seed: int, frames: int) -> RunResult:
    """Train lth's DQN module through a Lightning Trainer fed by :class:`ReplayDataModule`."""
    import lightning as L

    from lth.datamodules import ReplayDataModule
    from lth.envs import make_env
    from lth.modules import DQN
    from lth.rl.evaluation import evaluate_episodes
    from lth.rl.networks import NetworkSpec

    L.seed_everything(seed, verbose=False)
    datamodule = ReplayDataModule(
        env_id=ENV_ID, num_envs=NUM_ENVS, collect_steps=COLLECT_STEPS, total_frames=frames, buffer_size=BUFFER_SIZE,
        batch_size=BATCH_SIZE, replay_ratio=REPLAY_RATIO, warmup_frames=WARMUP, seed=seed,
    )
    module = DQN(
        env_id=ENV_ID, hidden=HIDDEN, network=NetworkSpec(arch="mlp", activation="relu"), lr=LR, gamma=GAMMA,
        max_grad_norm=MAX_GRAD_NORM,
        target_update_interval=TARGET_EVERY_UPDATES, eps_start=1.0, eps_end=EPS_END,
        eps_frames=int(EPS_FRACTION * frames),
    )
    trainer = L.Trainer(
        max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1_000,
    )

    def train() -> int:
        trainer.fit(module, datamodule)
        return module.frames

    used, wall, cpu = timed(train)
    env = make_env(ENV_ID, EVAL_EPISODES, seed=EVAL_SEED)
    returns = evaluate_episodes(env, module.eval_policy)
    env.close()
    return RunResult("lth", seed, used, wall, cpu, used / wall, returns.mean().item(),
                     returns.std(correction=0).item(), datamodule.total_updates)


def run_sb3(seed: int, frames: int) -> RunResult:
    """Train stable-baselines3's DQN with the same sizes, replay ratio and schedules (uniform replay)."""
    import gymnasium as gym
    import minatar.gym
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    if ENV_ID not in gym.registry:
        minatar.gym.register_envs()
    steps_per_update = BATCH_SIZE // REPLAY_RATIO // NUM_ENVS  # vec-env steps between updates (64 frames)
    model = SB3DQN(
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=NUM_ENVS, seed=seed),
        learning_rate=LR,
        buffer_size=BUFFER_SIZE,
        learning_starts=WARMUP,
        batch_size=BATCH_SIZE,
        gamma=GAMMA,
        train_freq=steps_per_update,
        gradient_steps=1,
        target_update_interval=TARGET_EVERY_UPDATES * BATCH_SIZE // REPLAY_RATIO,
        exploration_fraction=EPS_FRACTION,
        exploration_final_eps=EPS_END,
        max_grad_norm=MAX_GRAD_NORM,
        policy_kwargs={"net_arch": HIDDEN, "activation_fn": nn.ReLU},
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
    return RunResult("sb3", seed, used, wall, cpu, used / wall, float(mean), float(std), int(model._n_updates))


def _markdown(report: dict[str, Any]) -> str:
    meta, totals, runs = report["meta"], report["summary"], report["runs"]
    v = meta["versions"]
    lines = [
        "# DQN throughput and learning: lth vs stable-baselines3 (MinAtar Breakout)",
        "",
        f"Date: {meta['date']}. Machine: {meta['cores']} cores ({meta['cpu']}), no GPU, device=cpu, "
        f"{meta['threads']} torch thread(s) for both.",
        f"Versions: torch {v['torch']}, torchrl {v['torchrl']}, tensordict {v['tensordict']}, lightning "
        f"{v['lightning']}, gymnasium {v['gymnasium']}, stable-baselines3 {v['stable_baselines3']}, "
        f"Python {v['python']}.",
        f"Budget: {meta['frames']} frames per run, seeds {meta['seeds']}; {NUM_ENVS} envs, batch {BATCH_SIZE}, "
        f"data replay ratio {REPLAY_RATIO} (one update per {BATCH_SIZE // REPLAY_RATIO} frames after "
        f"{WARMUP} warm-up frames), MLP {HIDDEN}. Final return: greedy (lth: epsilon 0.001; SB3: "
        f"deterministic), {EVAL_EPISODES} episodes. A uniformly random policy scores "
        f"**{meta['random_return']:.2f}**.",
        "",
        "| library | replay | frames/s | updates/s | wall s | final return |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, replay in (("lth", "prioritized, double Q"), ("sb3", "uniform, max-target Q")):
        s = totals[name]
        lines.append(f"| {name} | {replay} | {s['frames_per_s']:.0f} | {s['updates_per_s']:.1f} | {s['wall_s']:.1f} "
                     f"| {s['eval_return_mean']:.2f} |")
    lines += [
        "",
        f"Ratio lth/SB3 frames/s: **{totals['ratio_lth_over_sb3']:.2f}**.",
        "",
        "| library | seed | frames | updates | wall s | frames/s | final return (mean ± std) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(f"| {r['library']} | {r['seed']} | {r['frames']} | {r['updates']} | {r['wall_s']:.1f} "
                     f"| {r['frames_per_s']:.0f} | {r['eval_return_mean']:.2f} ± {r['eval_return_std']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--frames", type=int, default=1_000_000, help="env frames per run (default: 1000000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default: 1)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the JSON and Markdown go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import lightning  # noqa: F401 - configures its loggers on import; quieten them afterwards

    from lth.cli.runner import configure_process

    configure_process(args.threads)
    for name in ("lightning.pytorch", "lightning.fabric", "torchrl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    runs: list[RunResult] = []
    for seed in args.seeds:
        for run in (run_lth, run_sb3):
            result = run(seed, args.frames)
            runs.append(result)
            print(f"{result.library:>3} seed {seed}: {result.frames} frames, {result.updates} updates in "
                  f"{result.wall_s:.1f} s ({result.frames_per_s:.0f} frames/s), return {result.eval_return_mean:.2f}",
                  flush=True)
    totals: dict[str, Any] = {lib: summary([r for r in runs if r.library == lib]) for lib in ("lth", "sb3")}
    totals["ratio_lth_over_sb3"] = totals["lth"]["frames_per_s"] / totals["sb3"]["frames_per_s"]
    report = {
        "meta": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "cpu": cpu_model(), "threads": args.threads, "frames": args.frames,
            "seeds": args.seeds, "env_id": ENV_ID, "versions": versions(), "random_return": _random_return(),
        },
        "summary": totals,
        "runs": [asdict(r) for r in runs],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "dqn_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "dqn_throughput.md").write_text(_markdown(report))
    print(f"lth/SB3 frames/s ratio: {totals['ratio_lth_over_sb3']:.2f}; wrote {args.out_dir}")
    return report


if __name__ == "__main__":
    main()
