"""A lock shared by a Ray cluster, for :meth:`lth.chain_store.ChainStore._locked` on an MLflow server store (issue 14).

An http(s) MLflow store has no lock of its own, so two processes could both read a chain as unclaimed (or absent)
and both claim (or create) it. When Ray is initialised in the process (the workers of ``lth imp --executor ray``),
the critical section is serialised by one named, detached actor of the cluster, :class:`StoreLocks`, per key (the
tracking URI). A holder gets a lease, not a lock for ever: a process killed inside the section (SIGKILL) blocks the
others only until its lease ends. This module imports nothing heavy; Ray loads inside the calls.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lth.errors import ConfigError

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
