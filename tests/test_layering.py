"""What imports what: lth leaves the user's matplotlib backend alone, and datamodules do not depend on lth.modules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.conftest import CONFIGS, ROOT


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (imports and backends are process-wide); fail with its stderr."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_parsing_and_drawing_leave_the_users_matplotlib_backend_alone(tmp_path: Path) -> None:
    """``lth fit`` once switched every user to Agg at import; now nothing in lth selects a backend, figures are
    bare ``Figure`` objects unknown to pyplot, and the user's backend (here from ``MPLBACKEND``) stays."""
    _python(f"""
        import sys
        import matplotlib

        def forbidden(*args, **kwargs):
            raise SystemExit(f"matplotlib.use{{args}} called")

        matplotlib.use = forbidden  # nothing lth imports or runs may switch the backend
        from lth.cli import build_cli

        cli = build_cli(["--config", {str(CONFIGS / "cartpole" / "ppo.yaml")!r}, "--trainer.logger", "false"],
                        run=False)
        import torch
        from lth.analysis.inputs import InputReport
        from lth.plots import save_inputs_png
        from lth.transfer_report import Curve, plot_curves

        save_inputs_png({{"actor": InputReport("actor.0.weight", torch.rand(4), tuple("abcd"))}}, "inputs.png", "t")
        plot_curves([Curve("all", 0, [1, 2], [1.0, 2.0], "all")], "curves.png", "t")
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        if "matplotlib.pyplot" in sys.modules:  # Lightning imports it (through torchmetrics), lth does not use it
            assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    """, tmp_path, MPLBACKEND="svg")
    assert (tmp_path / "inputs.png").stat().st_size > 1_000 and (tmp_path / "curves.png").stat().st_size > 1_000


def test_lths_plotting_imports_no_pyplot(tmp_path: Path) -> None:
    _python("""
        import sys
        import torch
        from lth.analysis.inputs import InputReport
        from lth.plots import save_inputs_png

        mass = torch.rand(4, 10, 10)  # an image input layer: one heatmap per channel, with a colorbar
        save_inputs_png({"q_net": InputReport("q_net.0.weight", mass, tuple("abcd"))}, "inputs.png", "t")
        assert "matplotlib.pyplot" not in sys.modules
    """, tmp_path)
    assert (tmp_path / "inputs.png").stat().st_size > 1_000


def test_datamodules_do_not_import_the_agent_modules(tmp_path: Path) -> None:
    for path in (ROOT / "datamodules").glob("*.py"):
        assert "lth.modules" not in path.read_text(), path
    _python("""
        import sys
        import lth.datamodules
        assert "lth.modules" not in sys.modules, "importing lth.datamodules imported lth.modules"
    """, tmp_path)


def test_the_expert_datamodule_rolls_out_whatever_its_loader_returns() -> None:
    from lth.datamodules import ExpertDataModule
    from lth.modules import PPO

    agent = PPO("CartPole-v1").eval().requires_grad_(False)
    calls = []

    def loader(ref: str, tracking_uri: str) -> torch.nn.Module:
        calls.append((ref, tracking_uri))
        return agent

    dm = ExpertDataModule("my expert", total_frames=256, rollout_steps=64, eval_every=256, eval_episodes=1,
                          tracking_uri="sqlite:///elsewhere.db", loader=loader)
    assert dm.expert is agent and dm.expert is agent
    assert calls == [("my expert", "sqlite:///elsewhere.db")]  # loaded once, with the datamodule's store
    assert "loader" not in dm.hparams  # not a hyperparameter: MLflow would log a function's repr
    rollout = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        logits = agent.actor.module[0].module(rollout["observation"])
    torch.testing.assert_close(rollout["logits"], logits)  # the loaded agent acted
