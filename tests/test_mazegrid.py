"""MazeGrid (``lth/MazeGrid-v0``): layout, rules, encodings, same-step autoreset and registration."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from lth.envs import maze_board as mb
from lth.envs import mazegrid as mg
from lth.envs.maze_board import BOARD, CHANNELS, HEIGHT, LAYOUT, PALETTE, WIDTH
from lth.envs.mazegrid import ENV_ID, OBS_TYPES, MazeGridEnv, MazeGridVectorEnv
from lth.registration import register_envs

UP, DOWN, LEFT, RIGHT = range(4)
ROWS = LAYOUT.strip().splitlines()
START = (4, 10)  # the '@' in LAYOUT; the scripted walks below start there
PERIOD = int(np.lcm.reduce([len(path) for path in BOARD.patrols]))


def cell(row: int, col: int) -> int:
    return row * WIDTH + col


def agent_cell(obs: np.ndarray) -> int:
    """Flat cell of the agent in an objects observation."""
    return int(np.flatnonzero(obs[CHANNELS.index("agent")].ravel())[0])


def enemy_cells(t: int) -> list[int]:
    """Flat cells of enemies A and B at episode step ``t``."""
    return [int(path[t % len(path)]) for path in BOARD.patrols]


def meets(before: int, after: int, t: int) -> bool:
    """Whether the agent moving ``before`` -> ``after`` during step t -> t+1 meets an enemy (same cell or swap)."""
    return any(
        after == new or (after == old and before == new)
        for old, new in zip(enemy_cells(t), enemy_cells(t + 1), strict=True)
    )


Goal = Callable[[int, int, int], bool]  # (before, after, t) of one step -> reached


def plan(start: int, t: int, goal: Goal, avoid: frozenset[int] = frozenset()) -> list[int]:
    """Shortest action list from ``start`` at step ``t`` whose last step satisfies ``goal``, never meeting an
    enemy before it and avoiding the ``avoid`` cells (breadth-first over cell and enemy phase)."""
    moves = mb.move_table(BOARD.walls)
    parents: dict[tuple[int, int], tuple[tuple[int, int], int] | None] = {(start, t % PERIOD): None}
    queue = deque([(start, t)])
    while queue:
        here, now = queue.popleft()
        for action in range(4):
            there = int(moves[here, action])
            key = (there, (now + 1) % PERIOD)
            if goal(here, there, now):
                actions, back = [action], (here, now % PERIOD)
                while parents[back] is not None:
                    back, previous = parents[back]
                    actions.append(previous)
                return actions[::-1]
            if meets(here, there, now) or there in avoid or key in parents:
                continue
            parents[key] = ((here, now % PERIOD), action)
            queue.append((there, now + 1))
    raise AssertionError("no plan reaches the goal")


def run(env: MazeGridEnv, actions: list[int]) -> list[tuple[np.ndarray, float, bool, bool]]:
    """Step ``env`` through ``actions``; the (obs, reward, terminated, truncated) of each step."""
    return [env.step(a)[:4] for a in actions]


def segment(enemy: str) -> set[int]:
    """Flat cells of ``enemy``'s patrol run, read straight from the ASCII layout."""
    row = next(r for r, line in enumerate(ROWS) if enemy in line)
    col = ROWS[row].index(enemy)
    lo, hi = col, col
    while lo > 0 and ROWS[row][lo - 1] == "-":
        lo -= 1
    while hi < WIDTH - 1 and ROWS[row][hi + 1] == "-":
        hi += 1
    return {cell(row, c) for c in range(lo, hi + 1)}


def test_layout_has_the_papers_counts() -> None:
    obs, _ = MazeGridEnv().reset()
    sums = dict(zip(CHANNELS, obs.sum(axis=(1, 2)).astype(int).tolist(), strict=True))
    assert obs.shape == (6, HEIGHT, WIDTH) == (6, 10, 20)
    assert {k: sums[k] for k in ("agent", "enemy_a", "enemy_b", "coin", "poison")} == {
        "agent": 1, "enemy_a": 1, "enemy_b": 1, "coin": 42, "poison": 12,
    }
    walls = np.array([[ch == "#" for ch in line] for line in ROWS])
    assert walls.sum() > 0 and (obs[:, walls] == 0).all(), "walls have no channel"
    assert (obs.sum(axis=0)[~walls] == 1).all(), "every open cell holds exactly one object"
    assert agent_cell(obs) == cell(*START)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("$", ".", 1), "counts"),
        (lambda text: text.replace("x", ".", 1), "counts"),
        (lambda text: text.replace("@", ".", 1), "counts"),
        (lambda text: text.replace("#.", "#", 1), "rows"),
        (lambda text: text.replace("#####a", "a#####", 1), "patrol"),
    ],
)
def test_parse_layout_rejects_broken_boards(edit: Callable[[str], str], message: str) -> None:
    mb.parse_layout(LAYOUT)
    with pytest.raises(ValueError, match=message):
        mb.parse_layout(edit(LAYOUT))


def test_coins_poisons_walls_and_border() -> None:
    env = MazeGridEnv()
    env.reset()
    # Row 4 from the start leftwards: . . . $ . $ x $ . $  then the border.
    steps = run(env, [LEFT] * 11)
    assert [r for _, r, _, _ in steps] == [0, 0, 0, 1, 0, 1, -1, 1, 0, 1, 0]
    assert agent_cell(steps[-1][0]) == cell(4, 0), "the border stops the agent"
    after_wall_bumps = run(env, [UP, DOWN, DOWN, RIGHT])  # wall above, open below, then walls below and right
    assert [agent_cell(obs) for obs, *_ in after_wall_bumps] == [cell(4, 0), cell(5, 0), cell(5, 0), cell(5, 0)]
    back = run(env, [UP] + [RIGHT] * 6)
    assert [r for _, r, _, _ in back] == [0] * 7, "collected coins and poisons are gone"
    obs = back[-1][0]
    for col in (0, 2, 3, 4, 6):
        assert obs[CHANNELS.index("coin"), 4, col] == obs[CHANNELS.index("poison"), 4, col] == 0
    assert obs[CHANNELS.index("empty"), 4, 0] == 1
    assert obs[CHANNELS.index("coin")].sum() == 42 - 4 and obs[CHANNELS.index("poison")].sum() == 12 - 1
    assert not any(term or trunc for *_, term, trunc in steps + after_wall_bumps + back)


@pytest.mark.parametrize("enemy", [0, 1])
@pytest.mark.parametrize("kind", ["same_cell", "swap"])
def test_meeting_an_enemy_terminates(enemy: int, kind: str) -> None:
    def goal(before: int, after: int, t: int) -> bool:
        old, new = BOARD.patrols[enemy][t % len(BOARD.patrols[enemy])], enemy_cells(t + 1)[enemy]
        if kind == "swap":
            return after == old and before == new and before != after
        return after == new

    actions = plan(cell(*START), 0, goal)
    env = MazeGridEnv()
    env.reset()
    steps = run(env, actions)
    assert [term for _, _, term, _ in steps] == [False] * (len(actions) - 1) + [True]
    assert not steps[-1][3]
    final = steps[-1][0]
    channel = CHANNELS.index("enemy_a" if enemy == 0 else "enemy_b")
    assert final[channel].ravel()[enemy_cells(len(actions))[enemy]] == 1


def test_truncated_after_200_steps() -> None:
    env = MazeGridEnv()
    env.reset()
    steps = run(env, [LEFT] * 200)  # ends parked at the left border of row 4, out of every enemy's reach
    assert [trunc for *_, trunc in steps] == [False] * 199 + [True]
    assert not any(term for *_, term, _ in steps)


def test_collecting_every_coin_terminates_within_the_time_limit() -> None:
    env = MazeGridEnv()
    obs, _ = env.reset()
    here, t, rewards, done = cell(*START), 0, [], False
    poisons = frozenset(np.flatnonzero(BOARD.poisons).tolist())
    while not done:
        coins = set(np.flatnonzero(obs[CHANNELS.index("coin")].ravel()).tolist())
        try:
            actions = plan(here, t, lambda b, a, now, coins=coins: a in coins and not meets(b, a, now), poisons)
        except AssertionError:  # a coin walled in by poison: accept the -1
            actions = plan(here, t, lambda b, a, now, coins=coins: a in coins and not meets(b, a, now))
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            t += 1
            done = terminated or truncated
        here = agent_cell(obs)
    assert terminated and not truncated
    assert rewards.count(1.0) == 42 and t <= 200


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_encodings(obs_type: str) -> None:
    env = MazeGridEnv(obs_type=obs_type)
    obs, _ = env.reset()
    objects, _ = MazeGridEnv().reset()
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    if obs_type == "objects":
        assert obs.shape == (6, 10, 20) and set(np.unique(obs)) == {0.0, 1.0}
    elif obs_type == "rgb":
        assert obs.shape == (3, 10, 20) and obs.min() >= 0 and obs.max() <= 255
        assert env.observation_space.low.min() == 0 and env.observation_space.high.max() == 255
        colours = {tuple(c) for c in obs.reshape(3, -1).T.astype(int).tolist()}
        assert colours == {tuple(c) for c in PALETTE.tolist()}
        assert obs[:, START[0], START[1]].tolist() == [0, 255, 255], "agent is cyan"
        assert obs[:, 3, 0].tolist() == [128, 128, 128], "walls are grey"
    else:
        assert obs.shape == (1200,)
        np.testing.assert_allclose(obs, mg.projection_matrix(0) @ objects.ravel(), rtol=1e-5, atol=1e-4)


def test_projection_matrix_is_fixed_per_seed() -> None:
    first = mg.projection_matrix(0)
    assert first.shape == (1200, 1200) and first.dtype == np.float32
    assert -1 <= first.min() < -0.99 and 0.99 < first.max() <= 1
    np.testing.assert_array_equal(first, mg.projection_matrix(0))
    assert not np.allclose(first, mg.projection_matrix(1))
    obs0 = MazeGridEnv(obs_type="entangled", projection_seed=0).reset()[0]
    obs1 = MazeGridEnv(obs_type="entangled", projection_seed=1).reset()[0]
    assert not np.allclose(obs0, obs1)
    np.testing.assert_array_equal(obs0, MazeGridEnv(obs_type="entangled").reset(seed=123)[0])


def test_same_step_autoreset_reports_final_obs() -> None:
    collide = plan(cell(*START), 0, lambda b, a, t: a == enemy_cells(t + 1)[0])
    env = MazeGridVectorEnv(num_envs=3)
    start, _ = env.reset(seed=0)
    for i, action in enumerate(collide):
        obs, reward, terminated, truncated, info = env.step(np.array([action, LEFT, LEFT]))
        assert (info == {}) == (i < len(collide) - 1)
    single = MazeGridEnv()
    single.reset()
    final = run(single, collide)[-1][0]
    done = terminated | truncated
    assert done.tolist() == [True, False, False]
    assert set(info) == {"final_obs", "_final_obs", "final_info", "_final_info"}
    assert info["final_obs"].dtype == object and info["final_obs"].shape == (3,)
    assert info["_final_obs"].tolist() == info["_final_info"].tolist() == [True, False, False]
    assert info["final_obs"][1] is None and info["final_obs"][2] is None
    np.testing.assert_array_equal(np.stack(info["final_obs"][done]), final[None])
    np.testing.assert_array_equal(obs[0], start[0])  # copy 0 already shows its next episode's start
    assert agent_cell(obs[1]) == cell(START[0], max(0, START[1] - len(collide)))


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_vector_env_matches_sync_vector_env_of_single_envs(obs_type: str) -> None:
    num_envs, steps, limit = 4, 150, 40
    ours = MazeGridVectorEnv(num_envs, obs_type=obs_type, max_episode_steps=limit)
    reference = SyncVectorEnv(
        [lambda: MazeGridEnv(obs_type=obs_type, max_episode_steps=limit)] * num_envs,
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    assert ours.single_observation_space == reference.single_observation_space
    assert ours.observation_space == reference.observation_space and ours.action_space == reference.action_space
    close = (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)) if obs_type == "entangled" else (
        np.testing.assert_array_equal
    )
    close(ours.reset(seed=1)[0], reference.reset(seed=1)[0])
    actions = np.random.default_rng(0).integers(0, 4, size=(steps, num_envs))
    ended = np.zeros((2, num_envs), dtype=int)
    for action in actions:
        obs, reward, term, trunc, info = ours.step(action)
        ref_obs, ref_reward, ref_term, ref_trunc, ref_info = reference.step(action)
        close(obs, ref_obs)
        np.testing.assert_array_equal(reward, ref_reward)
        assert reward.dtype == ref_reward.dtype and term.dtype == trunc.dtype == np.bool_
        np.testing.assert_array_equal(term, ref_term)
        np.testing.assert_array_equal(trunc, ref_trunc)
        assert info.keys() == ref_info.keys()
        if info:
            np.testing.assert_array_equal(info["_final_obs"], ref_info["_final_obs"])
            np.testing.assert_array_equal(info["_final_info"], ref_info["_final_info"])
            close(np.stack(info["final_obs"][term | trunc]), np.stack(ref_info["final_obs"][ref_term | ref_trunc]))
        ended += np.stack([term, trunc])
    assert ended[0].sum() > 0 and ended[1].sum() > 0, "the run must cover both kinds of episode end"


def test_enemies_only_visit_their_patrol_segments() -> None:
    env = MazeGridVectorEnv(num_envs=8)
    obs, _ = env.reset()
    visited = obs[:, [CHANNELS.index("enemy_a"), CHANNELS.index("enemy_b")]].any(axis=0)
    for action in np.random.default_rng(0).integers(0, 4, size=(300, 8)):
        obs, *_ = env.step(action)
        visited |= obs[:, [CHANNELS.index("enemy_a"), CHANNELS.index("enemy_b")]].any(axis=0)
    for channel, enemy in enumerate("ab"):
        seen = set(np.flatnonzero(visited[channel].ravel()).tolist())
        assert seen == segment(enemy), f"enemy {enemy} patrols exactly its row of '-' cells"
        assert len(seen) < HEIGHT * WIDTH // 10, "most enemy-channel pixels are never used"


def test_channel_support_holds_every_pixel_random_play_lights() -> None:
    """Random play over many episodes lights object maps only inside ``channel_support``; enemies and the fixed
    objects light all of theirs, the agent and empty maps most of theirs."""
    support = mb.channel_support()
    env = MazeGridVectorEnv(num_envs=32)
    obs, _ = env.reset(seed=0)
    lit = obs.any(axis=0)
    for action in np.random.default_rng(0).integers(0, 4, size=(1000, 32)):
        obs, *_ = env.step(action)
        lit |= obs.any(axis=0)
    assert not (lit & ~support).any(), "a channel lit a pixel outside its support"
    for name in ("enemy_a", "enemy_b", "coin", "poison"):
        assert (lit == support)[CHANNELS.index(name)].all(), name
    for name in ("agent", "empty"):
        assert lit[CHANNELS.index(name)].sum() >= 0.8 * support[CHANNELS.index(name)].sum(), name


def test_registration_make_and_make_vec() -> None:
    register_envs()  # `import lth` registered the ids already: registering again changes nothing
    env = gym.make(ENV_ID, obs_type="rgb")
    assert isinstance(env.unwrapped, MazeGridEnv) and env.spec.max_episode_steps == mb.MAX_EPISODE_STEPS
    limits = [w for w in _wrappers(env) if isinstance(w, gym.wrappers.TimeLimit)]
    assert [w._max_episode_steps for w in limits] == [mb.MAX_EPISODE_STEPS]  # the horizon the env keeps itself
    check_env(env.unwrapped)
    vec = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", obs_type="rgb")
    assert type(vec) is MazeGridVectorEnv and vec.num_envs == 8 and vec.obs_type == "rgb"
    assert vec.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP and vec.autoreset_mode is AutoresetMode.SAME_STEP
    assert vec.reset(seed=0)[0].shape == (8, 3, 10, 20)
    same = gym.make_vec(ENV_ID, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP)
    assert type(same) is MazeGridVectorEnv
    for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED, "NextStep"):
        with pytest.raises(ValueError, match="SAME_STEP"):
            gym.make_vec(ENV_ID, num_envs=2, autoreset_mode=mode)


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


@pytest.mark.parametrize("cls", [MazeGridEnv, MazeGridVectorEnv])
def test_bad_obs_type_raises(cls: type) -> None:
    with pytest.raises(ValueError, match="objects, rgb, entangled"):
        cls(obs_type="pixels")


#: The colours the render promises, written out by hand (not read from PALETTE): layout character -> RGB.
COLOURS = {"#": (128, 128, 128), ".": (0, 0, 0), "-": (0, 0, 0), "$": (255, 255, 0), "x": (139, 69, 19),
           "@": (0, 255, 255), "a": (255, 0, 255), "b": (0, 255, 0)}


def _picture(rows: list[str], scale: int = 20) -> np.ndarray:
    """A board drawn by hand: each character's colour filling a ``scale`` x ``scale`` block."""
    image = np.array([[COLOURS[c] for c in row] for row in rows], dtype=np.uint8)
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _put(rows: list[str], row: int, col: int, char: str) -> list[str]:
    rows = list(rows)
    rows[row] = rows[row][:col] + char + rows[row][col + 1:]
    return rows


def test_render_draws_each_cell_in_its_objects_colour_for_the_first_copy() -> None:
    env = MazeGridVectorEnv(num_envs=2, render_mode="rgb_array")
    env.reset(seed=0)
    picture = env.render()
    assert picture.shape == (200, 400, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture, _picture(ROWS))
    np.testing.assert_array_equal(picture[4 * 20 + 7, 10 * 20 + 13], [0, 255, 255])  # the agent's block at (4, 10)
    for _ in range(4):  # copy 0 walks left onto the coin at (4, 6); copy 1 walks right onto the coin at (4, 14)
        obs, *_ = env.step(np.array([LEFT, RIGHT]))
    # after 4 steps: enemy A (start (3, 5), rightwards) is at (3, 9); enemy B (start (6, 14), bouncing) at (6, 10)
    rows = _put(_put(_put(ROWS, 4, 10, "."), 4, 6, "@"), 3, 5, "-")
    rows = _put(_put(_put(rows, 3, 9, "a"), 6, 14, "-"), 6, 10, "b")
    picture = env.render()
    np.testing.assert_array_equal(picture, _picture(rows))
    # the same picture from copy 0's object maps: each cell in its channel's colour, walls (no channel) grey
    char = {"empty": ".", "agent": "@", "enemy_a": "a", "enemy_b": "b", "coin": "$", "poison": "x"}
    by_channel = [COLOURS[char[name]] for name in CHANNELS]
    from_obs = np.array([[by_channel[int(np.argmax(obs[0, :, r, c]))] if obs[0, :, r, c].any() else COLOURS["#"]
                          for c in range(WIDTH)] for r in range(HEIGHT)], dtype=np.uint8)
    np.testing.assert_array_equal(picture[10::20, 10::20], from_obs)


def test_layout_picture(tmp_path: Path) -> None:
    np.testing.assert_array_equal(mg.layout_image(scale=20), _picture(ROWS))
    small = mg.layout_image(scale=1)
    assert small.shape == (10, 20, 3) and small[START].tolist() == [0, 255, 255]
    mg.save_layout_figure(tmp_path / "mazegrid.png")
    assert (tmp_path / "mazegrid.png").stat().st_size > 10_000
