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


def test_plot_and_command_line(example: ModuleType, stats: list, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    png = example.plot_maps(stats, example.load_data(0).ink, tmp_path / "maps.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "sub" / "cli.png"
    assert example.main(["--levels", "1", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists()
    assert "density" in printed and "rim" in printed and "centre" in printed
    assert len([line for line in printed.splitlines() if line.split() and line.split()[0].isdigit()]) == 2
