"""Populations: how many chains train together as one batched network, and the model and data of a population
whose member k is what seed k alone would train (initial weights, env seeds)."""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import lightning as L
import torch

from lth.modules import AgentModule
from lth.rl.batched import member_tensors, write_member
from lth.study.chains import Study
from lth.study.settings import ImpSettings


def population_size(study: Study, settings: ImpSettings, chains: int) -> int:
    """Chains per population: ``--population``, else all of them as far as their replay buffers fit in half the
    memory available now; 1 for a model that cannot batch members or a branch study (its masks come from a stored
    chain, one chain at a time)."""
    if "members" not in inspect.signature(type(study.model)).parameters or settings.branch_from:
        return 1
    if study.population:
        return min(chains, study.population)
    per_member = replay_bytes(study.datamodule, study.model.obs_shape)
    fits = chains if per_member == 0 else max(1, int(0.5 * available_memory() // per_member))
    if fits < chains:
        print(f"populations of {fits} chains: each member's replay buffer takes {per_member / 2**30:.1f} GiB "
              f"(set --population to choose)", flush=True)
    return min(chains, fits)


def replay_bytes(datamodule: L.LightningDataModule, obs_shape: tuple[int, ...]) -> int:
    """The memory one member's full replay buffer takes (float32 observation and next observation per
    transition, plus its small entries); 0 for data without a buffer."""
    size = datamodule.hparams.get("buffer_size", 0)
    return int(size * (2 * 4 * math.prod(obs_shape) + 64))


def available_memory() -> int:
    """Bytes of memory available for new work now: Linux's ``MemAvailable`` (free and reclaimable), else the
    free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def population_model(model: AgentModule, seeds: list[int]) -> AgentModule:
    """A model of ``len(seeds)`` members, member k holding the initial weights ``model``'s class and
    hyperparameters give under seed k (what ``lth imp --seeds k`` alone starts from)."""
    hparams = _constructor_args(model)
    population = type(model)(**{**hparams, "members": len(seeds)})
    params = dict(population.named_parameters())
    for k, seed in enumerate(seeds):
        write_member(params, k, member_tensors(dict(_initial_agent(type(model), hparams, seed).named_parameters()), 0))
    return population


def _initial_agent(cls: type[AgentModule], hparams: dict[str, Any], seed: int) -> AgentModule:
    with torch.random.fork_rng(devices=[]):
        L.seed_everything(seed, verbose=False)  # as the CLI seeds before it builds the model
        return cls(**hparams)


def population_data(datamodule: L.LightningDataModule, seeds: list[int]) -> L.LightningDataModule:
    """``datamodule``'s class and hyperparameters for these members (a list of seeds: one per member); itself when
    it is already theirs (so what only its constructor was given, e.g. an expert loader, stays)."""
    own = datamodule.hparams.get("seed")
    if own == seeds or [own] == seeds:
        return datamodule
    return type(datamodule)(**{**_constructor_args(datamodule), "seed": list(seeds)})


def _constructor_args(obj: L.LightningModule | L.LightningDataModule) -> dict[str, Any]:
    """The saved hyperparameters that are ``obj``'s constructor arguments (not the CLI's ``_class_path``)."""
    names = inspect.signature(type(obj)).parameters
    return {k: v for k, v in obj.hparams.items() if k in names}
