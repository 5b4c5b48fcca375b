"""Where a study's units run (``lth imp --executor``): one after another in this process, or as Ray tasks.

A unit is one population of chains (:func:`lth.study.population.population_size`). It is idempotent: it opens its chains with
resume and continues from what MLflow holds, so running it again after a crash (a worker killed, out of memory)
finishes the same chains with the same masks and no duplicate runs. :class:`RayExecutor` relies on that: each unit
is a Ray task, retried when its worker dies or it raises anything but a :class:`ConfigError`, and waiting while
another live process holds one of its chains (:func:`run_unit`).

``registry`` maps ``--executor``'s names to the executors; each has ``map_units(fn, units, names)``. This module
imports nothing heavy (Ray, Lightning and lth's study code load inside the calls).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from lth.errors import ConfigError

if TYPE_CHECKING:
    from jsonargparse import Namespace

U = TypeVar("U")
R = TypeVar("R")


class LocalExecutor:
    """``--executor local``: the units one after another in this process (lth imp's default)."""

    remote: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Namespace, tracking_uri: str) -> LocalExecutor:
        """The executor of a parsed ``lth imp`` config; ``--ray.*`` options without ``--executor ray`` are an error."""
        if config.ray.address is not None or config.ray.cpus_per_unit != 1:
            raise ConfigError("--ray.address and --ray.cpus_per_unit need --executor ray")
        return cls()

    def map_units(self, fn: Callable[[U], R], units: Sequence[U], names: Sequence[str] | None = None) -> list[R]:
        """``fn`` of each unit, in order, here."""
        return [fn(unit) for unit in units]


@dataclass
class RayExecutor:
    """``--executor ray``: each unit is a Ray task (``cpus_per_unit`` CPUs), retried ``max_retries`` times when its
    worker dies or it fails with anything but a :class:`ConfigError`; the driver prints one line per finished unit.

    Without ``address`` it starts a local Ray on every CPU and stops it at the end; with one it connects (``auto``:
    the cluster ``ray start`` made on this machine). ``local_only`` (a sqlite store: one file on this machine)
    refuses a cluster with a node on another machine. The workers' own lines (each level's) reach the user through
    Ray's log forwarding, prefixed ``(run_unit pid=N)``: they are a study's only progress report, and the pid
    names the process to look at (or kill)."""

    address: str | None = None
    cpus_per_unit: int = 1
    local_only: bool = False
    max_retries: int = 3

    remote: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: Namespace, tracking_uri: str) -> RayExecutor:
        """The executor of a parsed ``lth imp`` config (``--ray.address``, ``--ray.cpus_per_unit``)."""
        return cls(config.ray.address, config.ray.cpus_per_unit, local_only=file_store(tracking_uri))

    def map_units(self, fn: Callable[[U], R], units: Sequence[U], names: Sequence[str] | None = None) -> list[R]:
        """``fn`` of each unit as Ray tasks, results in the units' order; a unit's :class:`ConfigError` stops all."""
        import ray
        import ray._private.ray_logging as ray_logging

        from lth.store.claims import lock_actor

        # Ray folds lines that differ only in numbers (the chains' level lines) into "... [repeated 3x across
        # cluster]" unless $RAY_DEDUP_LOGS=0, read when Ray is imported: TorchRL imports it before lth gets here.
        if os.environ.get("RAY_DEDUP_LOGS", "0") == "0":
            ray_logging.RAY_DEDUP_LOGS = False
        if not sys.stdout.isatty():
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in a log file (read at each print)
        started = not ray.is_initialized()
        if started and self.address is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        elif started:
            ray.init(address=self.address, logging_level=logging.WARNING)
        pending: dict[Any, int] = {}
        try:
            if self.local_only:
                _check_one_machine(ray)
            else:
                lock_actor()  # before the units race to create it: they lock a server store's claims with it
            task = ray.remote(num_cpus=self.cpus_per_unit, max_retries=self.max_retries, retry_exceptions=True,
                              runtime_env={"env_vars": forwarded_env()})(run_unit)
            pending = {task.remote(fn, unit): k for k, unit in enumerate(units)}
            results: dict[int, R] = {}
            begin = time.monotonic()
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ref)
                outcome = ray.get(ref)
                if isinstance(outcome, Refused):
                    raise ConfigError(outcome.message)
                results[k] = outcome
                name = f": {names[k]}" if names else ""
                print(f"unit {k + 1}/{len(units)} finished{name} ({len(results)}/{len(units)} done, "
                      f"{time.monotonic() - begin:.0f} s)", flush=True)
            return [results[k] for k in range(len(units))]
        finally:
            for ref in pending:  # on an error: the other units stop too (they resume on the next run)
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH")
"""The MLflow client's variables a Ray unit gets from the driver's environment, so that a worker node needs no
credentials of its own (``ray start --address`` is all): they travel in the tasks' runtime_env."""


def forwarded_env() -> dict[str, str]:
    """The driver's values of :data:`FORWARDED_ENV` that are set."""
    return {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}


registry: dict[str, type[LocalExecutor] | type[RayExecutor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(config: Namespace, tracking_uri: str) -> LocalExecutor | RayExecutor:
    """The executor ``--executor`` names, set up from the parsed ``lth imp`` config."""
    return registry[config.executor].from_config(config, tracking_uri)


def file_store(tracking_uri: str) -> bool:
    """Whether an MLflow store is a file on this machine (sqlite or a folder), not a server or a database server."""
    return tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri


def _check_one_machine(ray: Any) -> None:
    """Refuse a Ray cluster with a node on another machine: their workers cannot reach this machine's store."""
    here = ray.util.get_node_ip_address()
    elsewhere = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} - {here})
    if elsewhere:
        raise ConfigError(f"--executor ray with a sqlite store needs every Ray node on this machine ({here}); nodes "
                          f"{elsewhere} are not: use an MLflow server store (lth.store.server) for a cluster")


@dataclass
class Refused:
    """A unit's :class:`ConfigError`, returned instead of raised so that Ray does not retry it."""

    message: str


BUSY_POLL_S = 2.0
"""Seconds between a waiting Ray unit's looks at the claim of a chain that another live process trains."""


def run_unit(fn: Callable[[U], R], unit: U) -> R | Refused:
    """One unit in a Ray worker: ``fn(unit)``, or its configuration problem as a :class:`Refused`.

    A chain claimed by another live process (the same study launched twice, or Ray retrying a unit whose old worker
    still runs) is not an error here: the unit waits until the claim is released (the other process finished the
    chain: the retry finds it done) or goes stale (that process died: the retry takes it over), then runs again."""
    from lth.store.claims import ChainBusyError

    waited = False
    while True:
        try:
            return fn(unit)
        except ChainBusyError as exc:
            if not waited:
                print(f"waiting for another process: {exc}", flush=True)
                waited = True
            exc.wait(BUSY_POLL_S)
        except ConfigError as exc:
            return Refused(str(exc))
