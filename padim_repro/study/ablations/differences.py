"""Differences between two variants of an ablation, each with a 95 % interval that holds both sources of noise.

What: :func:`variant_difference` gives, per metric, our difference A - B (points, mean over the categories both
were run on) and its interval (:func:`padim_repro.study.uncertainty.difference_interval`): the paired bootstrap of
the test images (every variant of a category was resampled on the same draws, kept beside the rows by
:class:`~padim_repro.study.rows.RowStore`) combined with the spread of the difference over channel seeds, where a
variant was run with several.

Why: a difference of a few tenths of a point on test sets of ~100 images may be sampling noise, and a difference
found with one random channel subset may not hold for another; a verdict on a claimed difference
(:func:`padim_repro.study.verdicts.difference_verdict`) reads this interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report import METRICS
from ..uncertainty import difference_interval, difference_values
from .experiments import store


@dataclass
class Difference:
    """Our difference A - B of one metric (points) with its 95 % interval and what the interval holds."""

    metric: str
    value: float
    low: float
    high: float
    paired: bool  # the test-image bootstrap is in the interval (every category's resamples were kept)
    seed_sd: float | None  # the spread of the difference over channel seeds (points), None for one seed

    @property
    def noise(self) -> str:
        """What the interval holds, in words."""
        parts = (["test images (paired bootstrap)"] if self.paired else []) + \
            ([f"channel seeds (sd {self.seed_sd:.2f} pt)"] if self.seed_sd is not None else [])
        return " + ".join(parts) or "none"


def select(df: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    """The rows of ``df`` whose every column named in ``selector`` equals its value (or is one of them, for a list,
    tuple or set)."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in selector.items():
        mask &= (df[k].isin(list(v)) if isinstance(v, (list, tuple, set)) else df[k] == v).to_numpy()
    return df[mask]


def delta_reach(results: str | Path | None, experiment: str, a: dict[str, Any],
                b: dict[str, Any] | None = None) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Per metric, how far below and above a shown delta A − B (or A − a published value, without ``b``) its 95 %
    interval reaches, in points (:func:`variant_difference`); only the metrics with an interval, none without
    ``results``."""
    diff = variant_difference(results, experiment, a, b) if results is not None else None
    return {m: (d.value - d.low, d.high - d.value) for m, d in (diff or {}).items()
            if np.isfinite(d.low) and np.isfinite(d.high)}  # fmt: skip


def variant_difference(results: str | Path, experiment: str, a: dict[str, Any],
                       b: dict[str, Any] | None = None) -> dict[str, Difference] | None:  # fmt: skip
    """Per metric, variant ``a`` minus variant ``b`` of ``experiment`` (column selectors of its rows, e.g.
    ``{"method": "pca", "d": 100}``, or with ``"category"`` for one category), in points, over the categories both
    were run on; None when either was not run. Without ``b``: A's own value and its interval (A − 0), from which a
    difference to a published number without an uncertainty of its own (the paper's) is a shift.

    The value is the mean over categories of (A's mean over its seeds) - (B's). The interval combines the paired
    bootstrap of that mean difference (:func:`~padim_repro.study.uncertainty.difference_values`; absent when a
    category's resamples were not kept) with the standard deviation over seeds of the mean-over-categories
    difference, where A or B was run with several seeds (ddof 1; a variant with one seed pairs each of the other's).
    """
    rows_store = store(results, experiment)
    table = rows_store.table()
    if table.empty:
        return None
    table = table.assign(_pos=table.groupby("group").cumcount())
    sa = select(table, a)
    sb = select(table, b) if b is not None else None
    cats = [c for c in dict.fromkeys(sa.category) if sb is None or c in set(sb.category)]
    if not cats:
        return None
    sa = sa[sa.category.isin(cats)]
    sb = sb[sb.category.isin(cats)] if sb is not None else None
    arrays = {c: rows_store.arrays(c) for c in cats}
    paired = all(all(m in arrays[c] for m in METRICS) for c in cats)

    def mean(rows: pd.DataFrame | None, c: str, m: str) -> float:
        return 0.0 if rows is None else 100 * rows[rows.category == c][m].mean()

    def resampled(rows: pd.DataFrame | None, c: str, m: str) -> np.ndarray:
        if rows is None:
            return np.zeros(arrays[c][m].shape[1])
        return arrays[c][m][rows[rows.category == c]._pos.to_numpy()].mean(axis=0)

    out = {}
    for m in METRICS:
        value = float(np.mean([mean(sa, c, m) - mean(sb, c, m) for c in cats]))
        seed_sd = _seed_sd(sa, sb, m)
        values = None
        if paired:
            values = 100 * difference_values(np.stack([resampled(sa, c, m) for c in cats]),
                                             np.stack([resampled(sb, c, m) for c in cats]))
        low, high = difference_interval(value, values, seed_sd)
        out[m] = Difference(m, value, low, high, paired, seed_sd)
    return out


def _seed_sd(sa: pd.DataFrame, sb: pd.DataFrame | None, metric: str) -> float | None:
    """The standard deviation (ddof 1, points) over seeds of the mean-over-categories difference A - B (of A alone
    without B), where one of them was run with several seeds (the other's mean over its seeds is subtracted from
    each); None otherwise."""
    def per_seed(rows: pd.DataFrame | None) -> pd.Series:
        if rows is None:
            return pd.Series([0.0])
        return 100 * rows.assign(seed=rows.seed.fillna(-1)).groupby("seed")[metric].mean()

    ma, mb = per_seed(sa), per_seed(sb)
    if len(ma) > 1 and len(mb) > 1:
        diff = (ma - mb).dropna() if set(ma.index) == set(mb.index) else ma - mb.mean()
    elif len(ma) > 1:
        diff = ma - mb.mean()
    elif len(mb) > 1:
        diff = ma.mean() - mb
    else:
        return None
    return float(diff.std(ddof=1)) if len(diff) > 1 else None
