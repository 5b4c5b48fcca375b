"""Input-mask transfer (paper Figures 5 and 8, bottom): dense agents that see only a ticket's surviving inputs.

``lth transfer`` reads the masks of one level of a stored IMP chain, keeps the observation inputs that still
have a weight in an input layer of the ticket, and trains dense agents, seed by seed, once on those inputs
(every other input zeroed, see :class:`lth.envs.GymVectorEnv`) and once on all inputs, in the experiment
``<config experiment>/transfer``. Their learning curves (mean and one standard deviation across seeds) go to
a PNG and a Markdown table, on disk and in a run tagged ``lth.role=report``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lth.analysis.inputs import input_layers, input_names  # noqa: E402
from lth.envs import env_shapes  # noqa: E402
from lth.errors import ConfigError  # noqa: E402
from lth.report import mean_sd  # noqa: E402
from lth.tracking import ChainStore, log_folder, tag_query  # noqa: E402

#: The two arms of a transfer: every input, or only the ticket's surviving inputs.
ARMS = ("all", "ticket")


@dataclass
class TransferSettings:
    """``--transfer.*``: which ticket's input mask a fit uses, and which arm the fit is."""

    ticket: str  # parent run id of an IMP chain (``lth imp`` prints it; the MLflow UI shows it)
    level: int  # the chain level whose masks are transferred
    modules: list[str] | None = None  # input layers of these sub-modules (e.g. [actor]); None = every pruned one
    arm: str = "ticket"  # "ticket": only the surviving inputs; "all": every input (the dense baseline)


def kept_inputs(masks: Mapping[str, torch.Tensor], modules: Sequence[str] | None = None) -> list[int]:
    """Flat observation indices with a surviving weight in at least one chosen input layer (their union)."""
    layers = input_layers(masks)
    chosen = layers if modules is None else {g: layer for g, layer in layers.items() if g in modules}
    if not chosen:
        raise ConfigError(f"no input layer in sub-modules {list(modules or [])}; the ticket has {list(layers)}")
    alive = None
    for layer in chosen.values():
        mask = masks[layer]
        if mask.dim() != 2:
            raise ConfigError(f"{layer} is a convolution: its filters see every pixel, so no input is cut off "
                              "and there is no input mask to transfer (use an MLP)")
        column_alive = mask.bool().any(0)
        alive = column_alive if alive is None else alive | column_alive
    return alive.nonzero().flatten().tolist()


def ticket_inputs(tracking_uri: str, settings: TransferSettings) -> list[int]:
    """The inputs kept by level ``settings.level`` of the chain ``settings.ticket``."""
    store = ChainStore.of_run(tracking_uri, settings.ticket)
    runs = store.finished_runs()
    if settings.level not in runs:
        raise ConfigError(f"chain {settings.ticket} has no finished level {settings.level}; "
                          f"finished levels: {sorted(runs)}")
    masks = store.load(runs[settings.level].info.run_id, "ticket.pt")["masks"]
    return kept_inputs(masks, settings.modules)


def transfer_tags(settings: TransferSettings, seed: int | None = None) -> dict[str, str]:
    """The MLflow tags of a transfer's fits; with ``seed``, of one fit (used to skip fits already finished)."""
    tags = {"lth.role": "transfer", "ticket": settings.ticket, "level": str(settings.level),
            "modules": ",".join(settings.modules) if settings.modules else "all"}
    if seed is not None:
        tags.update(inputs=settings.arm, seed=str(seed))
    return tags


def transfer_experiment(experiment: str) -> str:
    """Where the transfer fits of a config's experiment go."""
    return f"{experiment}/transfer"


def describe_inputs(env_id: str, keep: list[int], env_kwargs: dict[str, Any]) -> str:
    """The kept inputs by name for vector observations (``pole angle, ...``), else ``n of N``."""
    obs_shape = env_shapes(env_id, **env_kwargs)[0]
    if len(obs_shape) == 1:
        names = input_names(env_id, obs_shape)
        return ", ".join(names[i] for i in keep) or "none"
    return f"{len(keep)} of {int(np.prod(obs_shape))}"


def finished_fit(tracking_uri: str, experiment: str, tags: Mapping[str, str]) -> bool:
    """Whether a finished run with exactly these tags exists in ``experiment``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    return bool(client.search_runs([found.experiment_id], f"{tag_query(tags)} and attributes.status = 'FINISHED'"))


@dataclass
class Curve:
    """One fit's ``eval/return`` against env frames."""

    arm: str
    seed: int
    frames: list[int]
    returns: list[float]
    kept: str


def load_curves(tracking_uri: str, experiment: str, settings: TransferSettings) -> list[Curve]:
    """The learning curves of the finished fits of one transfer (both arms, every seed)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"no experiment {experiment!r} in {tracking_uri}")
    query = f"{tag_query(transfer_tags(settings))} and attributes.status = 'FINISHED'"
    curves = []
    for run in client.search_runs([found.experiment_id], query, max_results=10_000):
        history = sorted(client.get_metric_history(run.info.run_id, "eval/return"), key=lambda m: m.step)
        tags = run.data.tags
        curves.append(Curve(tags["inputs"], int(tags["seed"]), [m.step for m in history],
                            [m.value for m in history], tags.get("kept_inputs", "all")))
    if not curves:
        raise ConfigError(f"no finished transfer fits of chain {settings.ticket} level {settings.level} "
                          f"in {experiment!r}")
    return curves


def plot_curves(curves: list[Curve], path: Path, title: str) -> list[str]:
    """Mean ± 1 sd of the eval return per arm, on the frames every seed evaluated at; returns a Markdown table."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = ["| inputs | kept | seeds | best return (mean ± sd) | return averaged over the evaluations (mean ± sd) | "
            "final return (mean ± sd) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for arm in ARMS:
        group = [c for c in curves if c.arm == arm and c.frames]
        if not group:
            continue
        frames = sorted(set.intersection(*(set(c.frames) for c in group)))
        at = [dict(zip(c.frames, c.returns)) for c in group]
        stats = [mean_sd([a[f] for a in at]) for f in frames]
        mean, sd = np.array([m for m, _ in stats]), np.array([s for _, s in stats])
        label = "all inputs" if arm == "all" else f"ticket inputs ({group[0].kept})"
        line, = ax.plot(frames, mean, label=f"{label}, n={len(group)}")
        ax.fill_between(frames, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        best = mean_sd([max(c.returns) for c in group])
        average = mean_sd([float(np.mean(c.returns)) for c in group])
        final = mean_sd([c.returns[-1] for c in group])
        rows.append(f"| {arm} | {group[0].kept} | {len(group)} | {best[0]:.1f} ± {best[1]:.1f} | "
                    f"{average[0]:.1f} ± {average[1]:.1f} | {final[0]:.1f} ± {final[1]:.1f} |")
    ax.set_xlabel("environment frames")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return rows


def transfer_report(tracking_uri: str, experiment: str, settings: TransferSettings, out: Path,
                    log_to_mlflow: bool = True) -> Path:
    """Write ``learning_curves.png`` and ``summary.md`` for one transfer to ``out`` (and MLflow)."""
    curves = load_curves(tracking_uri, experiment, settings)
    ticket, level = settings.ticket, settings.level
    out.mkdir(parents=True, exist_ok=True)
    title = f"Dense agents on all inputs vs the inputs of ticket level {level} (mean ± 1 sd)"
    rows = plot_curves(curves, out / "learning_curves.png", title)
    summary = out / "summary.md"
    summary.write_text("\n".join([
        f"# Input-mask transfer: {experiment}", "",
        f"Ticket: chain `{ticket}`, level {level}; kept inputs: those with a weight left in the input layer of "
        f"{', '.join(settings.modules) if settings.modules else 'any pruned sub-module'}. "
        f"Seeds: {sorted({c.seed for c in curves})}.", "",
        "![learning curves](learning_curves.png)", "", *rows, ""]))
    if log_to_mlflow:
        log_folder(tracking_uri, experiment, out, f"transfer report, level {level}",
                   {**transfer_tags(settings), "lth.role": "report"})
    return summary
