"""A small real IMP study seen through the real MLflow UI (mlflow server + headless Debian chromium via playwright).

Checks that a researcher lands on the model-training runs table (not MLflow 3.17's GenAI overview), that chain runs
carry their condition, parameters, tags, colours and names, and that the saved views ``lth imp`` writes open as they
claim: ``lth-chains`` groups the chains by condition and charts ``ticket/best_return`` one line per condition,
``lth-levels`` draws every level run in a density/return scatter. Screenshots land in the git-ignored reports/ui/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lth.store.tracking import runs_url
from lth.store.ui_views import CHAINS_VIEW, LEVELS_VIEW, RUN_COLOR, condition_colour, study_views
from studies import ui_screenshots as ui  # the README's screenshot code, driven by this test

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "ui"
CONDITIONS = ("mask/weights", "random/reinit")
SEEDS = (0, 1)
LEVELS = 2
GENAI_OVERVIEW_TEXT = ("Token Usage", "Tool calls", "Tokens per Trace")  # the GenAI Overview tab's landing content


def _require_browser() -> None:
    """Skip without chromium/playwright, except as root (CI installs both there), where a missing one fails loudly."""
    missing = []
    if shutil.which("chromium") is None:
        missing.append("Debian's chromium (`apt-get install -y chromium`)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("PyPI playwright (`pip install -e '.[test]'`; no `playwright install` needed)")
    if not missing:
        return
    message = "MLflow UI test needs " + " and ".join(missing)
    if os.geteuid() == 0:
        pytest.fail(message + "; running as root, so .ci/run should have installed it", pytrace=False)
    pytest.skip(message)


def _study_command(uri: str) -> list[str]:
    """The ``lth imp`` command of a two-level, two-condition, two-seed CartPole study (seeds give groups a spread)."""
    return [str(Path(sys.executable).with_name("lth")), "imp", "--config", str(ROOT / "configs/cartpole/ppo.yaml"),
            "--imp.levels", str(LEVELS), "--imp.conditions", ",".join(CONDITIONS),
            "--seeds", ",".join(map(str, SEEDS)),
            "--data.init_args.total_frames", "1024", "--data.init_args.eval_every", "512",
            "--data.init_args.eval_episodes", "2", "--model.init_args.actor_hidden", "[16, 16]",
            "--model.init_args.critic_hidden", "[16, 16]", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.tracking_uri", uri]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the study while a real ``mlflow server`` and headless chromium start on the same store, then share them."""
    _require_browser()
    from mlflow import MlflowClient

    workdir = tmp_path_factory.mktemp("ui_study")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # creates the schema first, so the server and the study never race to migrate it
    with open(workdir / "lth.log", "w+") as log:
        proc = subprocess.Popen(_study_command(uri), cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            with ui.mlflow_server(uri) as base, ui.headless_browser() as browser:
                context = browser.new_context(viewport=ui.VIEWPORT)
                warm = context.new_page()  # loads the UI bundle into the cache while the study trains
                ui.open_page(warm, runs_url(base, "0"), "Group by", timeout_ms=90_000)
                warm.close()
                proc.wait(timeout=300)
                log.seek(0)
                assert proc.returncode == 0, log.read()[-3000:]
                (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
                runs = client.search_runs([experiment.experiment_id])
                yield {"client": client, "experiment": experiment, "base": base, "context": context,
                       "chains": [r for r in runs if r.data.tags.get("lth.role") == "chain"],
                       "levels": [r for r in runs if r.data.tags.get("lth.role") != "chain"]}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def study(served: dict[str, Any]) -> dict[str, Any]:
    """What the study logged: client, experiment, chain runs and level runs."""
    return served


@pytest.fixture(scope="module")
def server(served: dict[str, Any]) -> str:
    """Base URL of the real ``mlflow server`` serving the study's store."""
    return served["base"]


@pytest.fixture
def page(served: dict[str, Any]) -> Iterator[Any]:
    """A fresh page in the module's browser context (shared HTTP cache; URLs pin the Model-training layout)."""
    page = served["context"].new_page()
    try:
        yield page
    finally:
        page.close()


def _chain(study: dict[str, Any], condition: str, seed: int = SEEDS[0]) -> Any:
    """The chain (parent) run of one condition and seed."""
    (run,) = [r for r in study["chains"] if (r.data.tags["condition"], r.data.tags["seed"]) == (condition, str(seed))]
    return run


def test_runs_view_is_the_training_runs_table(study: dict[str, Any], server: str, page: Any) -> None:
    """The experiment opens on the runs table listing both chains, not on the GenAI traces/token overview."""
    exp_id = study["experiment"].experiment_id
    ui.open_page(page, runs_url(server, exp_id), "Group by")
    page.get_by_text(_chain(study, CONDITIONS[0]).info.run_name, exact=True).first.wait_for(state="visible")
    ui.screenshot(page, SHOTS / "runs.png")
    text = page.inner_text("body")
    assert page.get_by_role("heading", name="Runs", exact=True).count() == 1, text[:2000]
    assert not [s for s in GENAI_OVERVIEW_TEXT if s in text], text[:2000]
    for condition in CONDITIONS:
        assert _chain(study, condition).info.run_name in text


def test_experiment_is_tagged_model_training(study: dict[str, Any]) -> None:
    """The experiment declares itself a model-training one, says what the study is and holds both saved views."""
    tags = study["experiment"].tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development", tags
    assert tags.get("mlflow.note.content"), f"experiment has no description (mlflow.note.content): {tags}"
    for key, state in study_views().items():
        assert tags.get(key) == state, f"experiment lacks the saved view {key}: {sorted(tags)}"


def test_chain_run_page_shows_condition(study: dict[str, Any], server: str, page: Any) -> None:
    """A chain run's page lists its ``condition`` tag, so the runs can be told apart and grouped."""
    run = _chain(study, "mask/weights")
    ui.open_page(page, ui.run_url(server, study["experiment"].experiment_id, run.info.run_id), "Parameters")
    page.get_by_text("condition", exact=True).first.wait_for(state="visible")
    ui.screenshot(page, SHOTS / "chain_run.png")
    text = page.inner_text("body")
    assert "condition" in text and "mask/weights" in text, text[:3000]


def test_chain_run_names(study: dict[str, Any]) -> None:
    """Chain runs are named ``<condition> s<seed>`` and level runs ``<condition> s<seed> L<level>``."""
    chains = [f"{c} s{s}" for c in CONDITIONS for s in SEEDS]
    assert sorted(r.info.run_name for r in study["chains"]) == chains
    assert sorted(r.info.run_name for r in study["levels"]) == [f"{c} L{lv}" for c in chains for lv in range(LEVELS)]


def test_chain_run_page_shows_imp_settings(study: dict[str, Any], server: str, page: Any) -> None:
    """A chain run's page shows ``imp.amount`` among its Parameters and ``imp.levels`` among its Tags (a tag: a chain
    can be extended later, a param could not change), its Description says what the chain is."""
    run = _chain(study, "mask/weights")
    assert "imp.amount" in run.data.params, sorted(k for k in run.data.params if k.startswith("imp."))
    assert run.data.tags.get("imp.levels") == str(LEVELS), sorted(run.data.tags)
    assert "imp.levels" not in run.data.params, "imp.levels must be a tag, not an immutable param"
    ui.open_page(page, ui.run_url(server, study["experiment"].experiment_id, run.info.run_id), "Parameters")
    page.get_by_text("imp.levels", exact=True).first.wait_for(state="visible")
    ui.screenshot(page, SHOTS / "chain_run_settings.png")
    text = page.inner_text("body")
    tags = text[text.rindex("\nTags\n"):]
    assert f"imp.levels\n: {LEVELS}" in tags, tags[:1500]
    page.get_by_placeholder("Search parameters").fill("imp.")
    params = page.inner_text("body")
    assert "imp.amount" in params[params.index("Parameters"):params.index("About this run")], params[:3000]
    assert run.data.tags.get("mlflow.note.content"), "chain run has no description (mlflow.note.content)"
    artifacts = [a.path for a in study["client"].list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts, artifacts


def test_runs_carry_condition_colours(study: dict[str, Any]) -> None:
    """Chain and level runs carry their condition's ``mlflow.runColor``, one colour per condition."""
    for run in study["chains"] + study["levels"]:
        assert run.data.tags.get(RUN_COLOR) == condition_colour(run.data.tags["condition"]), run.info.run_name
    assert len({condition_colour(c) for c in CONDITIONS}) == len(CONDITIONS)


def test_chains_view_groups_by_condition(study: dict[str, Any], server: str, page: Any) -> None:
    """The ``lth-chains`` view lists only the chain runs, in one group row per condition."""
    ui.open_page(page, runs_url(server, study["experiment"].experiment_id, CHAINS_VIEW), "Group: ")
    ui.screenshot(page, SHOTS / "chains_view.png")
    text = page.inner_text("body")
    assert "Group by: imp.condition" in text, text[:3000]
    for condition in CONDITIONS:
        assert f"Group: {condition}\n{len(SEEDS)}\n" in text, text[:3000]
        for seed in SEEDS:
            assert f"{condition} s{seed}\n" in text, text[:3000]
    assert f"{len(study['chains'])} matching runs" in text, text[-500:]
    assert " L0" not in text, "level runs leak into the chains view"


def test_views_menu_opens_chains_view(study: dict[str, Any], server: str, page: Any) -> None:
    """The plain runs page lists both saved views under "Views"; picking ``lth-chains`` there opens the grouped view."""
    ui.open_page(page, runs_url(server, study["experiment"].experiment_id), "Group by")
    page.get_by_role("button", name="Views").click()
    for view in (CHAINS_VIEW, LEVELS_VIEW):
        page.get_by_role("menuitem", name=view).wait_for(state="visible")
    page.get_by_role("menuitem", name=CHAINS_VIEW).click()
    page.get_by_text(f"Group: {CONDITIONS[0]}", exact=True).wait_for(state="visible")
    assert f"viewStateShareKey={CHAINS_VIEW}" in page.url, page.url
    assert "Group by: imp.condition" in page.inner_text("body")


def test_chains_view_charts_conditions(study: dict[str, Any], server: str, page: Any) -> None:
    """The ``lth-chains`` chart view first draws its three charts, each one plot with one line per condition: best
    return against level and against density, density against level."""
    cards = ui.open_chart_view(page, server, study["experiment"].experiment_id, CHAINS_VIEW, plots=3)
    ui.screenshot(page, SHOTS / "chains_charts.png")
    expected = [(ui.CHART_METRIC, "Step"), (ui.CHART_METRIC, "density"), ("density", "Step")]
    for card, (metric, x_title) in zip(cards, expected):
        text = card.inner_text()
        assert text.startswith(metric + "\n"), text
        assert card.locator(".js-plotly-plot").count() == 1, text
        assert card.locator(".xtitle").all_text_contents() == [x_title], text
        assert [f"{c} ({metric})" for c in CONDITIONS] == text.splitlines()[-len(CONDITIONS):], text


def test_levels_view_scatter(study: dict[str, Any], server: str, page: Any) -> None:
    """The ``lth-levels`` view lists every level run in its condition's colour and draws them all in one scatter of
    ``ticket/best_return`` against ``density``."""
    exp_id = study["experiment"].experiment_id
    level = study["levels"][0]
    ui.open_page(page, runs_url(server, exp_id, LEVELS_VIEW), level.info.run_name)
    text = page.inner_text("body")
    for run in study["levels"]:
        assert f"{run.data.tags[RUN_COLOR]}\n{run.info.run_name}\n" in text, text[:3000]
    (card,) = ui.open_chart_view(page, server, exp_id, LEVELS_VIEW)
    ui.screenshot(page, SHOTS / "levels_scatter.png")
    assert card.inner_text().startswith(f"density vs. {ui.CHART_METRIC}\n"), card.inner_text()
    assert card.locator(".xtitle").all_text_contents() == ["density"]
    assert card.locator(".ytitle").all_text_contents() == [ui.CHART_METRIC]
    assert card.locator(".scatterlayer .point").count() == len(study["levels"])
