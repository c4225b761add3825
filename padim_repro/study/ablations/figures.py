"""Figures of the ablation notebooks: metric against d, the layer variants, metric against sigma, the protocols."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import reference
from ..plots import BOOK_WIDTH
from ..report import METRIC_LABEL, METRICS
from .tables import PAPER_ROWS, seed_spread


def _paper_points(experiment: str) -> dict[str, dict[str, float]]:
    paper = reference.paper()
    out: dict[str, dict[str, float]] = {}
    for label, model, _ in PAPER_ROWS[experiment]:
        for m in METRICS:
            cell = reference.paper_value(paper, model, "all", m)
            if cell:
                out.setdefault(label, {})[m] = cell[0]
    return out


def plot_n_features(df: pd.DataFrame):
    """Metric vs d: random subsets (mean over categories, band = ± std over seeds), PCA, all channels; the
    paper's Table I/II points (means over all 15 categories: their level is not comparable with ours, only the
    shape) as black markers, random / all channels and PCA told apart by the marker, not by labels."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(BOOK_WIDTH, 3.2))
    all_rows = df[df.method == "all"]
    paper = _paper_points("n_features")
    for ax, metric in zip(axes, METRICS):
        for method, style in (("random", "-o"), ("pca", "--s")):
            sub = pd.concat([df[df.method == method], all_rows])
            stats = pd.DataFrame({d: seed_spread(s).loc[metric] for d, s in sub.groupby("d")}).T.sort_index()
            ax.plot(stats.index, stats["mean"], style, ms=4, label=f"{method}, mean of {sub.category.nunique()} "
                    "categories")
            if method == "random":
                ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), alpha=0.25)  # fmt: skip
                for cat, cs in sub.groupby("category"):
                    per = cs.groupby("d")[metric].mean() * 100
                    ax.plot(per.index, per.values, ":", lw=0.9, label=f"random, {cat}")
        shown = set()
        for label, values in paper.items():
            if metric in values:
                d = 448 if "448" in label else int("".join(ch for ch in label.split()[0] if ch.isdigit()))
                kind = "PCA" if "PCA" in label else "random / all"
                ax.plot(d, values[metric], "k+" if kind == "PCA" else "kx", ms=8, mew=1.5,
                        label=None if kind in shown else f"paper, {kind} (all 15 categories)")
                shown.add(kind)
        ax.set(xscale="log", xlabel="d (kept dimensions)", ylabel="%" if metric == METRICS[0] else None,
               title=METRIC_LABEL[metric])  # fmt: skip
        ax.set_xticks(sorted(df.d.unique()), [str(int(d)) for d in sorted(df.d.unique())], fontsize=7)
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[1])  # the pixel AUROC panel also has the paper's points


def _legend_below(fig, ax):
    """One legend for the figure, below its panels."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = min(len(labels), 3)
    rows = -(-len(labels) // ncol)
    height = fig.get_size_inches()[1]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.6, (0.17 * rows + 0.05) / height), 1, 1))
    return fig


def _grouped_bars(df: pd.DataFrame, by: str, order: Sequence[str]):
    """One panel per metric (stacked, the variants along x): a bar per category and their mean, in %. The paper's
    means over all 15 categories are in the tables only: beside a mean over fewer categories they would read as
    comparable."""
    import matplotlib.pyplot as plt

    cats = sorted(df.category.unique())
    fig, axes = plt.subplots(3, 1, figsize=(BOOK_WIDTH, 2.2 * 3 + 0.4 * max(len(o) for o in order) / 10),
                             sharex=True)  # fmt: skip
    width = 0.8 / (len(cats) + 1)
    x = np.arange(len(order))
    for ax, metric in zip(axes, METRICS):
        vals = df.groupby([by, "category"])[metric].mean().mul(100)
        for i, cat in enumerate(cats):
            ax.bar(x + i * width, [vals.get((o, cat), np.nan) for o in order], width, label=cat)
        mean = df.groupby(by)[metric].mean().mul(100)
        ax.bar(x + len(cats) * width, [mean.get(o, np.nan) for o in order], width,
               label=f"mean of {len(cats)} categories", color="gray")  # fmt: skip
        lo = np.nanmin(vals.to_numpy()) if len(vals) else 0
        ax.set(ylim=(max(0, lo - 5), 100.5), ylabel=f"{METRIC_LABEL[metric]} (%)")
        ax.set_xticks(x + 0.4 - width / 2, order, rotation=15, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _legend_below(fig, axes[0])


def plot_layers(df: pd.DataFrame):
    """Each Table I variant: bars per category and their mean (the paper's means over 15 categories: the table)."""
    labels = {sel.get("variant") or sel["method"]: label for label, _, sel in PAPER_ROWS["layers"]}
    df = df.assign(row=[labels.get(v, labels.get(m, v)) for v, m in zip(df.variant, df.method)])
    order = [label for label, _, _ in PAPER_ROWS["layers"]]
    return _grouped_bars(df, "row", order)


def plot_sigma(df: pd.DataFrame):
    """Metric vs blur sigma, per category and mean; the paper's sigma = 4 marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(BOOK_WIDTH, 3.0))
    for ax, metric in zip(axes, METRICS):
        for cat, sub in df.groupby("category"):
            s = sub.groupby("sigma")[metric].mean() * 100
            ax.plot(s.index, s.values, "o:", lw=1, label=cat)
        mean = df.groupby("sigma")[metric].mean() * 100
        ax.plot(mean.index, mean.values, "k-o", ms=4, label="mean")
        ax.axvline(4, color="r", ls="--", lw=0.8, label="paper: σ = 4")
        ax.set(xlabel="σ of the blur (px)", ylabel="%" if metric == METRICS[0] else None, title=METRIC_LABEL[metric])
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[0])


def plot_protocol(df: pd.DataFrame):
    """Our metrics per category under each preprocessing protocol and map upsampling."""
    order = list(dict.fromkeys(df.sort_values("crop").variant))
    fig = _grouped_bars(df.rename(columns={"variant": "proto"}), "proto", order)
    return fig
