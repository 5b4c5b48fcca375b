"""The measures docs/RESULTS.md's verdicts rest on, on made-up chains: "keeping 95%" above a task's worst return,
and the level at which an Acrobot actor sees only the angular velocities."""

from __future__ import annotations

import sys
from pathlib import Path

from lth.report import Chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import results_acrobot_inputs as acrobot  # noqa: E402 - docs/ is not a package
import results_tickets as tickets  # noqa: E402


def test_sparsest_kept_counts_above_the_floor() -> None:
    # Acrobot: dense -80; 95% of the 420 above -500 is 399, i.e. a return of -101 still counts, -102 does not.
    curve = {0: (1.0, -80.0, 0.0), 1: (0.8, -101.0, 0.0), 2: (0.64, -102.0, 0.0), 3: (0.512, -80.0, 0.0)}
    assert tickets.sparsest_kept(curve, floor=-500.0) == (1, 0.8)
    assert tickets.sparsest_kept(curve) == (0, 1.0)  # 95% of -80 is -76: any worse return fails at once
    cartpole = {0: (1.0, 500.0, 0.0), 1: (0.8, 475.0, 0.0), 2: (0.64, 474.0, 0.0)}
    assert tickets.sparsest_kept(cartpole) == (1, 0.8)


def _chain(alive: dict[int, tuple[int, ...]], returns: dict[int, float]) -> Chain:
    """A chain whose actor has ``alive[level]`` first-layer weights per Acrobot input."""
    chain = Chain("e", "1", "run", "mask/weights", 0, "Acrobot-v1")
    for level, counts in alive.items():
        chain.levels[level] = {f"inputs/actor/{n}": c for n, c in zip(acrobot.TRIG + acrobot.VELOCITY, counts,
                                                                          strict=True)}
        chain.levels[level]["ticket/best_return"] = returns[level]
    return chain


def test_velocity_only_level_and_verdict() -> None:
    chain = _chain({0: (9, 9, 9, 9, 9, 9), 1: (0, 3, 0, 0, 9, 9), 2: (0, 0, 0, 0, 9, 8), 3: (0, 0, 0, 0, 0, 5)},
                   {0: -80.0, 1: -85.0, 2: -90.0, 3: -400.0})
    assert acrobot.velocity_only_level(chain) == 2
    assert acrobot.kept_level(chain) == 2
    assert chain.dead_from("cos theta1") == 1 and chain.dead_from("theta1 velocity") == 3
    assert chain.dead_from("theta2 velocity") is None
    text = acrobot.claim_verdict([chain])
    assert "In 1 of 1 seeds all four cos/sin" in text and "agrees with the paper's claim" in text
    assert "in 1 of those it still solves the task" in text  # -90 at the velocity-only level 2
    assert "a velocity input dies too" in text
    never = _chain({0: (9, 9, 9, 9, 9, 9), 1: (9, 0, 0, 0, 9, 9)}, {0: -80.0, 1: -80.0})
    assert acrobot.velocity_only_level(never) is None
    assert "does not reproduce" in acrobot.claim_verdict([never])
    # The transfer copies the first seed that solves the task on the velocities alone; else seed order's first.
    failing = _chain({0: (9, 9, 9, 9, 9, 9), 1: (0, 0, 0, 0, 9, 9)}, {0: -80.0, 1: -300.0})
    assert acrobot.transfer_source([never, failing, chain])[:2] == (chain, 2)
    assert acrobot.transfer_source([never, failing])[:2] == (never, 1)


def _stats(dense: float, sparse: dict[str, float]) -> dict[str, dict]:
    """Per condition: a dense level and the mean return at density <= 0.1 (what :func:`tickets.verdict` reads)."""
    return {c: {"curve": {0: (1.0, dense, 0.0)}, "sparse": s, "kept": (3, 0.5)} for c, s in sparse.items()}


def test_ticket_verdict_tells_ties_and_orderings_apart() -> None:
    def verdict(weights: float, permuted: float, pp: float, rr: float, floor: float = 0.0) -> str:
        return tickets.verdict(_stats(500.0 if floor == 0 else -80.0, {
            "mask/weights": weights, "mask/permuted": permuted, "permuted/permuted": pp, "random/reinit": rr}), floor)

    assert "the paper's claim holds" in verdict(480, 470, 100, 50)
    assert "even scores above mask/weights" in verdict(300, 450, 100, 50)
    assert "Partly as the paper claims" in verdict(450, 300, 100, 50)
    assert "do not beat both baselines" in verdict(450, 100, 300, 50)
    # Acrobot distillation: all four within 10% of the 420 above the floor of -500: a tie, not a refutation.
    assert "does not prune far enough" in verdict(-78.2, -78.1, -77.7, -81.9, floor=-500.0)
