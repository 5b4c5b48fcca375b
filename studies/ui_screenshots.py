"""Screenshots of an lth study in the real MLflow UI: the README's images; tests/test_mlflow_ui.py reuses the helpers.

Run: ``.venv/bin/python -m studies.ui_screenshots --tracking-uri sqlite:///mlruns/mlflow.db --experiment NAME``.
Needs Debian's ``chromium`` (``apt-get install -y chromium``) and PyPI ``playwright``; no browser download.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lth.store.tracking import MODEL_TRAINING_QUERY, runs_url
from lth.store.ui_views import CHAINS_VIEW

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

IMG_DIR = Path(__file__).resolve().parents[1] / "docs" / "img"
VIEWPORT = {"width": 1400, "height": 900}
CHART_METRIC = "ticket/best_return"
#: the card (title, plot, legend) of a runs chart, seen from its plotly plot
CHART_CARD = "xpath=../../../.."


def free_port() -> int:
    """Return a free local TCP port, so parallel servers never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``<url>/health`` until the server answers, failing early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode} before {url}/health answered")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError), \
                urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"mlflow server at {url} did not answer /health within {timeout:.0f} s")


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, timeout: float = 60.0) -> Iterator[str]:
    """Run a real ``mlflow server`` on a free local port for the block's duration and yield its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = tempfile.mkdtemp(prefix="mlflow-ui-artifacts-")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                wait_for_health(url, proc, timeout)
            except Exception:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])
                raise
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(artifacts, ignore_errors=True)


def chromium_path() -> str:
    """Return Debian's chromium executable, the browser playwright drives (no playwright browser download)."""
    path = shutil.which("chromium")
    if path is None:
        raise FileNotFoundError("chromium not found: install it with `apt-get install -y chromium`")
    return path


@contextlib.contextmanager
def headless_browser() -> Iterator[Browser]:
    """Launch headless Debian chromium through playwright and yield the browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


def experiment_id(tracking_uri: str, name: str) -> str:
    """Return the id of the named experiment in the tracking store."""
    from mlflow import MlflowClient

    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if experiment is None:
        raise LookupError(f"no experiment named {name!r} in {tracking_uri}")
    return experiment.experiment_id


def chart_url(base: str, exp_id: str, view: str | None = None) -> str:
    """URL of an experiment's runs page in its chart view, opening the saved view ``view`` (its charts)."""
    return runs_url(base, exp_id, view) + "&compareRunsMode=CHART"


def run_url(base: str, exp_id: str, run_id: str) -> str:
    """URL of one run's overview page (description, parameters, metrics, tags) in the model-training layout."""
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}?{MODEL_TRAINING_QUERY}"


def open_page(page: Page, url: str, ready_text: str, timeout_ms: float = 30_000) -> None:
    """Navigate to an MLflow UI URL and wait until the single-page app has rendered ``ready_text``."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(ready_text, exact=False).first.wait_for(state="visible", timeout=timeout_ms)


def close_assistant(page: Page, timeout_ms: float = 5_000) -> None:
    """Close the MLflow Assistant side panel, which the UI opens on a browser's first visit over a third of the page."""
    new_chat = page.get_by_role("button", name="New Chat", exact=True)  # only the panel has it (its title is no text)
    with contextlib.suppress(Exception):  # playwright's TimeoutError: the panel is not open in this browser
        new_chat.wait_for(state="visible", timeout=timeout_ms)
    if new_chat.is_visible():
        close = page.get_by_role("button", name="Close", exact=True)
        page.locator("div").filter(has=new_chat).filter(has=close).last.locator(close).click()
        new_chat.wait_for(state="hidden")


def open_chart_view(page: Page, base: str, exp_id: str, view: str | None = None, plots: int = 1,
                    timeout_ms: float = 30_000) -> list[Locator]:
    """Open the runs page's chart view (of saved view ``view``), wait for its first ``plots`` plots and return their
    cards (title, plot, legend), in page order."""
    open_page(page, chart_url(base, exp_id, view), CHART_METRIC, timeout_ms)
    drawn = page.locator(".js-plotly-plot")
    drawn.nth(plots - 1).wait_for(state="visible", timeout=timeout_ms)
    return [drawn.nth(i).locator(CHART_CARD) for i in range(plots)]


def screenshot(page: Page, path: Path) -> Path:
    """Save a PNG of the browser window (a full page of charts would be huge) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def take_screenshots(base: str, exp_id: str, out_dir: Path, browser: Browser) -> list[Path]:
    """Write the screenshots of an experiment's ``lth-chains`` view into ``out_dir``: the runs table grouped by
    condition and the chart view comparing the conditions."""
    page = browser.new_page(viewport=VIEWPORT)
    try:
        open_page(page, runs_url(base, exp_id, CHAINS_VIEW), "Group: ")
        close_assistant(page)
        shots = [screenshot(page, out_dir / "mlflow_chains.png")]
        open_chart_view(page, base, exp_id, CHAINS_VIEW, plots=3)
        shots.append(screenshot(page, out_dir / "mlflow_charts.png"))
        return shots
    finally:
        page.close()


def main(argv: list[str] | None = None) -> None:
    """Write the README's MLflow UI screenshots of one study to docs/img/mlflow_*.png."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--experiment", required=True, help="experiment name, e.g. CartPole-v1/ppo/mlp64x64")
    parser.add_argument("--out-dir", type=Path, default=IMG_DIR)
    args = parser.parse_args(argv)
    exp_id = experiment_id(args.tracking_uri, args.experiment)
    with mlflow_server(args.tracking_uri) as base, headless_browser() as browser:
        for path in take_screenshots(base, exp_id, args.out_dir, browser):
            print(path)


if __name__ == "__main__":
    main()
