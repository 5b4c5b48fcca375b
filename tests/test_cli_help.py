"""The ``lth`` command explains itself: its help, ``lth ui``, the closing hint of ``lth imp``, and quiet output."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lth.callbacks import condition_names
from lth.cli import main, study_url
from lth.errors import ConfigError
from tests.conftest import CONFIGS, local_store

SUBCOMMANDS = ("fit", "validate", "imp", "report", "transfer", "expert", "server", "ui")
HEAVY = ("lightning", "torchrl", "mlflow", "torch")
LIGHTNING_CHATTER = ("Tip", "GPU available", "`Trainer.fit` stopped")
TINY_STUDY = ["imp", "--config", str(CONFIGS / "cartpole" / "ppo.yaml"), "--imp.levels", "2", "--seeds", "0",
              "--data.init_args.total_frames", "512", "--data.init_args.eval_every", "512",
              "--data.init_args.eval_episodes", "2", "--model.init_args.actor_hidden", "[16, 16]",
              "--model.init_args.critic_hidden", "[16, 16]", "--trainer.enable_progress_bar", "false"]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (imported modules are process-wide); fail with its stderr."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """What ``lth argv`` prints to stdout before it exits with code 0."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []], ids=["--help", "-h", "bare"])
def test_lth_help_lists_every_subcommand_without_loading_lightning(tmp_path: Path, argv: list[str]) -> None:
    out = _python(f"""
        import sys
        sys.argv = ["lth", *{argv!r}]
        from lth.cli import main
        main()
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, f"lth --help loaded {{loaded}}"
    """, tmp_path).stdout
    assert out.startswith("usage: lth")
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\w", out, re.MULTILINE), f"no line for {name}:\n{out}"


def test_imp_help_shows_lths_options_and_conditions_before_lightnings(capsys) -> None:
    out = _help(capsys, ["imp", "--help"])
    lightning = out.index("--trainer")
    levels = re.search(r"--imp\.levels LEVELS\s+(.*)", out)
    assert levels and levels.start() < lightning
    assert not levels.group(1).startswith("(type:"), f"--imp.levels has no description: {levels.group(0)}"
    assert "default: 20" in out[levels.start():lightning]
    for name in condition_names():
        assert re.search(rf"^\s+\*?\s*{re.escape(name)}\s+weights:", out[:lightning], re.MULTILINE), name
    for option in ("--seeds", "--population", "--resume", "--verbose"):
        assert option in out[:lightning]
    assert "--trainer.max_epochs" in out and "--data" in out  # Lightning's help follows
    assert "--seed_everything" not in out  # one seed option: --seeds


def test_expert_help_says_what_expert_does(capsys) -> None:
    expert = _help(capsys, ["expert", "--help"])
    fit = _help(capsys, ["fit", "--help"])
    assert expert.startswith("usage: lth expert")
    assert "distillation expert" in " ".join(expert.split())
    assert "distillation expert" not in " ".join(fit.split())
    assert "--trainer.max_epochs" in expert  # fit's options all the same


@pytest.mark.parametrize("name", ["fti", "test", "predict"])  # lth's agents have no test or predict step
def test_unknown_subcommand_is_one_line_naming_them_all(capsys, name: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main([name, "--config", "x.yaml"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err
    assert err.startswith(f"lth: error: unknown subcommand {name!r}") and all(sub in err for sub in SUBCOMMANDS)


def test_lightnings_own_parser_offers_only_fit_and_validate() -> None:
    from lth.cli.parsing import LthCLI

    assert set(LthCLI.subcommands()) == {"fit", "validate"}


def test_ui_serves_the_store_with_this_python_and_prints_its_address_first(in_tmp: Path, capsys, monkeypatch) -> None:
    calls: list[list[str]] = []
    store = local_store()  # lth ui's default, resolved (and lth.store.tracking imported before subprocess.run is replaced)

    real = subprocess.run

    def run(command: list[str], check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        if command[1:4] != ["-m", "mlflow", "ui"]:  # what opening the store runs (e.g. a version probe)
            return real(command, check=check, **kwargs)
        calls.append(command)
        # the store is created (under lth's lock) before MLflow's server starts: the server never migrates it
        db = Path(command[command.index("--backend-store-uri") + 1].removeprefix("sqlite:///"))
        with sqlite3.connect(db) as connection:
            assert connection.execute("SELECT version_num FROM alembic_version").fetchall()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    main(["ui", "--port", "5123"])
    main(["ui", "--tracking_uri", "sqlite:///elsewhere/m.db"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///fromenv/e.db")  # MLflow's rule: the variable, else local
    main(["ui"])
    assert calls == [
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--port", "5123"],
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{Path('elsewhere/m.db').resolve()}",
         "--port", "5000"],
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{Path('fromenv/e.db').resolve()}",
         "--port", "5000"],
    ]
    lines = capsys.readouterr().out.splitlines()
    assert "http://127.0.0.1:5123" in lines[0] and "http://127.0.0.1:5000" in lines[1]


def test_study_url_opens_the_experiments_chains_view(in_tmp: Path) -> None:
    from mlflow import MlflowClient

    uri = local_store()
    (in_tmp / "mlruns").mkdir()
    client = MlflowClient(uri)
    client.create_experiment("first")
    second = client.create_experiment("CartPole-v1/ppo/mlp64x64")
    assert study_url(uri, "CartPole-v1/ppo/mlp64x64") == (
        f"http://127.0.0.1:5000/#/experiments/{second}/runs?workflowType=machine_learning&viewStateShareKey=lth-chains")
    assert study_url(uri, "CartPole-v1/ppo/mlp64x64", port=8080).startswith("http://127.0.0.1:8080/#/")
    with pytest.raises(ConfigError, match="no MLflow experiment 'missing'"):
        study_url(uri, "missing")


def test_a_study_prints_no_lightning_chatter_unless_verbose(in_tmp: Path) -> None:
    marker = "=== verbose ==="
    done = _python(f"""
        import sys
        from lth.cli import main

        main({TINY_STUDY!r})
        print({marker!r}, flush=True)
        print({marker!r}, file=sys.stderr, flush=True)
        main({[*TINY_STUDY, "--verbose", "--trainer.logger.init_args.experiment_name", "verbose"]!r})
    """, in_tmp)
    (quiet_out, verbose_out), (quiet_err, verbose_err) = done.stdout.split(marker), done.stderr.split(marker)
    assert "level 1: density" in quiet_out and "level 1: density" in verbose_out  # both studies trained
    for chatter in LIGHTNING_CHATTER:
        assert chatter not in quiet_out + quiet_err
        assert chatter in verbose_out + verbose_err
    assert quiet_err.count("Trainable params") == 1  # the model summary once, not once per level
    closing = quiet_out.rstrip().splitlines()[-2:]
    assert closing[0] == "Compare the chains in the MLflow UI (start it with: lth ui):"
    assert re.fullmatch(r"  http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning"
                        r"&viewStateShareKey=lth-chains", closing[1])


def test_silenced_fd_output_hides_what_c_code_prints(tmp_path: Path) -> None:
    out = _python("""
        import ctypes, os, sys
        from lth.console import silenced_fd_output

        libc = ctypes.CDLL(None)
        print("before", flush=True)
        with silenced_fd_output():
            libc.printf(b"argv[0]=\\n")  # buffered by C stdio: flushed inside, into /dev/null
            os.write(2, b"from C stderr\\n")
            print("python inside")
        print("after", flush=True)
        libc.printf(b"C after\\n")
        libc.fflush(None)
    """, tmp_path)
    assert out.stdout.splitlines() == ["before", "after", "C after"]
    assert out.stderr == ""
