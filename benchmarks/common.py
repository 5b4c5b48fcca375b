"""What the throughput benchmarks share: timing, machine and version records, and per-run results."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class RunResult:
    """One training run of one library (``updates`` = gradient steps, 0 where not counted)."""

    library: str
    seed: int
    frames: int
    wall_s: float
    cpu_s: float
    frames_per_s: float
    eval_return_mean: float
    eval_return_std: float
    updates: int = 0


def timed(train: Callable[[], int]) -> tuple[int, float, float]:
    """Run ``train`` (which returns the frames it used); return (frames, wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = train()
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def summary(runs: list[RunResult]) -> dict[str, float]:
    """Means over seeds of one library's runs."""
    mean = statistics.fmean
    return {
        "wall_s": mean([r.wall_s for r in runs]),
        "cpu_s": mean([r.cpu_s for r in runs]),
        "frames_per_s": mean([r.frames_per_s for r in runs]),
        "cpu_frames_per_s": mean([r.frames / r.cpu_s for r in runs]),
        "updates_per_s": mean([r.updates / r.wall_s for r in runs]),
        "eval_return_mean": mean([r.eval_return_mean for r in runs]),
    }


def versions() -> dict[str, str]:
    import gymnasium
    import lightning
    import stable_baselines3
    import tensordict
    import torchrl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "lightning": lightning.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
