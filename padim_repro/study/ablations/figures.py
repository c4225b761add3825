"""Figures of the ablation notebooks: metric against d, the layer variants, metric against sigma, the protocols."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import reference
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
    paper's Table I/II points (means over 15 categories) as black markers."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    all_rows = df[df.method == "all"]
    paper = _paper_points("n_features")
    for ax, metric in zip(axes, METRICS):
        for method, style in (("random", "-o"), ("pca", "--s")):
            sub = pd.concat([df[df.method == method], all_rows])
            stats = pd.DataFrame({d: seed_spread(s).loc[metric] for d, s in sub.groupby("d")}).T.sort_index()
            ax.plot(stats.index, stats["mean"], style, label=f"{method} (mean of {sub.category.nunique()} cat.)")
            if method == "random":
                ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), alpha=0.25)  # fmt: skip
                for cat, cs in sub.groupby("category"):
                    per = cs.groupby("d")[metric].mean() * 100
                    ax.plot(per.index, per.values, ":", lw=0.9, label=f"random, {cat}")
        first = True
        for label, values in paper.items():
            if metric in values:
                d = 448 if "448" in label else int("".join(ch for ch in label.split()[0] if ch.isdigit()))
                ax.plot(d, values[metric], "kx", ms=8, label="paper (mean of 15 categories)" if first else None)
                first = False
                ax.annotate(f"paper {label.split()[0]}", (d, values[metric]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        ax.set(xscale="log", xlabel="d (kept dimensions)", ylabel=f"{METRIC_LABEL[metric]} (%)",
               title=METRIC_LABEL[metric])  # fmt: skip
        ax.set_xticks(sorted(df.d.unique()), [str(int(d)) for d in sorted(df.d.unique())])
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[1])  # the pixel AUROC panel also has the paper's points


def _legend_below(fig, ax):
    """One legend for the figure, below its panels."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = min(len(labels), 6)
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * rows + 0.01, 1, 1))
    return fig


def _grouped_bars(df: pd.DataFrame, by: str, order: Sequence[str], paper: dict[str, dict[str, float]] | None = None):
    import matplotlib.pyplot as plt

    cats = sorted(df.category.unique())
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / (len(cats) + 1)
    x = np.arange(len(order))
    for ax, metric in zip(axes, METRICS):
        vals = df.groupby([by, "category"])[metric].mean().mul(100)
        for i, cat in enumerate(cats):
            ax.bar(x + i * width, [vals.get((o, cat), np.nan) for o in order], width, label=cat)
        mean = df.groupby(by)[metric].mean().mul(100)
        ax.bar(x + len(cats) * width, [mean.get(o, np.nan) for o in order], width, label="mean", color="gray")
        if paper:
            px = [i for i, o in enumerate(order) if metric in paper.get(o, {})]
            ax.plot(x[px] + len(cats) * width, [paper[order[i]][metric] for i in px], "kx", ms=9, mew=2,
                    label="paper (mean of 15)")  # on our mean's bar  # fmt: skip
        lo = np.nanmin(vals.to_numpy()) if len(vals) else 0
        ax.set(ylim=(max(0, lo - 5), 100.5), title=METRIC_LABEL[metric], ylabel="%")
        ax.set_xticks(x + 0.4 - width / 2, order, rotation=20, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _legend_below(fig, axes[0])


def plot_layers(df: pd.DataFrame):
    """Each Table I variant: bars per category and their mean; the paper's means over 15 categories as crosses."""
    labels = {sel.get("variant") or sel["method"]: label for label, _, sel in PAPER_ROWS["layers"]}
    df = df.assign(row=[labels.get(v, labels.get(m, v)) for v, m in zip(df.variant, df.method)])
    order = [label for label, _, _ in PAPER_ROWS["layers"]]
    return _grouped_bars(df, "row", order, _paper_points("layers"))


def plot_sigma(df: pd.DataFrame):
    """Metric vs blur sigma, per category and mean; the paper's sigma = 4 marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric in zip(axes, METRICS):
        for cat, sub in df.groupby("category"):
            s = sub.groupby("sigma")[metric].mean() * 100
            ax.plot(s.index, s.values, "o:", lw=1, label=cat)
        mean = df.groupby("sigma")[metric].mean() * 100
        ax.plot(mean.index, mean.values, "k-o", label="mean")
        ax.axvline(4, color="r", ls="--", lw=0.8, label="paper: sigma = 4")
        ax.set(xlabel="sigma of the Gaussian blur (px, 0 = none)", ylabel="%", title=METRIC_LABEL[metric])
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[0])


def plot_protocol(df: pd.DataFrame):
    """Our metrics per category under the two preprocessing protocols."""
    order = list(dict.fromkeys(df.sort_values("crop").variant))
    fig = _grouped_bars(df.rename(columns={"variant": "proto"}), "proto", order)
    return fig
