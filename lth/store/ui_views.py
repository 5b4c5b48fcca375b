"""What MLflow's UI shows an IMP study without clicks: saved runs views and one colour per condition.

MLflow 3.17's UI keeps a saved view (search filter, grouping, charts) in an experiment tag
``mlflow.sharedViewState.<key>``: an envelope ``{"name", "createdAt", "updatedAt", "state"}`` (``state`` the view's
JSON as a string) that its runs page lists by name under "Views" and opens for the URL query
``viewStateShareKey=<key>``. It colours a run by its tag ``mlflow.runColor``. ``lth imp`` writes two views into every
study's experiment:

* :data:`CHAINS_VIEW`: the chain runs grouped by condition (mean line over seeds with a min-max band),
  charts of ``ticket/best_return`` against level and against ``density``, and ``density`` against level;
* :data:`LEVELS_VIEW`: every finished level run, a scatter of ``ticket/best_return`` against ``density``.

The JSON follows the UI's own view state (checked against the 3.17 bundle and in a browser, tests/test_mlflow_ui.py).
Limits of that UI: an x axis is logarithmic only when it is the step (it ignores ``xAxisScaleType`` for a metric x
axis), so the paper's log-density axis is the chart against level (density shrinks geometrically with the level); and
a group takes a colour hashed from ``tag.<name>.<value>``, not its runs' ``mlflow.runColor`` (which shows on ungrouped
runs only: the level scatter, a chain view without grouping). Grouped by the tag ``condition``, two paper conditions
(permuted/permuted and random/reinit) hash to one colour; grouped by :data:`GROUP_TAG` (the same value under another
name) every registered condition gets its own, so the views group by that.
"""

from __future__ import annotations

import json
from typing import Any

from lth.callbacks import condition_names
from lth.store.tracking import VIEW_STATE

CHAINS_VIEW = "lth-chains"
LEVELS_VIEW = "lth-levels"
RUN_COLOR = "mlflow.runColor"
GROUP_TAG = "imp.condition"
#: matplotlib's tab10 colours: the conditions keep the colours of ``lth report``'s figures (registry order).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def condition_colour(condition: str) -> str:
    """The colour of a condition's runs: its place in the condition registry picks a tab10 colour."""
    names = condition_names()
    return PALETTE[(names.index(condition) if condition in names else len(names)) % len(PALETTE)]


def run_tags(condition: str) -> dict[str, str]:
    """The tags that show a chain's or level's run in the UI: its condition's colour and grouping key."""
    return {RUN_COLOR: condition_colour(condition), GROUP_TAG: condition}


def _line(uuid: str, metric: str, x_metric: str | None = None) -> dict[str, Any]:
    """A line chart of ``metric`` against step (= level for chain runs) or against another metric (linear x axis)."""
    return {"uuid": uuid, "type": "LINE", "metricSectionId": "lth", "metricKey": metric,
            "selectedMetricKeys": [metric], "xAxisKey": "metric" if x_metric else "step",
            "selectedXAxisMetricKey": x_metric or "", "scaleType": "linear", "xAxisScaleType": "linear",
            "lineSmoothness": 0, "runsCountToCompare": 100, "range": {}, "yAxisKey": "metric", "yAxisExpressions": [],
            "useGlobalXaxisKey": False, "useGlobalLineSmoothing": False, "ignoreOutliers": False, "deleted": False,
            "isGenerated": False}


def _view(name: str, search: str, columns: list[str], charts: list[dict[str, Any]], group: bool) -> str:
    """A saved view's tag value named ``name``: runs sorted by name, all of them in the charts, the lth chart section
    above the sections the UI generates per metric prefix (``isAccordionReordered`` keeps the given order instead of
    sorting by name). A fixed creation time keeps the tag the same when a study is run again."""
    state = {
        "searchFilter": search, "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True, "startTime": "ALL",
        "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True, "isAccordionReordered": True,
        "viewMaximized": False, "runListHidden": False, "useGroupedValuesInCharts": group,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": GROUP_TAG}]}
        if group else None,
        "compareRunSections": [{"uuid": "lth", "name": "IMP: conditions side by side", "display": True,
                                "isReordered": False, "deleted": False, "isGenerated": False}],
        "compareRunCharts": charts,
    }
    return json.dumps({"name": name, "createdAt": 0, "updatedAt": 0, "state": json.dumps(state)})


def study_views() -> dict[str, str]:
    """The experiment tags of the two saved views of an IMP study."""
    columns = ["tags.`condition`", "tags.`seed`", "metrics.`ticket/best_return`", "metrics.`density`"]
    chains = _view(CHAINS_VIEW, "tags.`lth.role` = 'chain'", columns,
                   [_line("best-vs-level", "ticket/best_return"),
                    _line("best-vs-density", "ticket/best_return", x_metric="density"),
                    _line("density-vs-level", "density")], group=True)
    scatter = {"uuid": "level-scatter", "type": "SCATTER", "metricSectionId": "lth",
               "xaxis": {"key": "density", "type": "METRIC"}, "yaxis": {"key": "ticket/best_return", "type": "METRIC"},
               "runsCountToCompare": 1000, "deleted": False, "isGenerated": False}
    levels = _view(LEVELS_VIEW, "tags.`lth.level_complete` = 'true'", [*columns, "tags.`level`"], [scatter],
                   group=False)
    return {VIEW_STATE + CHAINS_VIEW: chains, VIEW_STATE + LEVELS_VIEW: levels}
