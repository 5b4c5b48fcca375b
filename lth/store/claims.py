"""Claims: one process trains a chain (:class:`lth.store.chain_store.ChainStore`), and proves it is alive.

A claim is four tags of the chain's parent run (:data:`OWNER`, :data:`HOST`, :data:`PID`, :data:`HEARTBEAT`),
refreshed by a :class:`Heartbeat` thread; a claim is stale after :data:`CLAIM_TIMEOUT` seconds without a beat,
or at once when its process is gone from this host. Claims are taken and dropped inside :func:`locked`.

The lock shared by a Ray cluster, for an MLflow server store (issue 14):

An http(s) MLflow store has no lock of its own, so two processes could both read a chain as unclaimed (or absent)
and both claim (or create) it. When Ray is initialised in the process (the workers of ``lth imp --executor ray``),
the critical section is serialised by one named, detached actor of the cluster, :class:`StoreLocks`, per key (the
tracking URI). A holder gets a lease, not a lock for ever: a process killed inside the section (SIGKILL) blocks the
others only until its lease ends. This module imports nothing heavy; Ray loads inside the calls.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lth.errors import ConfigError
from lth.store.tracking import creation_lock

OWNER, HOST, PID, HEARTBEAT = "lth.claim.owner", "lth.claim.host", "lth.claim.pid", "lth.claim.heartbeat"

ACTOR_NAME = "lth-store-locks"
NAMESPACE = "lth"
LEASE_S = 60.0
"""How long a holder keeps the lock without releasing it; the section takes well under a second."""
TIMEOUT_S = 120.0
"""How long a client waits for the lock before it gives up with a :class:`ConfigError`."""
POLL_S = 0.02


class StoreLocks:
    """The Ray actor holding the locks: per key, the holder and when its lease ends (the actor's own clock)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, holder: str, lease_s: float) -> bool:
        """Take (or renew) ``key`` for ``holder`` for ``lease_s`` seconds, unless another holder's lease runs."""
        now = time.monotonic()
        current = self._held.get(key)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._held[key] = (holder, now + lease_s)
        return True

    def release(self, key: str, holder: str) -> bool:
        """Free ``key`` if ``holder`` holds it (False when its lease ended and another took it)."""
        if self._held.get(key, ("", 0.0))[0] != holder:
            return False
        del self._held[key]
        return True


def ray_active() -> bool:
    """Whether Ray is initialised in this process (without importing Ray when nothing did)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def lock_actor() -> Any:
    """The cluster's :class:`StoreLocks` actor, created by the first caller (detached: it outlives its creator)."""
    import ray

    options = dict(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0)
    try:
        return ray.remote(StoreLocks).options(**options).remote()
    except ValueError:  # another process created it between our lookup and our creation
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)


@contextmanager
def ray_lock(key: str, lease_s: float = LEASE_S, timeout_s: float = TIMEOUT_S) -> Iterator[None]:
    """Hold ``key`` in the cluster's lock actor for the block, polling until free; a :class:`ConfigError` after
    ``timeout_s`` seconds."""
    import ray

    actor, holder = lock_actor(), uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while not ray.get(actor.acquire.remote(key, holder, lease_s)):
        if time.monotonic() > deadline:
            raise ConfigError(f"waited {timeout_s:.0f} s for the Ray lock of the MLflow store {key!r} (actor "
                              f"{NAMESPACE}/{ACTOR_NAME}); another process holds it: is one stuck?")
        time.sleep(POLL_S)
    try:
        yield
    finally:
        ray.get(actor.release.remote(key, holder))


CLAIM_TIMEOUT = 600.0
"""Seconds without a heartbeat after which another process may take over a chain's claim."""
HEARTBEAT_INTERVAL = 60.0
"""Seconds between the heartbeats of a chain's claim (a daemon thread, plus one at every level boundary)."""


class ChainBusyError(ConfigError):
    """Another live process holds the claim of the chain this one was asked to train (run ``parent_id``)."""

    def __init__(self, message: str, tracking_uri: str = "", parent_id: str = "") -> None:
        super().__init__(message)
        self.tracking_uri, self.parent_id = tracking_uri, parent_id

    def wait(self, poll_s: float) -> None:
        """Block until nobody holds the chain's claim or its holder is stale (what :meth:`lth.store.chain_store.ChainStore.open`
        takes over), reading only the chain run's tags every ``poll_s`` seconds."""
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri)
        while True:
            tags = client.get_run(self.parent_id).data.tags
            if not tags.get(OWNER) or claim_is_stale(tags):
                return
            time.sleep(poll_s)


class Heartbeat(threading.Thread):
    """Calls ``beat`` (refresh a claim) every :data:`HEARTBEAT_INTERVAL` seconds until stopped or the claim is lost
    (``beat`` raises :class:`ChainBusyError`).

    A thread rather than a Lightning callback: the heartbeat says "this process is alive", which must hold
    through long evaluations, env resets and artifact uploads as much as through training steps.
    """

    def __init__(self, name: str, beat: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.beat = beat
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_INTERVAL):
            try:
                self.beat()
            except ChainBusyError:
                return  # lost: the main thread's next write finds out and stops
            except Exception:  # a busy database now and then: the next beat retries
                logging.getLogger(__name__).debug("claim heartbeat failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        if self is not threading.current_thread():
            self.join(timeout=30)


def utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _parse_utc(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time (0 if it does not parse: then the claim is stale)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def heartbeat_age(tags: Mapping[str, str]) -> float:
    """Seconds since the claim's last heartbeat (a claim without a readable one is as old as the epoch)."""
    return time.time() - _parse_utc(tags.get(HEARTBEAT, ""))


def claim_is_stale(tags: Mapping[str, str]) -> bool:
    """No heartbeat for :data:`CLAIM_TIMEOUT` seconds, or the claiming process is gone from this host."""
    if heartbeat_age(tags) > CLAIM_TIMEOUT:
        return True
    if tags.get(HOST) != socket.gethostname():
        return False
    try:
        os.kill(int(tags.get(PID, "")), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError, OverflowError):
        return False
    return False

def claim_tags(owner: str) -> dict[str, str]:
    """The tags of a claim by ``owner`` (an id per opening) from this process, beating now."""
    return {OWNER: owner, HOST: socket.gethostname(), PID: str(os.getpid()), HEARTBEAT: utc_now()}


@contextmanager
def locked(tracking_uri: str) -> Iterator[None]:
    """The critical section of claims: the store's file lock for sqlite; for a server (``http(s)://``), the Ray
    cluster's lock actor (:func:`ray_lock`) when Ray is initialised in this process (the workers of ``--executor
    ray``), else nothing, so two launches without Ray can still race (issue 14)."""
    if tracking_uri.startswith(("http://", "https://")) and ray_active():
        with ray_lock(tracking_uri):
            yield
        return
    with creation_lock(tracking_uri):
        yield
