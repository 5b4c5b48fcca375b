"""The measures docs/RESULTS.md's verdicts rest on, on made-up chains: "keeping 95%" above a task's worst return,
and the level at which an Acrobot actor sees only the angular velocities."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from lth.envs.mazegrid import BOARD, CHANNELS, channel_support
from lth.report import Chain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
import make_results  # noqa: E402 - docs/ is not a package
import results_acrobot_inputs as acrobot  # noqa: E402
import results_mazegrid as mazegrid  # noqa: E402
import results_minatar as minatar  # noqa: E402
import results_pybullet as pybullet  # noqa: E402
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
        chain.levels[level]["density"] = 0.8 ** level  # every level run logs its density
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


def _stats(dense: float, sparse: dict[str, float], se: float = 0.0) -> dict[str, dict]:
    """Per condition: a dense level, the mean return at density <= 0.1 and its standard error over seeds (what
    :func:`tickets.verdict` reads)."""
    return {c: {"curve": {0: (1.0, dense, 0.0)}, "sparse": s, "sparse_se": se, "kept": (3, 0.5)}
            for c, s in sparse.items()}


def test_ticket_verdict_tells_ties_and_orderings_apart() -> None:
    def verdict(weights: float, permuted: float, pp: float, rr: float, floor: float = 0.0) -> str:
        return tickets.verdict(_stats(500.0 if floor == 0 else -80.0, {
            "mask/weights": weights, "mask/permuted": permuted, "permuted/permuted": pp, "random/reinit": rr}), floor)

    assert "the paper's claim holds" in verdict(480, 470, 100, 50)
    assert "even scores above mask/weights" in verdict(300, 450, 100, 50)
    assert "Partly as the paper claims" in verdict(450, 300, 100, 50)
    assert "do not beat both baselines" in verdict(300, 100, 450, 50)
    mazegrid_50k = _stats(5.2, {"mask/weights": 6.4, "mask/permuted": 4.0, "permuted/permuted": 4.3,
                                "random/reinit": 4.9})
    assert "Only the ticket itself beats both baselines" in tickets.verdict(mazegrid_50k)
    # Breakout at density 0.035: mask/permuted 0.1 above the baselines at a random policy's level is no lead.
    breakout = _stats(7.4, {"mask/weights": 2.7, "mask/permuted": 0.7, "permuted/permuted": 0.6,
                            "random/reinit": 0.6})
    assert "Only the ticket itself beats both baselines" in tickets.verdict(breakout)
    assert "Every difference above exceeds two standard errors" in verdict(480, 470, 100, 50)


def test_unresolved_names_the_differences_within_two_standard_errors() -> None:
    # MazeGrid RGB at 2 seeds: the ticket is 0.2 above permuted/permuted with a standard error of 0.14 each.
    stats = _stats(4.5, {"mask/weights": 5.0, "mask/permuted": 3.8, "permuted/permuted": 4.8, "random/reinit": 4.2},
                   se=0.15)
    text = tickets.unresolved(stats)
    assert "mask/weights - permuted/permuted = 0.2 ± 0.2" in text
    assert "mask/permuted - random/reinit = -0.4 ± 0.2" in text
    assert "mask/weights - random/reinit" not in text and "mask/weights - mask/permuted" not in text  # 0.8, 1.2
    assert "not resolved at this seed count" in tickets.verdict(stats)


def test_ticket_verdict_calls_a_tie_a_tie() -> None:
    def verdict(weights: float, permuted: float, pp: float, rr: float, floor: float = 0.0) -> str:
        return tickets.verdict(_stats(500.0 if floor == 0 else -80.0, {
            "mask/weights": weights, "mask/permuted": permuted, "permuted/permuted": pp, "random/reinit": rr}), floor)

    # Acrobot distillation: all four within 10% of the 420 above the floor of -500: a tie, not a refutation.
    assert "does not prune far enough" in verdict(-78.2, -78.1, -77.7, -81.9, floor=-500.0)
    # Hopper at 50% pruning per level: all four collapse together from ~500 to ~60: not a tie of tickets either.
    collapsed = verdict(59.1, 62.3, 65.4, 49.1)
    assert "fall together" in collapsed and "does not prune far enough" not in collapsed


def test_channel_masks_read_cells_on_and_off_each_maps_support() -> None:
    support = channel_support()
    mask = torch.zeros(4, support.size, dtype=torch.bool)
    planes = mask.view(4, *support.shape)
    enemy_a = CHANNELS.index("enemy_a")
    patrol = np.unravel_index(BOARD.patrols[0][:3], support.shape[1:])  # 3 of enemy A's cells, one unit each
    planes[0, enemy_a][patrol] = True
    planes[:, CHANNELS.index("agent")] = torch.from_numpy(~support[CHANNELS.index("agent")])  # walls only
    masks = mazegrid.channel_masks(mask, support)
    cells = len(set(BOARD.patrols[0].tolist()))
    assert masks["enemy_a"].on_support == 3 / cells and masks["enemy_a"].off_support == 0.0
    assert masks["enemy_a"].weights_kept == 3 / (4 * 200)
    assert masks["agent"].on_support == 0.0 and masks["agent"].off_support == 1.0
    assert masks["coin"] == mazegrid.ChannelMask(0.0, 0.0, 0.0)


def test_channel_verdict_checks_both_claims_per_seed() -> None:
    def level(enemy_off: float, agent_kept: float) -> dict[str, mazegrid.ChannelMask]:
        return {name: mazegrid.ChannelMask(agent_kept if name == "agent" else 0.1, 0.5,
                                           enemy_off if name in mazegrid.ENEMIES else 0.3) for name in CHANNELS}

    cut = {0: level(0.4, 0.5), 1: level(0.0, 0.4)}
    assert mazegrid.pruned_off_support(cut, "enemy_a") == 1
    text = mazegrid.channel_verdict([cut, cut])
    assert "enemy_a: 2 of 2 seeds (from level 1-1" in text and "The paper's claim holds" in text
    assert "The agent map is pruned least" in text
    uncut = {0: level(0.4, 0.05), 1: level(0.2, 0.05)}
    text = mazegrid.channel_verdict([uncut, uncut])
    assert "does not show here" in text and "not the one pruned least" in text
    assert "in 1 of 2 seeds" in mazegrid.channel_verdict([cut, uncut])


def test_breakout_cell_verdict_checks_the_paddle_row_and_the_bottom_rows() -> None:
    names = ("paddle", "ball", "trail", "brick")
    lit = np.ones((4, 10, 10), dtype=bool)
    lit[0, :9] = lit[1, 9] = lit[2, 9] = False  # as in Breakout: the paddle lives in the bottom row, the ball never
    per_seed = [{3: {name: mazegrid.ChannelMask(kept, 0.5, 0.0) for name, kept in zip(names, (0.3, 0.1, 0.05, 0.2))}}]
    kept = torch.zeros(4, 10, 10)
    kept[0, 9] = 0.2
    kept[1, :9] = kept[2, :9] = kept[3] = 0.1
    text = minatar.cell_verdict({3: kept}, lit, names, 3, per_seed)
    assert "only the paddle's row of the paddle channel survives holds" in text
    assert "lose their bottom row holds" in text and "No cell is cut yet" not in text
    assert "paddle 90/90 above its row and 0/10 in it; ball 10/10 in the bottom row and 0/90 above" in text
    assert "None of these cells is ever lit" in text
    assert "most first: paddle 0.300 ± 0.000, brick 0.200" in text
    kept[0, :9] = kept[1, 9] = kept[2, 9] = 0.05  # pruned faster than the rest, but no column cut yet
    text = minatar.cell_verdict({3: kept}, lit, names, 3, per_seed)
    assert "survives does not show at this depth" in text and "bottom row does not show at this depth" in text
    assert "No cell is cut yet (the sparsest keeps 5.0%" in text
    assert "leans the paper's way" in text
    kept[0, :9] = 0.3  # the paddle's never-lit cells keep more than its row
    assert "does not lean the paper's way yet" in minatar.cell_verdict({3: kept}, lit, names, 3, per_seed)
    kept[0, :4] = kept[1, 9, :6] = kept[2, 9, :6] = 0.0  # part of the way: 40 paddle cells, 6 of each bottom row
    text = minatar.cell_verdict({3: kept}, lit, names, 3, per_seed)
    assert "survives holds in part" in text and "bottom row holds in part" in text and "No cell is cut" not in text
    assert "paddle 40/90 above its row and 0/10 in it; ball 6/10 in the bottom row and 0/90 above" in text


def test_busy_minutes_counts_overlaps_once_and_skips_gaps() -> None:
    minute = 60_000
    # two populations side by side (0-10 and 5-12), then a resumed level a day later (1440-1443)
    spans = [(1440 * minute, 1443 * minute), (0, 10 * minute), (5 * minute, 12 * minute), (6 * minute, 7 * minute)]
    assert tickets.busy_minutes(spans) == 15.0
    assert tickets.busy_minutes([]) == 0.0


def test_write_block_replaces_one_block_in_place_and_refreshes_the_header(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    make_results.write_block(path, "tickets", "T1")
    make_results.write_block(path, "pybullet", "P1")
    path.write_text(path.read_text().replace(make_results.HEADER.strip(), "# an old header"))
    make_results.write_block(path, "tickets", "T2\n")
    text = path.read_text()
    assert text.startswith(make_results.HEADER) and "an old header" not in text
    assert "T1" not in text and text.index("T2") < text.index("P1")
    assert text.count("<!-- block: tickets -->") == 1 and text.endswith("<!-- /block: pybullet -->\n")


def test_scheme_rows_report_the_sparsest_level_whose_mean_return_solves_cartpole() -> None:
    """Two 0.1-scaled Kaiming seeds: their mean best return stays >= 475 through level 1 only, and both lose the
    cart inputs at level 2."""
    chains = []
    for seed, returns in ((0, (500.0, 480.0, 400.0)), (1, (500.0, 470.0, 500.0))):
        chain = Chain(make_results.scheme_experiment("kaiming_input0.1"), "1", f"run{seed}", "mask/weights", seed,
                      "CartPole-v1")
        for level, value in enumerate(returns):
            alive = 0 if level == 2 else 5
            chain.levels[level] = {"ticket/best_return": value, "density": 0.8 ** level + 0.01 * seed,
                                   **{f"inputs/actor/{n}": alive for n in make_results.CART},
                                   **{f"inputs/actor/{n}": 5 for n in make_results.POLE}}
        chains.append(chain)
    row = next(r for r in make_results.scheme_rows(chains) if r.startswith("| kaiming_input0.1"))
    assert row == "| kaiming_input0.1 | 2 | 2.0 (2 of 2 seeds) | never | 2 of 2 | 0.805 |"


def test_dense_agreement_names_the_conditions_whose_level_0_differs_from_their_seeds() -> None:
    def chains(returns: dict[int, list[float]]) -> list[Chain]:
        conditions = ("mask/weights", "mask/permuted", "permuted/permuted", "random/reinit")
        return [Chain("e", "1", f"{seed}{c}", c, seed, "HopperBulletEnv-v0", levels={0: {"ticket/best_return": r}})
                for seed, rs in returns.items() for c, r in zip(conditions, rs, strict=True)]

    assert "the same best return" in pybullet.dense_agreement(chains({0: [787.1] * 4, 1: [896.0] * 4}))
    text = pybullet.dense_agreement(chains({0: [787.1, 787.1, 787.1, 374.0], 1: [896.0] * 4}))
    assert "random/reinit 374.0 against 787.1 in seed 0" in text
    assert "seed 1" not in text
