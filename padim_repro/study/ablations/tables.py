"""Tables of the ablation notebooks: our rows next to the paper's Tables I and II, per category, per sigma.

All in %; ours are means over the categories run (and, for random subsets, mean ± std over the seeds of that
category mean); the paper's are means over all 15 MVTec AD categories, with their source marks. The ``*_frame``
functions give the numbers; the others their display (:class:`~padim_repro.study.display.Table`, formatted by
:mod:`~padim_repro.study.display`: 1 decimal, deltas in signed points, "—" explained under the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import reference
from ..display import (DASH, Table, Tables, dash_note, mean_std, noted, number, signed_with_interval, sourced,
                       table)
from ..report import DELTA_NOTE, METRIC_LABEL, METRICS, PAPER_MISSING, SOURCE_NOTE
from .differences import delta_reach, select
from .embeddings import BACKBONE
from .experiments import store

#: Rows of the paper's Tables I and II: (our label, the paper's model name, how to select our rows).
PAPER_ROWS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "n_features": [
        ("Rd100 (mean of 10 seeds)", "PaDiM-R18-Rd100 (mean of 10 seeds)", {"method": "random", "d": 100}),
        ("Rd200", "PaDiM-R18-Rd200", {"method": "random", "d": 200}),
        ("PCA100", "PaDiM-R18-PCA100", {"method": "pca", "d": 100}),
        ("all 448", "PaDiM-R18 all 448 dims", {"method": "all"}),
    ],
    "layers": [
        ("layer1 only", "PaDiM-R18 layer1 only", {"variant": "layer1 only"}),
        ("layer2 only", "PaDiM-R18 layer2 only", {"variant": "layer2 only"}),
        ("layer3 only", "PaDiM-R18 layer3 only", {"variant": "layer3 only"}),
        ("layers 1+2+3, separate Gaussians summed", "PaDiM-R18 layers 1+2+3 as three separate models summed",
         {"method": "summed"}),
        ("all 448 (concatenated)", "PaDiM-R18 all 448 dims", {"method": "all"}),
    ],
}  # fmt: skip


def seed_spread(rows: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the mean over categories for each seed, then mean and std (ddof 1) over seeds, in %.

    Returns one row per metric with ``mean``, ``std`` (NaN for a single seed), ``n_seeds``, ``n_categories``.
    """
    per_seed = rows.assign(seed=rows.seed.fillna(-1)).groupby("seed")[list(METRICS)].mean() * 100
    out = pd.DataFrame({"mean": per_seed.mean(), "std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan})
    return out.assign(n_seeds=len(per_seed), n_categories=rows.category.nunique())


def _seeds(rows: pd.DataFrame) -> int:
    """Distinct seeds of the rows (0 for a deterministic variant: PCA, all channels, a layer)."""
    return int(rows.seed.nunique())


def _paper(model: str, category: str, metric: str, paper: pd.DataFrame) -> tuple[float, str]:
    cell = reference.paper_value(paper, model, category, metric)
    return cell if cell else (np.nan, "")


SEEDS_NOTE = "Seeds: how many random channel subsets (seeds) were averaged."
DETERMINISTIC = "a deterministic variant (no random choice, no seed)"
NOT_RUN = "not run (no row of this variant in the results)"
CATEGORY_MISSING = "not run on this category"


def _over(df: pd.DataFrame, seeds: bool = True) -> str:
    """The note saying what our means and the paper's are over."""
    cats = sorted(df.category.unique())
    spread = ", ± the standard deviation over seeds (ddof 1) of that mean where several seeds were run" if seeds else ""
    return (f"Ours: means over the {len(cats)} categories run ({', '.join(cats)}){spread}; the paper's: means over all "
            "15 MVTec AD categories, so the two are directly comparable only when all 15 were run.")  # fmt: skip


#: What the 95 % interval beside a delta holds (:func:`~padim_repro.study.ablations.differences.variant_difference`).
INTERVAL_NOTE = ("[low, high] beside a Δ: its 95 % interval, from the paired bootstrap of the test images (1,000 "
                 "resamples, the same draws for every variant of a category) and, where a variant was run with "
                 "several seeds, the spread over seeds (see the Protocol); a published value is taken as exact.")


def _reach_columns(row: dict[str, Any], reach: dict[str, tuple[float, float]]) -> None:
    """``METRIC below`` / ``METRIC above`` of a frame row: how far its Δ's interval reaches (NaN: none)."""
    for m in METRICS:
        row[f"{m} below"], row[f"{m} above"] = reach.get(m, (np.nan, np.nan))


def _with_interval(delta: Any, below: Any, above: Any) -> str:
    """A shown Δ (points) with the interval :func:`_reach_columns` recorded."""
    return signed_with_interval(delta, delta - below, delta + above)


def comparison_frame(experiment: str, df: pd.DataFrame, results: str | Path | None = None) -> pd.DataFrame:
    """Our rows of the paper's Table I (``layers``) or II (``n_features``) next to the paper's, in %: per row and
    metric our mean over the categories run and the std over seeds of that mean (``METRIC ours``, ``METRIC std``),
    the paper's mean over all 15 categories and its source mark; ``seeds`` and ``categories`` run (0: not run); with
    ``results`` (where the rows and their resamples are kept), how far the 95 % interval of ours reaches below and
    above it (``METRIC below`` / ``above``: the interval of Δ paper, the paper's value taken as exact)."""
    paper = reference.paper()
    cats = sorted(df.category.unique())
    rows = []
    for label, model, selector in PAPER_ROWS[experiment]:
        sub = select(df, selector)
        spread = seed_spread(sub) if len(sub) else None
        row: dict[str, Any] = {"variant": label, "seeds": _seeds(sub), "categories": sub.category.nunique()}
        for m in METRICS:
            row[f"{m} ours"], row[f"{m} std"] = spread.loc[m, ["mean", "std"]] if spread is not None else (np.nan,) * 2
            row[f"{m} paper"], row[f"{m} paper source"] = _paper(model, "all", m, paper)
        _reach_columns(row, delta_reach(results, experiment, {**selector, "category": cats}) if len(sub) else {})
        rows.append(row)
    return pd.DataFrame(rows)


def _versus_paper(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """Per metric, MultiIndex columns: ours (mean ± std), and for ``metrics`` the paper's value and Δ to it (with
    its interval where the frame has one)."""
    cols: dict[tuple[str, str], list[str]] = {}
    for m in METRICS:
        std = frame[f"{m} std"] if f"{m} std" in frame else [np.nan] * len(frame)
        cols[(METRIC_LABEL[m], "ours")] = [mean_std(v, s) for v, s in zip(frame[f"{m} ours"], std)]
        if m in metrics:
            cols[(METRIC_LABEL[m], "paper")] = [sourced(v, src) for v, src in zip(frame[f"{m} paper"],
                                                                                  frame[f"{m} paper source"])]
            delta = frame[f"{m} ours"] - frame[f"{m} paper"]
            cols[(METRIC_LABEL[m], "Δ paper")] = [_with_interval(*v) for v in zip(delta, frame[f"{m} below"],
                                                                                   frame[f"{m} above"])]
    return cols


def comparison_table(experiment: str, df: pd.DataFrame, results: str | Path | None = None) -> Table:
    """:func:`comparison_frame` as shown: per metric ours (mean ± std over seeds), the paper's (source mark) and
    Δ with its 95 % interval (given ``results``); the paper reports no image AUROC for these rows."""
    frame = comparison_frame(experiment, df, results)
    cols = {("variant", ""): frame.variant.tolist(),
            ("seeds", ""): [DASH if n == 0 else str(n) for n in frame.seeds], **_versus_paper(frame, METRICS[1:])}
    styler = table(pd.DataFrame(cols))
    reasons = {"seeds": DETERMINISTIC, "ours": NOT_RUN,
               "paper": "the paper (as available offline) gives no value for this row",
               "Δ paper": "no value to compare"}  # fmt: skip
    return noted(styler, dash_note(styler, reasons), SEEDS_NOTE, _over(df),
                 "The paper reports no image AUROC for these rows.", DELTA_NOTE, INTERVAL_NOTE, SOURCE_NOTE)


def n_features_summary(df: pd.DataFrame) -> Table:
    """Every (method, d) of the n_features sweep: mean ± std over seeds of the mean over categories, in %, with
    the number of seeds."""
    rows = []
    for (method, d), sub in df.groupby(["method", "d"], sort=True):
        spread = seed_spread(sub)
        rows.append({"method": method, "d": int(d), "seeds": _seeds(sub) or DASH,
                     **{METRIC_LABEL[m]: mean_std(*spread.loc[m, ["mean", "std"]]) for m in METRICS}})  # fmt: skip
    order = {"random": 0, "pca": 1, "all": 2}
    frame = pd.DataFrame(rows).sort_values(["method", "d"], key=lambda s: s.map(order) if s.name == "method" else s)
    styler = table(frame)
    return noted(styler, dash_note(styler, {"seeds": DETERMINISTIC}), SEEDS_NOTE, _over(df))


def per_category_table(df: pd.DataFrame, columns: str = "variant", by: str | None = None) -> Tables:
    """One table per metric, in %: a row per category run (per category and value of ``by`` when given) and the
    mean over them, a column per value of ``columns`` (in order of appearance; numbers under a ``columns`` header),
    each cell the mean over seeds.

    Categories are rows so that all 15 fit the page; the values of ``columns`` (variants, sigmas, d) are few."""
    keys = df[columns].drop_duplicates().tolist()
    numeric = pd.api.types.is_numeric_dtype(df[columns])
    header = {k: (columns, f"{k:g}") if numeric else k for k in keys}
    rows = ["category", *([by] if by else [])]
    tables = []
    for m in METRICS:
        wide = (df.groupby([*rows, columns], sort=False)[m].mean() * 100).unstack(columns)[keys]
        means = wide.groupby(level=by, sort=False).mean() if by else wide.mean().to_frame().T
        cols: dict[Any, list[str]] = {"category": [*wide.index.get_level_values("category"),
                                                   *[f"mean of {df.category.nunique()}"] * len(means)]}
        if by:
            cols[by] = [*wide.index.get_level_values(by), *means.index]
        if numeric:
            cols = {(c, ""): v for c, v in cols.items()}
        for k in keys:
            cols[header[k]] = [number(v) for v in [*wide[k], *means[k]]]
        styler = table(pd.DataFrame(cols), caption=f"{METRIC_LABEL[m]} (%)")
        tables.append(noted(styler, dash_note(styler, {h: CATEGORY_MISSING for h in header.values()})))
    return Tables(tables)


def n_features_per_category(df: pd.DataFrame) -> Tables:
    """The n_features sweep per category: one table per metric, a row per category and method (random subsets,
    PCA), a column per d (448: all channels, the same for both), the mean over seeds in %."""
    every = df[df.method == "all"]
    rows = pd.concat([df[df.method != "all"], every.assign(method="random"), every.assign(method="pca")])
    rows["method"] = rows.method.replace({"pca": "PCA"})
    rows = rows.sort_values(["method", "d"], ascending=[False, True], kind="stable")  # random, then PCA; d ascending
    tables = per_category_table(rows, "d", "method")
    random = df[df.method == "random"].groupby("d").seed.nunique()
    seeds = "; ".join(f"{n} seeds at d = {', '.join(str(d) for d in sub.index)}" for n, sub in random.groupby(random))
    note = (f"Random subsets: the mean over {seeds}. d = 448 is all channels (a random choice of all of them, or a "
            "full rotation by PCA, gives the same distances), computed once.")  # fmt: skip
    return Tables([noted(t.styler, *t.notes, note) for t in tables.tables])


def sigma_table(df: pd.DataFrame, results: str | Path | None = None) -> Tables:
    """Metrics (in %) for each sigma: the mean over the categories run with Δ to the paper's sigma = 4 (with its
    95 % interval, given ``results``), then one table per metric with each category."""
    mean = df.groupby("sigma")[list(METRICS)].mean() * 100
    cats = sorted(df.category.unique())
    cols: dict[tuple[str, str], list[str]] = {("sigma", ""): [f"{v:g}" for v in mean.index]}
    reach = {s: delta_reach(results, "sigma", {"sigma": s, "category": cats}, {"sigma": 4.0, "category": cats})
             if s != 4.0 and 4.0 in mean.index else {} for s in mean.index}  # fmt: skip
    for m in METRICS:
        cols[(METRIC_LABEL[m], "mean")] = mean[m].map(number).tolist()
        delta = mean[m] - mean[m].get(4.0, np.nan)
        cols[(METRIC_LABEL[m], "Δ to σ = 4")] = [_with_interval(delta[s], *reach[s].get(m, (np.nan, np.nan)))
                                                  for s in mean.index]  # fmt: skip
    styler = table(pd.DataFrame(cols), caption="Mean over the categories run (%)")
    first = noted(styler, dash_note(styler, {"Δ to σ = 4": "sigma = 4, the paper's, was not run"}),
                  "Δ to σ = 4: this sigma's mean minus that at the paper's sigma = 4, in percentage points.",
                  INTERVAL_NOTE)  # fmt: skip
    return Tables([first, *per_category_table(df, "sigma").tables])


def paper_rd100_reference(categories: Sequence[str]) -> Table:
    """The paper's R18-Rd100 values (Table III, sigma 4, resize 256 + crop 224) for the categories and all 15."""
    paper = reference.paper()
    model = reference.PAPER_MODEL[BACKBONE]
    rows = []
    for cat in [*categories, "all"]:
        rows.append({"category": cat if cat != "all" else "all (mean of 15)",
                     **{METRIC_LABEL[m]: sourced(*_paper(model, cat, m, paper)) for m in METRICS}})  # fmt: skip
    styler = table(pd.DataFrame(rows))
    return noted(styler, dash_note(styler, {METRIC_LABEL[m]: PAPER_MISSING for m in METRICS}), SOURCE_NOTE)


def protocol_table(df: pd.DataFrame, results: str | Path | None = None) -> Table:
    """Per category and protocol: our metrics (%), and those of the public reproduction that used the same
    protocol (%) with Δ (and its 95 % interval, given ``results``: ours, theirs taken as exact):
    xiahaifeng1995's used the paper's resize 256 + crop 224, anomalib's resize 256 without crop (and its own channel
    subset, seed 42)."""
    repro = reference.reproductions()
    reach = [delta_reach(results, "protocol", {"category": c, "protocol": p}) for c, p in zip(df.category,
                                                                                            df.protocol)]
    which = {"paper": "xiahaifeng1995", "no_crop": "anomalib"}
    cols: dict[tuple[str, str], list[Any]] = {("category", ""): df.category.tolist(),
                                              ("protocol", ""): df.variant.tolist(),
                                              ("reproduction", ""): [which.get(p, DASH) for p in df.protocol]}
    for m in METRICS:
        ours = 100 * df[m].to_numpy()
        cols[(METRIC_LABEL[m], "ours")] = [number(v) for v in ours]
        if m == "pro":
            continue
        theirs = [reference.repro_value(repro, which.get(p, ""), BACKBONE, c, m) for p, c in zip(df.protocol,
                                                                                                df.category)]
        theirs = np.array([np.nan if v is None else 100 * v for v in theirs])
        cols[(METRIC_LABEL[m], "theirs")] = [number(v) for v in theirs]
        cols[(METRIC_LABEL[m], "Δ")] = [_with_interval(v, *r.get(m, (np.nan, np.nan)))
                                         for v, r in zip(ours - theirs, reach)]  # fmt: skip
    styler = table(pd.DataFrame(cols))
    reasons = {"theirs": "the reproduction of the same protocol reports no value for this category",
               "Δ": "no value to compare"}  # fmt: skip
    return noted(styler, dash_note(styler, reasons), "Theirs: the value of the reproduction named in the row, which "
                 "used the same protocol; neither reproduction reports PRO.", DELTA_NOTE,
                 INTERVAL_NOTE.replace("a published value", "theirs"))  # fmt: skip


def timing_summary(results_root: str | Path, experiment: str, categories: Sequence[str] | None = None) -> str:
    """Markdown lines: per category, whether the last invocation computed or reused its rows, at which commit they
    were computed, and how long that took (the variants, and the backbone pass they share with the other
    experiments computed in the same invocation)."""
    manifest = store(results_root, experiment).manifest()
    last = manifest.get("last_invocation")
    if not last:
        return f"No rows recorded for {experiment} yet."
    lines = []
    for cat in categories or last["categories"]:
        g = manifest["groups"].get(cat)
        if g is None:
            continue
        how = "read back (same settings, data, weights and code)" if cat in last["reused"] else "computed"
        lines.append(f"- **{cat}**: {how}; its variants took {number(g['seconds'])} s after a backbone pass of "
                     f"{number(g['embeddings_seconds'])} s (shared by the experiments computed with it), at commit "
                     f"`{(g.get('git_commit') or 'unknown')[:12]}`")  # fmt: skip
    load = ", ".join(f"{x:.2f}" for x in last["load_average"])
    lines.append(f"- this invocation: {last['seconds']:.0f} s on {last['device']} ({last['workers']} worker threads "
                 f"with one torch thread each; load average {load} at the end)")  # fmt: skip
    return "\n".join(lines)


#: The PCA probe's variants that are rows of the paper's Table II.
PCA_PAPER_MODEL = {"pca_pooled_top": "PaDiM-R18-PCA100", "random": "PaDiM-R18-Rd100 (mean of 10 seeds)"}


def pca_table(df: pd.DataFrame, results: str | Path | None = None) -> Tables:
    """The PCA probe: each variant's metrics (%), mean over the categories run, with the paper's PCA100 and Rd100
    (means over 15 categories) and Δ (with its 95 % interval, given ``results``) beside the variants they
    correspond to; then one table per metric with each category."""
    paper = reference.paper()
    cats = sorted(df.category.unique())
    rows = []
    for (variant, method), sub in df.groupby(["variant", "method"], sort=False):
        row: dict[str, Any] = {"variant": variant}
        for m in METRICS:
            row[f"{m} ours"] = 100 * sub[m].mean()
            model = PCA_PAPER_MODEL.get(method, "") if (sub.d == 100).all() else ""  # the paper's rows are d = 100
            row[f"{m} paper"], row[f"{m} paper source"] = _paper(model, "all", m, paper)
        has_paper = any(np.isfinite(row[f"{m} paper"]) for m in METRICS)
        _reach_columns(row, delta_reach(results, "pca", {"variant": variant, "method": method, "category": cats})
                       if has_paper else {})  # fmt: skip
        rows.append(row)
    frame = pd.DataFrame(rows)
    styler = table(pd.DataFrame({("variant", ""): frame.variant.tolist(), **_versus_paper(frame, METRICS[1:])}),
                   caption="Mean over the categories run (%)")  # fmt: skip
    reasons = {"paper": "not a row of the paper's Table II (PCA100 and Rd100)", "Δ paper": "no value to compare"}
    main = noted(styler, dash_note(styler, reasons), _over(df, seeds=False),
                 "The paper reports no image AUROC for these rows.",
                 DELTA_NOTE, INTERVAL_NOTE, SOURCE_NOTE)  # fmt: skip
    return Tables([main, *per_category_table(df).tables])
