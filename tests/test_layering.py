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
        from lth.report.plots import save_inputs_png
        from lth.report.transfer import Curve, plot_curves

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
        from lth.report.plots import save_inputs_png

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
        logits = agent.actor.module[0].module(rollout["observation"][None])[0]  # a population of one
    torch.testing.assert_close(rollout["logits"], logits)  # the loaded agent acted


def _lth_imports() -> dict[str, set[str]]:
    """Every lth module (callbacks/ and datamodules/ as lth.callbacks, lth.datamodules) and the lth modules it
    imports anywhere in its file (at the top, inside functions, for type checking): read with ``ast``."""
    import ast

    files = {}
    for folder, package in ((ROOT / "lth", "lth"), (ROOT / "callbacks", "lth.callbacks"),
                            (ROOT / "datamodules", "lth.datamodules")):
        for path in folder.rglob("*.py"):
            if folder == ROOT / "lth" and path.relative_to(folder).parts[0] in ("callbacks", "datamodules"):
                continue  # a checkout's links to the top-level folders, read as themselves below
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            found |= {t for t in targets if t in files and t != name}
        graph[name] = found
    return graph


def test_lths_imports_have_no_cycle() -> None:
    """No import circle anywhere in lth (a package's __init__ re-exporting its modules is its own business)."""
    graph = _lth_imports()
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if other.startswith(name + "."):
                continue  # a package importing its own modules
            if state.get(other) == 1:
                cycle = path[path.index(other):] + [other] if other in path else [name, other]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


#: The store layer (every module of ``lth.store``): MLflow plumbing, chains and their claims and identity, experts,
#: loadable policies, UI views, the server. It reads and writes records and knows nothing of Lightning.
STORE_LAYER = tuple(f"lth.store.{p.stem}" for p in sorted((ROOT / "lth" / "store").glob("*.py")) if p.stem != "__init__")


def test_the_store_layer_imports_no_lightning() -> None:
    import subprocess
    import sys

    code = f"import sys\nimport {', '.join(STORE_LAYER)}\nprint(sorted(m for m in sys.modules if m.startswith('lightning')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


#: Standard-library modules that exist on POSIX only: no lth module may need them at import time.
POSIX_ONLY = ("fcntl", "resource", "pwd", "grp", "termios")


def test_no_lth_module_imports_a_posix_only_module_at_its_top() -> None:
    """The package imports on Windows: modules such as ``fcntl`` are imported inside the functions that use them
    (which pick Windows' own there), never at the top of a module, where importing lth would fail."""
    import ast

    found = []
    for folder in (ROOT / "lth", ROOT / "callbacks", ROOT / "datamodules"):
        for path in folder.rglob("*.py"):
            for node in ast.parse(path.read_text()).body:  # the module's top-level statements only
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in POSIX_ONLY]
    assert not found, found
