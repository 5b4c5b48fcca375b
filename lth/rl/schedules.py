"""Schedules in env frames (exploration epsilon, prioritized-replay beta)."""

from __future__ import annotations


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """``start`` at ``t = 0``, moving linearly to ``end`` at ``t = duration`` and staying there."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, max(0, t) / duration)
