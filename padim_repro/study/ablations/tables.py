"""Tables of the ablation notebooks: our rows next to the paper's Tables I and II, per category, per sigma.

All in %; ours are means over the categories run (and, for random subsets, mean ± std over the seeds of that
category mean); the paper's are means over all 15 MVTec AD categories, with their source marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import reference
from ..report import METRIC_LABEL, METRICS
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


def _select(df: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in selector.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def seed_spread(rows: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the mean over categories for each seed, then mean and std (ddof 1) over seeds, in %.

    Returns one row per metric with ``mean``, ``std`` (NaN for a single seed), ``n_seeds``, ``n_categories``.
    """
    per_seed = rows.assign(seed=rows.seed.fillna(-1)).groupby("seed")[list(METRICS)].mean() * 100
    out = pd.DataFrame({"mean": per_seed.mean(), "std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan})
    return out.assign(n_seeds=len(per_seed), n_categories=rows.category.nunique())


def _fmt(mean: float, std: float = np.nan) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _paper_cell(model: str, category: str, metric: str, paper: pd.DataFrame | None = None) -> str:
    cell = reference.paper_value(reference.paper() if paper is None else paper, model, category, metric)
    return f"{cell[0]:.1f} ({cell[1]})" if cell else "not published"


def comparison_table(experiment: str, df: pd.DataFrame) -> pd.DataFrame:
    """Our rows of the paper's Table I (``layers``) or II (``n_features``) next to the paper's, in %.

    Ours: the mean over the categories run (listed in ``over``), and for random subsets the mean ± std over the
    seeds of that category mean. The paper's: the mean over all 15 MVTec AD categories, with its source mark;
    the paper reports no image AUROC for these rows.
    """
    paper = reference.paper()
    rows = []
    for label, model, selector in PAPER_ROWS[experiment]:
        sub = _select(df, selector)
        spread = seed_spread(sub) if len(sub) else None
        row: dict[str, Any] = {"variant": label}
        for metric in METRICS:
            ours = _fmt(*spread.loc[metric, ["mean", "std"]]) if spread is not None else "not run"
            row[f"{METRIC_LABEL[metric]} ours"] = ours
            if metric != "image_auroc":
                row[f"{METRIC_LABEL[metric]} paper"] = _paper_cell(model, "all", metric, paper)
        row["seeds"] = int(spread.n_seeds.iloc[0]) if spread is not None else 0
        row["over (ours)"] = ", ".join(sorted(sub.category.unique())) or "none"
        row["paper over"] = "15 categories"
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def n_features_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Every (method, d) of the n_features sweep: mean ± std over seeds of the mean over categories, in %."""
    rows = []
    for (method, d), sub in df.groupby(["method", "d"], sort=True):
        spread = seed_spread(sub)
        rows.append({"method": method, "d": int(d), "seeds": int(spread.n_seeds.iloc[0]),
                     **{METRIC_LABEL[m]: _fmt(*spread.loc[m, ["mean", "std"]]) for m in METRICS}})  # fmt: skip
    order = {"random": 0, "pca": 1, "all": 2}
    return pd.DataFrame(rows).sort_values(["method", "d"], key=lambda s: s.map(order) if s.name == "method" else s)


def per_category_table(df: pd.DataFrame, index: str | list[str] = "variant") -> pd.DataFrame:
    """Mean over seeds of each metric, in %, one column per (metric, category)."""
    table = df.groupby([*([index] if isinstance(index, str) else index), "category"], sort=False)[list(METRICS)]
    wide = (table.mean() * 100).unstack("category")
    wide.columns = [f"{METRIC_LABEL[m]} {c}" for m, c in wide.columns]
    return wide.round(2)


def sigma_table(df: pd.DataFrame) -> pd.DataFrame:
    """Metrics (in %) for each sigma: the mean over the categories run, then each category."""
    mean = (df.groupby("sigma")[list(METRICS)].mean() * 100).round(2)
    mean.columns = [f"{METRIC_LABEL[m]} mean" for m in METRICS]
    return mean.join(per_category_table(df, "sigma"))


def paper_rd100_reference(categories: Sequence[str]) -> pd.DataFrame:
    """The paper's R18-Rd100 values (Table III, sigma 4, resize 256 + crop 224) for the categories and all 15."""
    paper = reference.paper()
    model = reference.PAPER_MODEL[BACKBONE]
    rows = []
    for cat in [*categories, "all"]:
        rows.append({"category": cat if cat != "all" else "all (mean of 15)",
                     **{METRIC_LABEL[m]: _paper_cell(model, cat, m, paper) for m in METRICS}})  # fmt: skip
    return pd.DataFrame(rows).set_index("category")


def protocol_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per category and protocol: our metrics (%), and those of the public reproduction that used the same
    protocol (%): xiahaifeng1995's used the paper's resize 256 + crop 224, anomalib's resize 256 without crop
    (and its own channel subset, seed 42)."""
    repro = reference.reproductions()
    which = {"paper": "xiahaifeng1995", "no_crop": "anomalib"}
    rows = []
    for _, r in df.iterrows():
        row: dict[str, Any] = {"category": r.category, "protocol": r.variant}
        row.update({f"{METRIC_LABEL[m]} ours": round(100 * r[m], 2) for m in METRICS})
        short = which.get(r.protocol, "")
        row["reproduction (same protocol)"] = short or "—"
        for m in ("image_auroc", "pixel_auroc"):
            q = repro[(repro.short == short) & (repro.backbone == reference.REPRO_BACKBONE[BACKBONE])
                      & (repro.category == r.category) & (repro.metric == m)]  # fmt: skip
            row[f"{METRIC_LABEL[m]} reproduction"] = f"{100 * q.value.iloc[0]:.1f}" if len(q) else "—"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["category", "protocol"])


def timing_summary(results_root: str | Path, experiment: str, categories: Sequence[str] | None = None) -> str:
    """Markdown lines: per category, whether the last invocation computed or reused its rows, when and at which
    commit they were computed, and how long that took."""
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
        lines.append(f"- **{cat}**: {how}; computed in {g['seconds']:.0f} s (of which {g['embeddings_seconds']:.0f} s "
                     f"for the backbone) at commit `{(g.get('git_commit') or 'unknown')[:12]}`")  # fmt: skip
    lines.append(f"- this invocation: {last['seconds']:.0f} s on {last['device']} ({last['workers']} worker threads "
                 f"with one torch thread each; load average {last['load_average']} at the end)")  # fmt: skip
    return "\n".join(lines)


def pca_table(df: pd.DataFrame) -> pd.DataFrame:
    """The PCA probe: each variant's metrics (%), mean over the categories run, then per category; the paper's
    PCA100 and Rd100 (means over 15 categories) beside the variants they correspond to."""
    paper = reference.paper()
    paper_model = {"pca_pooled_top": "PaDiM-R18-PCA100", "random": "PaDiM-R18-Rd100 (mean of 10 seeds)"}
    rows = []
    for (variant, method), sub in df.groupby(["variant", "method"], sort=False):
        row: dict[str, Any] = {"variant": variant}
        row.update({f"{METRIC_LABEL[m]} ours": round(100 * sub[m].mean(), 2) for m in METRICS})
        for m in ("pixel_auroc", "pro"):
            row[f"{METRIC_LABEL[m]} paper"] = (_paper_cell(paper_model[method], "all", m, paper)
                                               if method in paper_model else "not in the paper")  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant").join(per_category_table(df))

