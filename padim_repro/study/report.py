"""Tables for the notebooks and the book: one run's metrics, and all runs against the paper and reproductions.

Every measured number comes from a run's ``metrics.json``; every published number from
:mod:`~padim_repro.study.reference`.
Group means (textures / objects / all) are computed only over the categories actually run, and say which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import OBJECTS, TEXTURES, category_group
from . import reference
from .runs import METRICS_FILE

METRICS = ("image_auroc", "pixel_auroc", "pro")
#: Statuses of runs whose results exist (computed by this invocation, or reused).
DONE = ("ran", "reused")
METRIC_LABEL = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO"}


def metrics_table(record: dict[str, Any]) -> pd.DataFrame:
    """One run's metrics in %, with the paper's and the reproductions' value for the same category and backbone."""
    paper, repro = reference.paper(), reference.reproductions()
    backbone, category = record["backbone"], record["category"]
    rows = []
    for metric in METRICS:
        row: dict[str, Any] = {"metric": METRIC_LABEL[metric], "this run": 100 * record[metric]}
        cell = reference.paper_value(paper, reference.PAPER_MODEL.get(backbone, ""), category, metric)
        row["paper"] = f"{cell[0]:.1f} ({cell[1]})" if cell else "not published"
        for short in reference.REPRO_SHORT.values():
            value = reference.repro_value(repro, short, backbone, category, metric)
            row[short] = f"{100 * value:.1f}" if value is not None else "—"
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric").round(2)


def load_status(results_root: str | Path) -> dict[str, Any] | None:
    """``RESULTS/status.json`` written by ``make reproduce``, or None before any run."""
    path = Path(results_root) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def runs_frame(results_root: str | Path) -> pd.DataFrame:
    """One row per (category, backbone) of the last reproduction: status, reason and metrics (fractions)."""
    status = load_status(results_root)
    if status is None:
        return pd.DataFrame(columns=["category", "backbone", "group", "status", "reason", *METRICS])
    rows = []
    for run in status["runs"]:
        row = {k: run[k] for k in ("category", "backbone", "status", "reason", "run_dir", "notebook")}
        row["group"] = category_group(run["category"])
        if run["status"] in DONE:
            rec = json.loads((Path(results_root) / run["run_dir"] / METRICS_FILE).read_text())
            row.update({m: rec[m] for m in METRICS})
            row["seconds_fit"] = rec["timings"]["fit_s"]
            row["seconds_per_test_image"] = rec["timings"]["predict_per_image_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per category and backbone: ours vs paper vs reproductions (all in %), with deltas to the paper.

    Cells that were not run say why; paper cells the paper (as available here) lacks are NaN.
    """
    paper, repro = reference.paper(), reference.reproductions()
    rows = []
    for _, r in runs.iterrows():
        model = reference.PAPER_MODEL.get(r.backbone, r.backbone)
        out: dict[str, Any] = {"category": r.category, "backbone": r.backbone, "status": r.status}
        for metric in METRICS:
            ours = 100 * r[metric] if r.status in DONE else np.nan
            cell = reference.paper_value(paper, model, r.category, metric)
            out[f"{metric} ours"] = ours
            out[f"{metric} paper"] = cell[0] if cell else np.nan
            out[f"{metric} paper source"] = cell[1] if cell else ""
            out[f"{metric} Δ paper"] = ours - cell[0] if cell else np.nan
            if metric != "pro":
                for short in reference.REPRO_SHORT.values():
                    value = reference.repro_value(repro, short, r.backbone, r.category, metric)
                    out[f"{metric} {short}"] = 100 * value if value is not None else np.nan
                    out[f"{metric} Δ {short}"] = ours - out[f"{metric} {short}"]
        out["note"] = r.reason if r.status not in DONE else ""
        rows.append(out)
    return pd.DataFrame(rows).round(2)


def group_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Means of our metrics (in %) over the categories run, per backbone and group, next to the paper's means.

    The paper's textures / objects / all means are over all 5 / 10 / 15 categories; ours only over those run,
    listed in ``over``, so the two are comparable only when ``over`` is complete.
    """
    paper = reference.paper()
    groups = {"textures": TEXTURES, "objects": OBJECTS, "all": TEXTURES + OBJECTS}
    rows = []
    for backbone in runs.backbone.unique():
        done = runs[(runs.backbone == backbone) & runs.status.isin(list(DONE))]
        model = reference.PAPER_MODEL.get(backbone, backbone)
        for group, members in groups.items():
            sub = done[done.category.isin(members)]
            row: dict[str, Any] = {"backbone": backbone, "group": group, "n run": len(sub),
                                   "n in paper": len(members), "over": ", ".join(sub.category) or "none"}  # fmt: skip
            for metric in METRICS:
                row[f"{metric} ours"] = 100 * sub[metric].mean() if len(sub) else np.nan
                cell = reference.paper_value(paper, model, group, metric)
                row[f"{metric} paper"] = cell[0] if cell else np.nan
                row[f"{metric} paper source"] = cell[1] if cell else ""
            rows.append(row)
    return pd.DataFrame(rows).round(2)


def coverage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Category x backbone grid of what was run, and why not where it was not."""
    def cell(r: pd.Series) -> str:
        return r.status if r.status in DONE else f"{r.status}: {r.reason.split(':')[0]}"

    if runs.empty:
        return pd.DataFrame()
    grid = runs.assign(cell=runs.apply(cell, axis=1)).pivot(index="category", columns="backbone", values="cell")
    order = [c for c in TEXTURES + OBJECTS if c in grid.index] + [c for c in grid.index if c not in TEXTURES + OBJECTS]
    return grid.loc[order]
