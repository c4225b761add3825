"""Tables for the notebooks and the book: one run's metrics, and all runs against the paper and reproductions.

Every measured number comes from a run's ``metrics.json``; every published number
from :mod:`~padim_repro.study.reference`. Means over categories are the headline's
(:func:`~padim_repro.study.evidence.headline_markdown`): over exactly the categories run, beside the same categories'
published values.

Two kinds of functions: the data (:func:`runs_frame`, :func:`comparison_table`,
:func:`coverage_table`: raw numbers, metrics as fractions or %, NaN where missing; what the CSV files keep) and
their display (the ``*_display`` functions, :func:`metrics_table`, :func:`thresholded_table`,
:func:`provenance_table`: :class:`~padim_repro.study.display.Table` objects formatted by
:mod:`~padim_repro.study.display`, "—" with a note under the table instead of NaN).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import OBJECTS, TEXTURES, category_group
from . import reference
from .display import (
    DASH,
    Table,
    Tables,
    dash_note,
    interval,
    is_missing,
    noted,
    number,
    percent,
    signed,
    sourced,
    table,
)
from .runs import BOOTSTRAP, METRICS_FILE, vouches

METRICS = ("image_auroc", "pixel_auroc", "pro")
#: Statuses of runs whose results exist (computed by this invocation, or reused).
DONE = ("ran", "reused")
#: The status of a run that ``status.json`` lists as done but whose folder no longer holds it whole.
INCOMPLETE = "incomplete"
INCOMPLETE_REASON = ("run folder incomplete: its manifest.json is missing or an output changed since the run "
                     "finished; rerun make reproduce")  # fmt: skip
METRIC_LABEL = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO"}
#: The thresholded metrics every run records beyond the paper's (:mod:`padim_repro.metrics.thresholded`).
THRESHOLDED = ("image_f1_max", "image_ap", "pixel_f1_max", "pixel_ap")
THRESHOLDED_LABEL = {"image_f1_max": "image F1-max", "image_ap": "image AP", "pixel_f1_max": "pixel F1-max",
                     "pixel_ap": "pixel AP"}  # fmt: skip
#: Display names of the other metrics a run records.
OTHER_LABEL = {"per_defect_image_auroc": "per-defect image AUROC"}

SOURCE_NOTE = ("Source marks of the paper's values: R = quoted identically by two independent reproductions; "
               "S2 = agreed by two or more independent summaries of the paper; S1 = one summary; T = the paper's text "
               "(padim_repro/study/published/README.md).")  # fmt: skip
DELTA_NOTE = "Δ: ours minus the value it is compared with, in percentage points."
THRESHOLDED_NOTE = ("F1-max: the best F1 over all thresholds (the threshold an oracle would choose; anomalib's "
                    "F1Max). AP: average precision, the area under the precision-recall curve. Pixel level: every "
                    "pixel of the test set is one sample.")  # fmt: skip
PAPER_MISSING = "the paper (as available offline) gives no value for this category and model"
REPRO_MISSING = "the reproduction reports no value for this category and metric (neither reports PRO)"
#: Why a metric has no bootstrap interval, beyond a run recorded before the intervals.
NO_INTERVAL = {"pixel_ap": "pixel AP gets no interval (its bootstrap needs every step of the pixel precision-recall "
                           "curve, millions per resample)"}  # fmt: skip
OLD_RUN = "this run was recorded before the bootstrap intervals and thresholded metrics: rerun it to get them"


# -- one run ------------------------------------------------------------------------------------------------------
def _level(record: Mapping[str, Any]) -> str:
    level = record.get("intervals", {}).get("level", BOOTSTRAP["level"])
    return f"{100 * level:g} % interval"


def _bounds(record: Mapping[str, Any], metric: str) -> tuple[Any, Any]:
    bounds = record.get("intervals", {}).get(metric) or {}
    return bounds.get("low"), bounds.get("high")


def _interval_reasons(record: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """Why the metrics shown without an interval have none."""
    reasons = []
    for m in metrics:
        if not is_missing(_bounds(record, m)[0]):
            continue
        if "intervals" not in record:
            reasons.append(OLD_RUN)
        elif m in NO_INTERVAL:
            reasons.append(NO_INTERVAL[m])
        else:
            reasons.append(f"{metric_label(m)} is undefined on every resample")
    return "; ".join(dict.fromkeys(reasons))


def metric_label(metric: str) -> str:
    """The display name of a paper or thresholded metric ("pixel AUROC", "image F1-max"), or of the per-defect one."""
    return METRIC_LABEL.get(metric) or THRESHOLDED_LABEL.get(metric) or OTHER_LABEL[metric]


def _undefined(record: Mapping[str, Any]) -> str:
    why = record.get("undefined") or {}
    return "; ".join(f"{metric_label(m)} is undefined on this test set ({text})" for m, text in why.items()) or OLD_RUN


def _interval_note(record: Mapping[str, Any]) -> str | None:
    iv = record.get("intervals")
    if not iv:
        return None
    return (f"{_level(record)}: {iv.get('method', 'bootstrap')}, {iv.get('n_resamples')} resamples of the test images "
            f"(seed {iv.get('seed')}; padim_repro.study.uncertainty).")  # fmt: skip


def metrics_table(record: dict[str, Any]) -> Table:
    """One run's paper metrics in % (2 decimals: the run's own page) with their bootstrap interval, next to the
    paper's and the two reproductions' values for the same category and backbone (1 decimal, as published)."""
    paper, repro = reference.paper(), reference.reproductions()
    backbone, category, level = record["backbone"], record["category"], _level(record)
    rows = []
    for metric in METRICS:
        cell = reference.paper_value(paper, reference.PAPER_MODEL.get(backbone, ""), category, metric)
        row = {"metric": METRIC_LABEL[metric], "this run": percent(record.get(metric), 2),
               level: interval(*_bounds(record, metric), 2), "paper": sourced(*(cell or (None, None)))}  # fmt: skip
        for short in reference.REPRO_SHORT.values():
            row[short] = percent(reference.repro_value(repro, short, backbone, category, metric))
        rows.append(row)
    styler = table(pd.DataFrame(rows))
    reasons = {"this run": _undefined(record), level: _interval_reasons(record, METRICS), "paper": PAPER_MISSING,
               **dict.fromkeys(reference.REPRO_SHORT.values(), REPRO_MISSING)}  # fmt: skip
    return noted(styler, dash_note(styler, reasons), _interval_note(record), SOURCE_NOTE)


def thresholded_table(record: dict[str, Any]) -> Table:
    """One run's thresholded metrics (beyond the paper, which reports none; anomalib reports F1) in %, with their
    bootstrap interval."""
    level = _level(record)
    rows = [{"metric": THRESHOLDED_LABEL[m], "this run": percent(record.get(m), 2),
             level: interval(*_bounds(record, m), 2)} for m in THRESHOLDED]  # fmt: skip
    styler = table(pd.DataFrame(rows), caption="Beyond the paper (anomalib reports F1), in %")
    reasons = {"this run": _undefined(record), level: _interval_reasons(record, THRESHOLDED)}
    return noted(styler, dash_note(styler, reasons), THRESHOLDED_NOTE)


def _seconds(value: Any) -> str:
    return DASH if is_missing(value) else f"{number(value, 1)} s"


def provenance_table(record: dict[str, Any]) -> Table:
    """Where and how one run was computed, as a 2-column table: commit, machine, weights, data, versions, timings
    (seconds to 0.1 s, per image to 1 ms)."""
    t, w, data = record.get("timings", {}), record.get("weights", {}), record.get("data", {})
    per_image = t.get("predict_per_image_s")
    weights_id = ("weights sha256", w["file_sha256"]) if w.get("file_sha256") else ("weights fingerprint",
                                                                                   w.get("fingerprint"))
    rows = {
        "run key": record.get("run_key") or record.get("config_key"),
        "commit": record.get("git_commit"),
        "CPU": record.get("machine", {}).get("cpu"),
        "device, torch threads": f"{record.get('device')}, {record.get('torch_threads')}",
        "weights": w.get("file") or w.get("spec"),
        weights_id[0]: weights_id[1],
        "data": f"{data.get('root')}: {data.get('n_train')} training, {data.get('n_test')} test images",
        "data sha256": data.get("sha256"),
        "versions": ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items()),
        "fit": _seconds(t.get("fit_s")),
        "inference": f"{_seconds(t.get('predict_s'))} ({number(None if per_image is None else 1e3 * per_image, 0)} "
                     "ms per image)",
        "metrics, bootstrap": f"{_seconds(t.get('metrics_s'))}, {_seconds(t.get('bootstrap_s'))}",
        "total": _seconds(t.get("total_s")),
    }  # fmt: skip
    values = [DASH if is_missing(v) else str(v) for v in rows.values()]
    styler = table(pd.DataFrame({"item": list(rows), "value": values}))
    return noted(styler, dash_note(styler, {"value": "not recorded by this run (it predates that field)"}))


# -- all runs -----------------------------------------------------------------------------------------------------
def load_status(results_root: str | Path) -> dict[str, Any] | None:
    """``RESULTS/status.json`` written by ``make reproduce``, or None before any run."""
    path = Path(results_root) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _float(value: Any) -> float:
    return np.nan if value is None else float(value)


def record_values(record: Mapping[str, Any]) -> dict[str, float]:
    """A run's metrics (fractions, NaN where undefined or not recorded) and their interval bounds (``METRIC low``,
    ``METRIC high``)."""
    row = {m: _float(record.get(m)) for m in (*METRICS, *THRESHOLDED)}
    for m in (*METRICS, *THRESHOLDED):
        low, high = _bounds(record, m)
        row[f"{m} low"], row[f"{m} high"] = _float(low), _float(high)
    return row


def runs_frame(results_root: str | Path) -> pd.DataFrame:
    """One row per (category, backbone) of the last reproduction: status, reason and metrics (fractions), with the
    thresholded metrics and every metric's interval bounds (:func:`record_values`). A run is reported only while it
    is complete (:func:`~padim_repro.study.runs.vouches`: its manifest vouches for its metrics.json); else its
    status is :data:`INCOMPLETE`."""
    status = load_status(results_root)
    if status is None:
        return pd.DataFrame(columns=["category", "backbone", "group", "status", "reason", *METRICS])
    rows = []
    for run in status["runs"]:
        row = {k: run[k] for k in ("category", "backbone", "status", "reason", "run_dir", "notebook")}
        row["group"] = category_group(run["category"])
        if run["status"] in DONE and not vouches(Path(results_root) / run["run_dir"], (METRICS_FILE,)):
            row["status"], row["reason"] = INCOMPLETE, INCOMPLETE_REASON
        elif run["status"] in DONE:
            rec = json.loads((Path(results_root) / run["run_dir"] / METRICS_FILE).read_text())
            row.update(record_values(rec))
            row["seconds_fit"] = rec["timings"]["fit_s"]
            row["seconds_per_test_image"] = rec["timings"]["predict_per_image_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per category and backbone: ours (with its interval) vs paper vs reproductions, all in %, with the deltas.

    Data (the CSV copy): cells that were not run, or that the paper (as available here) lacks, are NaN; ``note``
    says why a cell was not run.
    """
    paper, repro = reference.paper(), reference.reproductions()
    rows = []
    for _, r in runs.iterrows():
        model = reference.PAPER_MODEL.get(r.backbone, r.backbone)
        out: dict[str, Any] = {"category": r.category, "backbone": r.backbone, "status": r.status}
        for metric in METRICS:
            done = r.status in DONE
            ours = 100 * r[metric] if done else np.nan
            cell = reference.paper_value(paper, model, r.category, metric)
            out[f"{metric} ours"] = ours
            out[f"{metric} ours low"] = 100 * r.get(f"{metric} low", np.nan) if done else np.nan
            out[f"{metric} ours high"] = 100 * r.get(f"{metric} high", np.nan) if done else np.nan
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


INTERVAL_MISSING = "no interval recorded (a run from before the bootstrap intervals, or undefined on every resample)"


def per_category_display(comparison: pd.DataFrame, backbone: str) -> Tables | None:
    """:func:`comparison_table`'s rows of ``backbone`` that were run, one table per metric (so that each fits the
    page): category, ours and its interval, the paper's value (source mark) and Δ, each reproduction and Δ; in %,
    deltas in signed points. None when no category was run with ``backbone``."""
    ran = comparison[(comparison.backbone == backbone) & comparison.status.isin(list(DONE))]
    if ran.empty:
        return None
    level, tables = _level({}), []
    for metric in METRICS:
        bounds = zip(ran[f"{metric} ours low"], ran[f"{metric} ours high"])
        view: dict[tuple[str, str], list[str]] = {
            ("category", ""): ran.category.tolist(), ("ours", "%"): ran[f"{metric} ours"].map(number).tolist(),
            ("ours", level): [interval(lo / 100, hi / 100) for lo, hi in bounds],
            ("paper", "%"): [sourced(v, s) for v, s in zip(ran[f"{metric} paper"], ran[f"{metric} paper source"])],
            ("paper", "Δ"): ran[f"{metric} Δ paper"].map(signed).tolist()}  # fmt: skip
        for short in reference.REPRO_SHORT.values():
            if f"{metric} {short}" in ran:
                view[(short, "%")] = ran[f"{metric} {short}"].map(number).tolist()
                view[(short, "Δ")] = ran[f"{metric} Δ {short}"].map(signed).tolist()
        styler = table(pd.DataFrame(view), caption=f"{METRIC_LABEL[metric]} (%)")
        reasons = {level: INTERVAL_MISSING, "paper": PAPER_MISSING,
                   **dict.fromkeys(reference.REPRO_SHORT.values(), REPRO_MISSING)}  # fmt: skip
        tables.append(noted(styler, dash_note(styler, reasons)))
    tables[-1] = noted(tables[-1].styler, *tables[-1].notes, DELTA_NOTE, SOURCE_NOTE)
    return Tables(tables)


def thresholded_display(runs: pd.DataFrame, backbone: str) -> Table | None:
    """The thresholded metrics (beyond the paper) of every category run with ``backbone``, in %, with their
    intervals; None when none was run."""
    ran = runs[(runs.backbone == backbone) & runs.status.isin(list(DONE))]
    if ran.empty:
        return None
    level = _level({})
    cols: dict[tuple[str, str], Any] = {("category", ""): list(ran.category)}
    for m in THRESHOLDED:
        cols[(THRESHOLDED_LABEL[m], "ours")] = ran[m].map(percent).tolist()
        if m not in NO_INTERVAL:
            cols[(THRESHOLDED_LABEL[m], level)] = [interval(lo, hi)
                                                   for lo, hi in zip(ran[f"{m} low"], ran[f"{m} high"])]
    styler = table(pd.DataFrame(cols), caption="Thresholded metrics, beyond the paper (%)")
    reasons = {"ours": OLD_RUN + " (or the metric is undefined on its test set)", level: INTERVAL_MISSING}
    return noted(styler, dash_note(styler, reasons), THRESHOLDED_NOTE, NO_INTERVAL["pixel_ap"] + ".")


def coverage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Category x backbone grid of what was run (and on what, when not the official data), and why not where it was
    not."""
    def cell(r: pd.Series) -> str:
        return r.status if r.status in DONE and not r.reason else f"{r.status}: {r.reason.split(':')[0]}"

    if runs.empty:
        return pd.DataFrame()
    grid = runs.assign(cell=runs.apply(cell, axis=1)).pivot(index="category", columns="backbone", values="cell")
    order = [c for c in TEXTURES + OBJECTS if c in grid.index] + [c for c in grid.index if c not in TEXTURES + OBJECTS]
    return grid.loc[order]


def coverage_display(runs: pd.DataFrame) -> Table | None:
    """:func:`coverage_table` with one column per backbone and short cells (the reasons without their details,
    which :func:`not_run_display` gives); None before any run."""
    grid = coverage_table(runs)
    if grid.empty:
        return None
    short = grid.map(lambda c: re.sub(r"\s*\(.*$", "", c) if isinstance(c, str) else c).reset_index()
    short.columns.name = None
    styler = table(short)
    return noted(styler, dash_note(styler, {c: "not part of this reproduction" for c in grid.columns}))


def not_run_display(runs: pd.DataFrame, width: int = 160) -> Table | None:
    """The distinct reasons for the cells not run (a category's own name written CATEGORY, so that one reason
    covers them all), each with its categories, cut to ``width`` characters; None when every cell was run."""
    missing = runs[~runs.status.isin(list(DONE))]
    if missing.empty:
        return None
    groups: dict[tuple[str, str, str], list[str]] = {}
    for _, r in missing.iterrows():
        reason = re.sub(rf"\b{re.escape(r.category)}\b", "CATEGORY", str(r.reason))
        reason = reason if len(reason) <= width else reason[:width] + " …"
        groups.setdefault((r.backbone, r.status, reason), []).append(r.category)
    rows = [{"backbone": b, "status": s, "reason": reason, "categories": ", ".join(cats)}
            for (b, s, reason), cats in groups.items()]  # fmt: skip
    return noted(table(pd.DataFrame(rows)))
