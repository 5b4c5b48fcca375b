"""per_seed.csv: the committed record every verdict is computed from (lth.analysis.per_seed)."""

import pytest

from lth.analysis.per_seed import PerSeed, write_per_seed


def metrics(density, best, **inputs):
    return {"density": density, "ticket/best_return": best, **{f"inputs/actor/{k}": v for k, v in inputs.items()}}


def rows():
    """Two seeds of one condition: seed 0 holds its dense return to level 2, seed 1 drops at level 1."""
    return [
        ("mask/weights", 0, 0, metrics(1.0, 500.0, a=3.0, b=2.0)),
        ("mask/weights", 0, 1, metrics(0.8, 480.0, a=1.0, b=2.0)),
        ("mask/weights", 0, 2, metrics(0.64, 499.0, a=0.0, b=1.5)),
        ("mask/weights", 0, 3, metrics(0.512, 100.0, a=0.0, b=0.0)),
        ("mask/weights", 1, 0, metrics(1.0, 400.0, a=3.0, b=2.0)),
        ("mask/weights", 1, 1, metrics(0.8, 300.0, a=2.0, b=1.0)),
        ("mask/weights", 1, 2, metrics(0.64, 390.0, a=1.0, b=0.0)),
        ("mask/weights", 1, 3, metrics(0.512, 0.1 + 0.2, a=0.5, b=0.0)),
    ]


def test_a_round_trip_is_exact(tmp_path):
    path = tmp_path / "study" / "per_seed.csv"
    write_per_seed(reversed(rows()), path)
    lines = path.read_text().splitlines()
    assert lines[0] == "condition,seed,level,density,best_return,inputs/actor/a,inputs/actor/b"
    assert lines[1].startswith("mask/weights,0,0,1.0,500.0")  # sorted by condition, seed, level
    table = PerSeed.read(path)
    assert table.returns("mask/weights", 3) == {0: 100.0, 1: 0.1 + 0.2}  # every float reads back bit for bit
    assert table.seeds() == [0, 1] and table.levels("mask/weights") == [0, 1, 2, 3]
    assert table.inputs("mask/weights") == ["inputs/actor/a", "inputs/actor/b"]


def test_per_seed_questions(tmp_path):
    path = tmp_path / "per_seed.csv"
    write_per_seed(rows(), path)
    table = PerSeed.read(path)
    assert table.sparse_levels("mask/weights", 0.64) == [2, 3]
    assert table.sparse_mean("mask/weights", 0.64) == {0: (499.0 + 100.0) / 2, 1: (390.0 + 0.3) / 2}
    assert table.sparse_mean("mask/weights", 0.1) == {}
    # seed 0 keeps 95% of 500 down to level 2 (480 and 499); seed 1 loses it at level 1 (300 < 380)
    assert table.sparsest_kept("mask/weights") == {0: 0.64, 1: 1.0}
    # above a floor of -100, seed 1's 300 is 400/500 = 80% of its dense margin: still lost
    assert table.sparsest_kept("mask/weights", floor=-100.0) == {0: 0.64, 1: 1.0}
    assert table.sparsest_kept("mask/weights", keep=0.7) == {0: 0.64, 1: 0.64}
    assert table.dead_from("mask/weights", 0, "inputs/actor/a") == 2
    assert table.dead_from("mask/weights", 1, "inputs/actor/a") is None


def test_a_malformed_file_names_the_problem(tmp_path):
    path = tmp_path / "per_seed.csv"
    path.write_text("condition,seed,level,density\nmask/weights,0,0,1.0\n")
    with pytest.raises(ValueError, match="missing column"):
        PerSeed.read(path)
    path.write_text("condition,seed,level,density,best_return\nmask/weights,zero,0,1.0,5\n")
    with pytest.raises(ValueError, match=r"per_seed.csv:2"):
        PerSeed.read(path)
