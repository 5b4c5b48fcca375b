"""MazeGrid's board (:data:`LAYOUT`, parsed into :data:`BOARD`), its cell labels and colours, the agent's moves, and
where each object map can ever light (:func:`channel_support`); the game itself is :mod:`lth.envs.mazegrid`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The game board, top row first. ``#`` wall, ``.`` empty, ``@`` agent start, ``$`` coin, ``x`` poison,
#: ``-`` an enemy's patrol cell, ``a``/``b`` enemy A/B start. An enemy patrols the horizontal run of
#: ``-`` cells around its start, one cell per step, starting rightwards and bouncing at the run's ends.
LAYOUT = """
$.$.$.$x$..$.$x$.$.$
.##.#.###..###.#.##.
..$.x.$.$..$...x.$..
#####a-----#########
$.$x$.$...@.$.$x$.$.
.#.$.#.$.x.$.#.$.#.x
#########-----b#####
..$.x.$.$..$...x.$..
.##.#.###..###.#.##.
$.$.$.$x$..$.$x$.$.$
"""

HEIGHT, WIDTH = 10, 20
NUM_COINS, NUM_POISONS = 42, 12
MAX_EPISODE_STEPS = 200

#: Object-map channels, in observation order. Walls have no channel: a wall cell is all-zero.
CHANNELS = ("empty", "agent", "enemy_a", "enemy_b", "coin", "poison")
#: Action names in index order (0 up, 1 down, 2 left, 3 right) -> (row, column) displacement.
ACTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}

EMPTY, AGENT, ENEMY_A, ENEMY_B, COIN, POISON = range(len(CHANNELS))
WALL = len(CHANNELS)  # the cell label of walls, one past the object channels

#: RGB colour per cell label (the CHANNELS order, then walls).
PALETTE = np.array(
    [
        (0, 0, 0),  # empty: black
        (0, 255, 255),  # agent: cyan
        (255, 0, 255),  # enemy A: magenta
        (0, 255, 0),  # enemy B: green
        (255, 255, 0),  # coin: yellow
        (139, 69, 19),  # poison: brown
        (128, 128, 128),  # wall: grey
    ],
    dtype=np.uint8,
)

_PATROL_CHARS = "-ab"


@dataclass(frozen=True, eq=False)
class Layout:
    """A parsed board; cells are flat indices ``row * WIDTH + column``."""

    walls: np.ndarray  # (HEIGHT, WIDTH) bool
    coins: np.ndarray  # (HEIGHT, WIDTH) bool
    poisons: np.ndarray  # (HEIGHT, WIDTH) bool
    agent: int
    patrols: tuple[np.ndarray, ...]  # per enemy (A, B): its cell at step t is patrols[e][t % len(patrols[e])]


def _patrol_path(row: int, lo: int, hi: int, start: int) -> np.ndarray:
    """Flat cells an enemy visits over one back-and-forth period, starting at column ``start`` going right."""
    cols = list(range(lo, hi + 1)) + list(range(hi - 1, lo, -1))
    cols = cols[start - lo :] + cols[: start - lo]
    return np.array([row * WIDTH + c for c in cols], dtype=np.int64)


def _segment(line: str, col: int) -> tuple[int, int]:
    """First and last column of the run of patrol characters around ``col``."""
    lo, hi = col, col
    while lo > 0 and line[lo - 1] in _PATROL_CHARS:
        lo -= 1
    while hi < len(line) - 1 and line[hi + 1] in _PATROL_CHARS:
        hi += 1
    return lo, hi


def move_table(walls: np.ndarray) -> np.ndarray:
    """(cells, 4) table of the agent's next flat cell per action; walls and the border leave it in place."""
    height, width = walls.shape
    table = np.empty((height * width, len(ACTIONS)), dtype=np.int64)
    for r in range(height):
        for c in range(width):
            for a, (dr, dc) in enumerate(ACTIONS.values()):
                nr, nc = r + dr, c + dc
                inside = 0 <= nr < height and 0 <= nc < width
                table[r * width + c, a] = nr * width + nc if inside and not walls[nr, nc] else r * width + c
    return table


def reachable(walls: np.ndarray, start: int) -> np.ndarray:
    """(HEIGHT, WIDTH) bool map of the cells the agent can walk to from flat cell ``start``."""
    seen = np.zeros(walls.size, dtype=bool)
    seen[start] = True
    frontier = [start]
    table = move_table(walls)
    while frontier:
        frontier = [n for cell in frontier for n in table[cell] if not seen[n]]
        seen[frontier] = True
    return seen.reshape(walls.shape)


def parse_layout(text: str) -> Layout:
    """Parse an ASCII board (see :data:`LAYOUT`); raise ``ValueError`` unless it has the paper's counts."""
    lines = text.strip().splitlines()
    if len(lines) != HEIGHT or any(len(line) != WIDTH for line in lines):
        raise ValueError(f"layout must be {HEIGHT} rows of {WIDTH} cells, got rows of {[len(ln) for ln in lines]}")
    grid = np.array([list(line) for line in lines])
    unknown = set(grid.ravel()) - set("#.@$x") - set(_PATROL_CHARS)
    if unknown:
        raise ValueError(f"layout has unknown characters {sorted(unknown)}")
    counts = {ch: int((grid == ch).sum()) for ch in "@ab$x"}
    expected = {"@": 1, "a": 1, "b": 1, "$": NUM_COINS, "x": NUM_POISONS}
    if counts != expected:
        raise ValueError(f"layout has counts {counts}, expected {expected}")
    patrols, patrol_cells = [], 0
    for enemy in "ab":
        row, col = (int(i) for i in np.argwhere(grid == enemy)[0])
        lo, hi = _segment(lines[row], col)
        if hi == lo or set(lines[row][lo : hi + 1]) - {"-", enemy}:
            raise ValueError(f"enemy {enemy!r} needs its own patrol run of at least two cells, got row {row}")
        patrols.append(_patrol_path(row, lo, hi, col))
        patrol_cells += hi - lo + 1
    if patrol_cells != int(np.isin(grid, list(_PATROL_CHARS)).sum()):
        raise ValueError("layout has patrol cells ('-') that belong to no enemy")
    walls = grid == "#"
    agent = int(np.flatnonzero(grid == "@")[0])
    coins = grid == "$"
    if not reachable(walls, agent)[coins].all():
        raise ValueError("layout has coins the agent cannot reach")
    return Layout(walls=walls, coins=coins, poisons=grid == "x", agent=agent, patrols=tuple(patrols))


BOARD = parse_layout(LAYOUT)


def channel_support(board: Layout = BOARD) -> np.ndarray:
    """(channels, HEIGHT, WIDTH) bool: where each object map can ever hold a 1 (empty and agent: the cells the agent
    can walk to; each enemy: its patrol; coins and poisons: their start cells). An input-layer weight elsewhere only
    ever sees zeros, so training never moves it (the paper's Figure 5 reads the masks against these cells)."""
    walkable = reachable(board.walls, board.agent)
    support = np.zeros((len(CHANNELS), *board.walls.shape), dtype=bool)
    support[EMPTY] = support[AGENT] = walkable
    for channel, patrol in zip((ENEMY_A, ENEMY_B), board.patrols, strict=True):
        support[channel].flat[patrol] = True
    support[COIN], support[POISON] = board.coins, board.poisons
    return support
