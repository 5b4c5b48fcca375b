"""The Ray-wide lock of a server store's claims (:mod:`lth.store.claims`), and the sqlite file lock left as it was."""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from lth.errors import ConfigError  # noqa: E402
from lth.store.chain_store import ChainStore  # noqa: E402
from lth.store.claims import lock_actor, ray_lock  # noqa: E402

SERVER = "http://example:5000"
TASKS, THREADS = 2, 4  # 8 critical sections at once, in two Ray workers


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One small local Ray for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_the_lock_actor_admits_one_holder_until_release_or_the_end_of_its_lease() -> None:
    actor = lock_actor()
    assert ray.get(actor.acquire.remote("k", "a", 60.0))
    assert not ray.get(actor.acquire.remote("k", "b", 60.0))
    assert ray.get(actor.acquire.remote("other", "b", 60.0))  # keys are independent
    assert not ray.get(actor.release.remote("k", "b"))  # b cannot free a's lock
    assert ray.get(actor.release.remote("k", "a"))
    assert ray.get(actor.acquire.remote("k", "b", 0.3))  # b holds it for 0.3 s, then "dies"
    assert not ray.get(actor.acquire.remote("k", "c", 60.0))
    time.sleep(0.4)
    assert ray.get(actor.acquire.remote("k", "c", 60.0))
    assert not ray.get(actor.release.remote("k", "b"))  # the dead holder's late release frees nothing
    with pytest.raises(ConfigError, match="waited 0 s for the Ray lock"), ray_lock("k", timeout_s=0.2):
        pass
    assert ray.get(actor.release.remote("k", "c"))
    assert lock_actor()._actor_id == actor._actor_id  # one named actor, found again


@ray.remote
class Barrier:
    """Lets the tasks start their critical sections together, so that unlocked ones overlap."""

    def __init__(self) -> None:
        self.arrived = 0

    def arrive(self) -> None:
        self.arrived += 1

    def count(self) -> int:
        return self.arrived


@ray.remote(num_cpus=1)
def increment(counter: Path, barrier: object, locked: bool) -> None:
    """In :data:`THREADS` threads: read the counter, wait 50 ms, write it plus one, under ChainStore._locked of a
    server store or not (threads, not more tasks: each Ray worker imports Lightning, seconds of CPU)."""

    def section() -> None:
        ray.get(barrier.arrive.remote())
        while ray.get(barrier.count.remote()) < TASKS * THREADS:
            time.sleep(0.01)
        with ChainStore._locked(SERVER) if locked else nullcontext():
            value = int(counter.read_text())
            time.sleep(0.05)
            written = counter.with_name(f"{counter.name}.{uuid.uuid4().hex}")
            written.write_text(str(value + 1))
            os.replace(written, counter)  # atomic: an unlocked reader never sees a half-written file

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: section(), range(THREADS)))  # a thread's error fails the task


def _count_increments(counter: Path, locked: bool) -> int:
    counter.write_text("0")
    barrier = Barrier.remote()
    ray.get([increment.remote(counter, barrier, locked) for _ in range(TASKS)])
    return int(counter.read_text())


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
def test_concurrent_ray_tasks_under_a_server_stores_lock_lose_no_update(tmp_path: Path, locked: bool) -> None:
    count = _count_increments(tmp_path / "counter", locked)
    if locked:
        assert count == TASKS * THREADS
    else:  # the race the lock prevents: overlapping sections lose updates
        assert count < TASKS * THREADS


def test_a_sqlite_store_keeps_its_file_lock_with_ray_running(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    entered = threading.Event()

    def enter() -> None:
        with ChainStore._locked(uri):
            entered.set()

    with open(tmp_path / "mlflow.db.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=enter)
        thread.start()
        assert not entered.wait(0.3)  # blocked by the file lock another holder has
    assert entered.wait(5)  # closing the file freed it
    thread.join()
