"""What a user gets from ``pip install lth``: one top-level package, and envs registered by ``import lth``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_only_lth_and_its_callback_imports(tmp_path: Path) -> None:
    """callbacks/ and datamodules/ install as lth.callbacks and lth.datamodules, never as top-level names."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lth-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"lth"}
    assert "lth/callbacks/pruning.py" in names and "lth/datamodules/replay.py" in names
    # from the unpacked wheel alone (not this checkout), the documented reuse line works
    code = "import lth.callbacks as c; from lth.callbacks import PruningCallback; print(c.__file__)"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert Path(out.stdout.strip()).is_relative_to(tmp_path / "site")


def test_import_lth_registers_mazegrid_without_loading_simulators() -> None:
    code = (
        "import sys, lth, gymnasium as gym\n"
        "env = gym.make('lth/MazeGrid-v0', obs_type='rgb')\n"
        "obs, _ = env.reset(seed=0)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pybullet', 'ale_py', 'minatar', 'mlflow', 'lightning'})\n"
        "print(obs.shape, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "(3, 10, 20) []"
