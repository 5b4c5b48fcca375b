"""What the ``lth`` command prints besides its own lines: Lightning's INFO chatter and C libraries' prints, quieted.

A study runs many fits, and Lightning repeats its tips and device banners for each; :func:`quiet` hides them
(``lth --verbose`` shows them). pybullet's C code prints ``argv[0]=`` to the process's stdout whenever an env copy
connects to its physics server, out of Python's reach: :func:`silenced_fd_output` silences it at the OS level.
This module imports nothing heavy (the ``lth`` command's help must not load Lightning).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: The loggers of Lightning's per-fit INFO lines, hidden by default.
LIGHTNING_CHATTER = (
    "lightning.pytorch.utilities.rank_zero",  # litlogger/litmodels tips, "GPU/TPU available", "`Trainer.fit` stopped"
    "lightning.fabric.utilities.rank_zero",  # the same ``rank_zero_info`` when Fabric's module logger is the active one
    "lightning.pytorch.accelerators.cuda",  # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [...]"
    "lightning.fabric.utilities.seed",  # "Seed set to 0"
)

VERBOSE_HELP = "show Lightning's info lines (tips, 'GPU available', '`Trainer.fit` stopped'), hidden by default"


def quiet(verbose: bool = False) -> None:
    """Hide Lightning's INFO chatter (warnings still show), or with ``verbose`` let Lightning's own levels apply.
    Quiet also stops MLflow's "View run ... at: URL" lines, two per run ended on a server store."""
    for name in LIGHTNING_CHATTER:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if not verbose:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _flush_all() -> None:
    """Write out what Python and C hold in their buffers, so it reaches the file descriptor it was meant for."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    ctypes.CDLL(None).fflush(None)  # C stdio buffers (fully buffered when stdout is a pipe)


@contextmanager
def silenced_fd_output() -> Iterator[None]:
    """File descriptors 1 and 2 point at /dev/null inside the block: silences what C code prints (pybullet's
    ``argv[0]=``), which ``contextlib.redirect_stdout`` cannot reach. Exceptions still propagate."""
    _flush_all()
    saved = (os.dup(1), os.dup(2))
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_all()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


__all__ = ["LIGHTNING_CHATTER", "VERBOSE_HELP", "quiet", "silenced_fd_output"]
