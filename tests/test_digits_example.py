"""examples/digits_imp.py: IMP on scikit-learn's 8x8 digits prunes the image's rim before its centre."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_imp.py"
LEVELS = 5
TOTAL = 64 * 100 + 100 * 100 + 100 * 10  # Linear weights of the 64-100-100-10 MLP


def _load_example() -> ModuleType:
    """Import the example by path (examples/ is not a package); registered so its dataclasses resolve."""
    spec = importlib.util.spec_from_file_location("digits_imp_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return _load_example()


@pytest.fixture(scope="module")
def stats(example: ModuleType) -> list:
    return example.run_study(levels=LEVELS, epochs=4, seed=0)


def test_density_follows_the_pruning_schedule(stats: list) -> None:
    assert [s.level for s in stats] == list(range(LEVELS + 1))
    remaining = TOTAL
    for s in stats:
        assert s.survivors == remaining  # round(0.2 * remaining) removed per level
        assert abs(s.survivors - 0.8**s.level * TOTAL) <= 1  # 0.8^level, to within one weight
        assert s.density == pytest.approx(s.survivors / TOTAL)
        remaining -= round(0.2 * remaining)


def test_the_rim_is_pruned_before_the_centre(example: ModuleType, stats: list) -> None:
    dense, last = stats[0], stats[-1]
    assert dense.rim == dense.centre == dense.blank == 1.0
    assert all(s.rim < s.centre for s in stats[1:])  # from the very first pruning on
    assert last.rim < 0.65 * last.centre
    assert last.blank < 0.15 and last.blank < 0.3 * last.centre  # near-blank pixels are almost gone
    ratios = [s.rim / s.centre for s in stats[1:]]
    assert ratios[-1] < ratios[0] < 1.0  # the contrast grows with the levels
    rim = example.rim_mask()
    assert int(rim.sum()) == 28
    assert last.pixel_map.shape == (8, 8)
    assert float(last.pixel_map[rim].mean()) == pytest.approx(last.rim)
    assert float(last.pixel_map[~rim].mean()) == pytest.approx(last.centre)


def test_accuracy_stays_far_above_chance(stats: list) -> None:
    assert stats[-1].density < 0.35
    assert all(s.val_acc > 0.8 for s in stats), [s.val_acc for s in stats]  # chance is 0.1


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_and_command_line(example: ModuleType, stats: list, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = example.plot_maps(stats, example.load_data(0).ink, tmp_path / "maps.png")
    # the ink map and levels 1, 2, 4, 5 (four levels spread over 1..5): (2.7 * 5 + 1.6) x 3.7 inches at 120 dpi
    assert _png_size(png) == (1812, 444)
    out = tmp_path / "sub" / "cli.png"
    assert example.main(["--levels", "1", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _png_size(out) == (840, 444)  # the ink map and level 1
    assert len([line for line in printed.splitlines() if line.split() and line.split()[0].isdigit()]) == 2
    header, *rows = [line.split() for line in printed.splitlines() if line.split()][:3]
    assert header == ["level", "density", "weights", "val", "acc", "rim", "centre", "rim/ctr", "blank"]
    rows = [[float(x) for x in row] for row in rows]
    assert [row[:3] for row in rows] == [[0, 1.0, TOTAL], [1, 0.8, TOTAL - round(0.2 * TOTAL)]]
    assert rows[0][4:] == [1.0, 1.0, 1.0, 1.0]  # nothing pruned yet
    level1 = dict(zip(["acc", "rim", "centre", "ratio", "blank"], rows[1][3:]))
    assert level1["blank"] < level1["rim"] < level1["centre"] < 1.0  # one pruning already prefers the ink
    assert level1["ratio"] == pytest.approx(level1["rim"] / level1["centre"], abs=0.01)
    assert all(row[3] > 0.6 for row in rows), rows  # one epoch per level is far above chance (0.1)
