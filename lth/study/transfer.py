"""Input-mask transfer (paper Figures 5 and 8, bottom): which inputs a ticket keeps, and what one transfer fit is.

``lth transfer`` reads the masks of one level of a stored IMP chain, keeps the observation inputs that still
have a weight in an input layer of the ticket, and trains dense agents, seed by seed, once on those inputs
(every other input zeroed, see :class:`lth.envs.GymVectorEnv`) and once on all inputs, in the experiment
``<config experiment>/transfer``. This module picks the inputs and turns a parsed fit config into one arm's
fit (its env's inputs, its MLflow experiment, run name and tags); :func:`lth.cli.runner.run_transfer` runs the
fits and :mod:`lth.report.transfer` draws their learning curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lth.analysis.inputs import input_layers, input_names
from lth.envs import env_shapes
from lth.errors import ConfigError
from lth.store.chain_store import ChainStore

if TYPE_CHECKING:
    from jsonargparse import Namespace

#: The two arms of a transfer: every input, or only the ticket's surviving inputs.
ARMS = ("all", "ticket")


@dataclass
class TransferSettings:
    """``--transfer.*``: which ticket's input mask a fit uses, and which arm the fit is."""

    ticket: str  # parent run id of an IMP chain (``lth imp`` prints it; the MLflow UI shows it)
    level: int  # the chain level whose masks are transferred
    modules: list[str] | None = None  # input layers of these sub-modules (e.g. [actor]); None = every pruned one
    arm: Literal["all", "ticket"] = "ticket"  # "ticket": only the surviving inputs; "all": every input (dense)


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


def ticket_level_run(tracking_uri: str, settings: TransferSettings) -> str:
    """The finished level run of ``settings``' ticket and level, or a :class:`ConfigError` naming the valid ones.

    Checked before any transfer fit trains: the ticket must be an IMP chain's parent run in the config's store,
    and ``0 <= level <=`` the chain's last finished level.
    """
    try:
        store = ChainStore.of_run(tracking_uri, settings.ticket)
    except ConfigError as exc:
        raise ConfigError(f"ticket: {exc} (lth imp prints a chain's run id)") from exc
    runs = store.finished_runs()
    if settings.level not in runs:
        valid = f"an integer in [0, {max(runs)}]" if runs else "none: the chain has no finished level"
        raise ConfigError(f"level must be a finished level of chain {settings.ticket}: {valid}, got {settings.level}"
                          + (f" (finished levels: {sorted(runs)})" if runs and sorted(runs) != list(range(len(runs)))
                             else ""))
    return runs[settings.level].info.run_id


def ticket_inputs(tracking_uri: str, settings: TransferSettings) -> list[int]:
    """The inputs kept by level ``settings.level`` of the chain ``settings.ticket``."""
    run_id = ticket_level_run(tracking_uri, settings)
    masks = ChainStore.of_run(tracking_uri, settings.ticket).load(run_id, "ticket.pt")["masks"]
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


def configure_fit(config: Namespace, logger: Namespace) -> TransferSettings:
    """Make a parsed fit config (``--transfer.*``, seed applied) one arm's fit; ``logger``: its MLFlowLogger args."""
    settings = TransferSettings(**config.transfer.as_dict())
    if settings.arm not in ARMS:
        raise ConfigError(f"transfer.arm must be one of {list(ARMS)}, got {settings.arm!r}")
    tags = transfer_tags(settings, config.seed_everything)
    keep = ticket_inputs(logger.tracking_uri, settings)  # both arms: a bad ticket, level or modules stops here
    if settings.arm == "ticket":
        env_kwargs = {**(config.data.init_args.env_kwargs or {}), "keep_inputs": keep}
        config.data.init_args.env_kwargs = env_kwargs
        config.model.init_args.env_kwargs = env_kwargs
        tags["kept_inputs"] = describe_inputs(config.data.init_args.env_id, keep, env_kwargs)
    logger.experiment_name = transfer_experiment(logger.experiment_name)
    logger.run_name = f"{settings.arm} inputs, seed {config.seed_everything}"
    logger.tags = {**(logger.tags or {}), **tags}
    return settings
