"""MazeGrid (paper section 4.1, Figures 4 and 5): DQN tickets against the baselines on the object-map encoding,
and which cells of each object map the ticket's Q-network still sees.

The study is a :class:`studies.tickets.TicketStudy` whose export adds, for every ticket (mask/weights) level, three
numbers per object map read from its ``ticket.pt`` (:func:`cell_columns`): the share of the map's input weights kept,
and the shares of its *support* cells (:func:`lth.envs.maze_board.channel_support`: where the map can ever be 1) and of
its other cells that still have a weight. The input-mask claims, per seed, by the share rule:

- *enemy maps keep their patrol corridor* (Figure 5): at some level the enemy's map sees no cell off its patrol
  while still seeing at least :data:`MIN_PATROL` of the patrol cells, for both enemies (an empty map fails);
- *the agent map is pruned least*: at the last level the agent map keeps the largest share of its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lth.analysis.per_seed import PerSeed
from lth.analysis.verdicts import share_text, share_verdict
from lth.envs.maze_board import CHANNELS
from studies.markdown import Section, says, table
from studies.tickets import TicketStudy, study_section

TICKET = "mask/weights"
ENEMIES = ("enemy_a", "enemy_b")
MIN_PATROL = 0.5  # an enemy map "keeps its patrol" only while it still sees at least half of the patrol cells
#: 50k frames per level instead of 5M: exploration scaled by the same factor (10k frames), and the warm-up, batch
#: and target period with which DQN learns the maze in 60k frames (tests/test_dqn.py).
SETTINGS = ("--model.init_args.eps_frames", "10000", "--data.init_args.warmup_frames", "5000",
            "--data.init_args.buffer_size", "50000", "--data.init_args.batch_size", "64",
            "--model.init_args.target_update_interval", "250", "--data.init_args.eval_every", "5000")


def cell_columns(uri: str, chain: Any) -> dict[int, dict[str, float]]:
    """Per finished level of a ticket chain, ``cells/<map>/kept``, ``/on_support`` and ``/off_support`` (empty for
    the other conditions): what its input-layer mask keeps of each object map."""
    import torch

    from lth.analysis import alive_inputs, input_layers
    from lth.envs.maze_board import channel_support
    from lth.store.chain_store import ChainStore

    if chain.condition != TICKET:
        return {}
    support = torch.from_numpy(channel_support())
    store = ChainStore(uri, chain.experiment_id, chain.run_id)
    out = {}
    for level, run_id in sorted(chain.level_runs.items()):
        masks = store.load(run_id, "ticket.pt")["masks"]
        (layer,) = input_layers(masks).values()
        mask = masks[layer]
        alive = alive_inputs(mask, support.shape)
        kept = mask.reshape(mask.shape[0], len(CHANNELS), -1).double().mean((0, 2))
        out[level] = {key: value for c, name in enumerate(CHANNELS) for key, value in (
            (f"cells/{name}/kept", float(kept[c])),
            (f"cells/{name}/on_support", float(alive[c][support[c]].float().mean())),
            (f"cells/{name}/off_support", float(alive[c][~support[c]].float().mean())))}
    return out


def patrol_level(levels: Mapping[int, Mapping[str, float]], enemy: str) -> int | None:
    """The first level at which ``enemy``'s map sees no cell off its patrol and at least :data:`MIN_PATROL` of the
    patrol cells (None: never, e.g. when the map is cut away entirely)."""
    return next((k for k, cells in sorted(levels.items()) if cells[f"cells/{enemy}/off_support"] == 0
                 and cells[f"cells/{enemy}/on_support"] >= MIN_PATROL), None)


def agent_least_pruned(cells: Mapping[str, float]) -> bool:
    """Whether the agent map keeps the largest share of its input weights among the object maps."""
    return all(cells["cells/agent/kept"] > cells[f"cells/{name}/kept"] for name in CHANNELS if name != "agent")


STUDY = TicketStudy("mazegrid_dqn_tickets", "MazeGrid, DQN (paper Figures 4 and 5)", "mazegrid/dqn.yaml",
                    "paper/MazeGrid-v0/dqn/tickets", "0-4", 14, (-12.0, 42.0), frames=50_000, extra=SETTINGS,
                    analyse=cell_columns)


def seed_cells(data: PerSeed) -> dict[int, dict[int, dict[str, float]]]:
    """Per ticket seed and level, its ``cells/*`` columns."""
    return {seed: {k: dict(level.inputs) for k, level in chain.items()} for seed, chain in data.data[TICKET].items()}


def cells_part(data: PerSeed) -> list[str]:
    """The Figure 5 claims, per seed."""
    cells = seed_cells(data)
    n = len(cells)
    found = {seed: {e: patrol_level(levels, e) for e in ENEMIES} for seed, levels in cells.items()}
    both = sum(all(k is not None for k in by.values()) for by in found.values())
    last = {seed: levels[max(levels)] for seed, levels in cells.items()}
    agent = sum(agent_least_pruned(c) for c in last.values())
    rows = []
    for seed, levels in sorted(cells.items()):
        k = max(levels)
        rows.append([str(seed), *(("never" if (lv := found[seed][e]) is None else str(lv)) for e in ENEMIES),
                     *(f"{levels[k][f'cells/{e}/on_support']:.2f} / {levels[k][f'cells/{e}/off_support']:.2f}"
                       for e in ENEMIES), *(f"{levels[k][f'cells/{c}/kept']:.3f}" for c in CHANNELS)])
    return ["### Which cells each object map keeps (Figure 5)", "",
            "A cell of a map is *seen* while its column in the Q-network's first layer keeps a weight; the cells a "
            "map can ever light (`lth.envs.maze_board.channel_support`: the walkable cells for agent and empty, the "
            "patrol for each enemy, the start cells of coins and poisons) are its *support*.", "",
            *table(["seed", *(f"{e}: patrol kept from level" for e in ENEMIES),
                    *(f"{e} at the last level: cells seen on / off patrol" for e in ENEMIES),
                    *(f"{c}: weights kept at the last level" for c in CHANNELS)], rows, numeric_from=0), "",
            f"**The paper's claim** (Figure 5: each enemy's map keeps only its patrol corridor). Criterion per seed: "
            f"for both enemies, a level at which the map sees no cell off the patrol and still at least "
            f"{MIN_PATROL:.0%} of the patrol cells. Met in {share_text(both, n)}: the claim "
            f"{says(share_verdict(both, n))}. The agent map keeps the largest share of its weights at the last level "
            f"in {share_text(agent, n)}: the paper's \"pruned least\" {says(share_verdict(agent, n))}.", ""]


def section(draw: bool) -> Section:
    """The MazeGrid block of docs/RESULTS.md (a note when the study has not run)."""
    if not STUDY.done():
        return Section(f"## {STUDY.title}\n\nNot run yet: `make results ITEMS=mazegrid` runs `{STUDY.experiment}` "
                       "and exports its per-seed data.\n")
    sub, data, _ = study_section(STUDY, draw, level=2)
    return Section(sub.markdown + "\n" + "\n".join(cells_part(data)), sub.readme, sub.files)
