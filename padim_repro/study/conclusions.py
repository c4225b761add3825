"""The "Conclusion" that ends every ablation and beyond-the-paper page, written from its numbers by the code.

What: :func:`conclusion` gives, for one page (an ablation experiment or an experiment beyond the paper), a few
Markdown sentences stating what its numbers show: the differences that matter, each with its 95 % interval where
one is computed (:func:`padim_repro.study.ablations.differences.variant_difference`: the paired test-image bootstrap
with the channel-seed spread), and the paper's figure beside it where the paper gives one.

Why: a page of tables leaves the reader to find the result; the verdicts of the Claims page are written by code
from the results, and so is each page's conclusion, so that it changes when the numbers do and never says more
than they show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import reference
from .ablations.differences import Difference, variant_difference
from .ablations.experiments import load_results
from .beyond.common import beyond_dir
from .beyond.nonaligned import nonaligned_summary
from .display import signed, signed_interval
from .report import METRIC_LABEL, METRICS
from .runs import load_bootstrap
from .uncertainty import difference_interval, difference_values

PENDING = "_No conclusion yet: the experiment has not been run (`{command}`)._"


def _diff(d: Difference | None) -> str:
    """``+1.2 pt [+0.4, +2.0]``, the interval omitted when it was not computed."""
    if d is None or not np.isfinite(d.value):
        return "not computed"
    span = signed_interval(d.low, d.high)
    return f"{signed(d.value)} pt" + (f" {span}" if span else "")


def _clear(d: Difference | None) -> str:
    """Whether the 95 % interval of a difference excludes 0 (in words)."""
    if d is None or not (np.isfinite(d.low) and np.isfinite(d.high)):
        return "no interval computed"
    return "beyond its 95 % interval" if d.low > 0 or d.high < 0 else "within its 95 % interval of 0"


def _paper_diff(model_a: str, model_b: str, metric: str) -> str:
    table = reference.paper()
    a, b = (reference.paper_value(table, m, "all", metric) for m in (model_a, model_b))
    return f"{signed(a[0] - b[0])} pt ({reference.weakest(a[1], b[1])})" if a and b else "not given offline"


def _pairs_text(results: Path, experiment: str,
                pairs: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str] | None]]) -> list[str]:
    """One sentence per (label, A, B, paper models): A − B per metric with its interval, beside the paper's."""
    out = []
    for label, a, b, paper in pairs:
        diff = variant_difference(results, experiment, a, b)
        if diff is None:
            continue
        parts = []
        for m in METRICS:
            text = f"{METRIC_LABEL[m]} {_diff(diff[m])}"
            if paper and m != "image_auroc":
                text += f" (paper {_paper_diff(*paper, m)})"
            parts.append(text)
        out.append(f"- {label}: " + "; ".join(parts) + ".")
    return out


def _n_categories(df: pd.DataFrame) -> str:
    return f"{df.category.nunique()} categories ({', '.join(dict.fromkeys(df.category))})"


def _layers(results: Path, frame: pd.DataFrame | None = None) -> str:
    df = load_results(results, "layers")
    lines = _pairs_text(results, "layers", [
        (f"all 448 − {layer} only", {"method": "all"}, {"variant": f"{layer} only"},
         ("PaDiM-R18 all 448 dims", f"PaDiM-R18 {layer} only")) for layer in ("layer1", "layer2", "layer3")] + [
        ("all 448 − separate Gaussians summed", {"method": "all"}, {"method": "summed"},
         ("PaDiM-R18 all 448 dims", "PaDiM-R18 layers 1+2+3 as three separate models summed"))])  # fmt: skip
    best = df.groupby("variant", sort=False)[list(METRICS)].mean().idxmax()
    return "\n".join([f"On {_n_categories(df)}, the concatenation of the three layers against each alternative of "
                      "Table I (ours, in points, with the 95 % interval; the paper's over 15 categories):", "",
                      *lines, "", "Best variant here: " + ", ".join(f"{METRIC_LABEL[m]} {best[m]}" for m in METRICS)
                      + "."])  # fmt: skip


def _n_features(results: Path, frame: pd.DataFrame | None = None) -> str:
    df = load_results(results, "n_features")
    rd100, pca100 = "PaDiM-R18-Rd100 (mean of 10 seeds)", "PaDiM-R18-PCA100"
    lines = _pairs_text(results, "n_features", [
        ("Rd100 − PCA100", {"method": "random", "d": 100}, {"method": "pca", "d": 100}, (rd100, pca100)),
        ("Rd200 − Rd100", {"method": "random", "d": 200}, {"method": "random", "d": 100},
         ("PaDiM-R18-Rd200", rd100)),
        ("all 448 − Rd100", {"method": "all"}, {"method": "random", "d": 100}, ("PaDiM-R18 all 448 dims", rd100)),
    ])  # fmt: skip
    gap = variant_difference(results, "n_features", {"method": "random", "d": 100}, {"method": "pca", "d": 100})
    same = gap is not None and all(np.isfinite(gap[m].low) and gap[m].low <= 0 <= gap[m].high
                                   for m in ("pixel_auroc", "pro"))  # fmt: skip
    end = ("Random selection and PCA100 do not differ here in pixel AUROC or PRO (both intervals hold 0), unlike "
           "Table II; the PCA probe looks for why." if same else "Claim C4 judges the Rd100 − PCA100 gap against "
           "Table II's.")
    return "\n".join([f"On {_n_categories(df)} (ours, in points, with the 95 % interval; the paper's over 15 "
                      "categories):", "", *lines, "", end])  # fmt: skip


def _pca(results: Path, frame: pd.DataFrame | None = None) -> str:
    df = load_results(results, "pca")
    means = df.groupby("variant", sort=False)[list(METRICS)].mean() * 100
    best = {m: means[m].idxmax() for m in METRICS}
    lines = _pairs_text(results, "pca", [
        ("pooled PCA, smallest − largest variance", {"method": "pca_pooled_bottom"}, {"method": "pca_pooled_top"},
         None),
        ("Rd100 − pooled PCA of largest variance (the paper's PCA)", {"method": "random"},
         {"method": "pca_pooled_top"}, None)])  # fmt: skip
    return "\n".join([f"On {_n_categories(df)}, best variant: " + ", ".join(
        f"{METRIC_LABEL[m]} {best[m]} ({means.loc[best[m], m]:.1f})" for m in METRICS) + ".", "", *lines, "",
        "The per-position smallest-variance variant is one arbitrary basis of a null space (fewer training images "
        "than channels): only its first digits are meaningful, and it is not used to conclude."])  # fmt: skip


def _sigma(results: Path, frame: pd.DataFrame | None = None) -> str:
    df = load_results(results, "sigma")
    means = df.groupby("sigma")[list(METRICS)].mean() * 100
    lines = []
    for m in METRICS:
        best = float(means[m].idxmax())
        if best == 4.0:
            lines.append(f"- {METRIC_LABEL[m]}: σ = 4 is the best of the sweep ({means.loc[4.0, m]:.1f}).")
            continue
        d = variant_difference(results, "sigma", {"sigma": 4.0}, {"sigma": best})
        lines.append(f"- {METRIC_LABEL[m]}: best at σ = {best:g} ({means.loc[best, m]:.1f}); σ = 4 − best = "
                     f"{_diff(d[m] if d else None)}, {_clear(d[m] if d else None)}.")
    return "\n".join([f"On {_n_categories(df)}:", "", *lines, "", "The paper fixes σ = 4 without a sweep; the best "
                      "σ is picked on the same test images, so its lead is, if anything, overstated."])


def _protocol(results: Path, frame: pd.DataFrame | None = None) -> str:
    df = load_results(results, "protocol")
    lines, beyond = [], []
    for label, b in (("resize 256 without crop (anomalib's) − the paper's crop 224", {"protocol": "no_crop"}),
                     ("bicubic − bilinear upsampling of the anomaly map", {"protocol": "bicubic_maps"})):
        d = variant_difference(results, "protocol", b, {"protocol": "paper"})
        if d is not None:
            lines.append(f"- {label}: " + "; ".join(f"{METRIC_LABEL[m]} {_diff(d[m])} ({_clear(d[m])})"
                                                   for m in METRICS) + ".")
            beyond += [f"{label.split(' − ')[0]} ({METRIC_LABEL[m]})" for m in METRICS
                       if _clear(d[m]).startswith("beyond")]
    return "\n".join([f"On {_n_categories(df)}, against the paper's protocol (resize 256, crop 224, bilinear "
                      "maps), in points with the 95 % interval (paired bootstrap over the same test images):", "",
                      *(lines or ["- no variant besides the paper's protocol was run."]), "",
                      ("Beyond the interval: " + ", ".join(beyond) + "." if beyond else "No interval computed yet "
                       "(rows from before the paired bootstrap: rerun `make ablations`)." if "no interval" in
                       " ".join(lines) else "No difference lies beyond its interval: these protocol choices do not "
                       "move the numbers measurably here.")
                      + " The no-crop protocol also scores the image borders, which the crop removes."])  # fmt: skip


def upsampling_markdown(results: str | Path) -> str:
    """One sentence for the Protocol's list of differences: bicubic − bilinear map upsampling as measured by the
    protocol ablation, per metric with its 95 % interval (or that it has not been measured yet)."""
    d = variant_difference(Path(results), "protocol", {"protocol": "bicubic_maps"}, {"protocol": "paper"})
    if d is None:
        return "_Not measured yet: the protocol ablation (`make ablations`) runs both._\n"
    n = load_results(results, "protocol").category.nunique()
    return (f"Measured on {n} categories (bicubic − bilinear, in points, 95 % interval): "
            + "; ".join(f"{METRIC_LABEL[m]} {_diff(d[m])}" for m in METRICS) + ".\n")


def _run_values(results: Path, run_dir: str) -> dict[str, np.ndarray]:
    return load_bootstrap(results / run_dir)


def _efficientnet(results: Path, frame: pd.DataFrame | None = None) -> str:
    path = beyond_dir(results) / "efficientnet.csv"
    df = pd.read_csv(path)
    base = df[df.backbone == "resnet18"].set_index("category")
    lines = []
    for model, sub in df[df.backbone != "resnet18"].groupby("model", sort=False):
        sub = sub.set_index("category").loc[[c for c in base.index if c in set(sub.category)]]
        parts = []
        for m in METRICS:
            value = float(100 * (sub[m] - base.loc[sub.index, m]).mean())
            boots = [(_run_values(results, sub.loc[c, "run_dir"]).get(m), _run_values(results,
                      base.loc[c, "run_dir"]).get(m)) for c in sub.index]  # fmt: skip
            values = (100 * difference_values(np.stack([a for a, _ in boots]), np.stack([b for _, b in boots]))
                      if all(a is not None and b is not None for a, b in boots) else None)
            low, high = difference_interval(value, values)
            d = Difference(m, value, low, high, values is not None, None)
            parts.append(f"{METRIC_LABEL[m]} {_diff(d)} ({100 * sub[m].mean():.1f} against "
                         f"{100 * base.loc[sub.index, m].mean():.1f})")
        lines.append(f"- {model} − PaDiM-R18-Rd100: " + "; ".join(parts) + ".")
    return "\n".join([f"On {_n_categories(df)}, EfficientNet-Lite0 against ResNet-18, same protocol and test images "
                      "(in points, with the 95 % interval of the paired bootstrap; one channel seed):", "", *lines,
                      "", "The paper's EfficientNet is B5, whose weights are not available offline: this tests the "
                      "idea of a lighter EfficientNet backbone, not the paper's Table V row."])  # fmt: skip


def _nonaligned(results: Path, frame: pd.DataFrame | None = None) -> str:
    """``frame``: the rows :func:`~padim_repro.study.beyond.nonaligned.nonaligned_experiment` returned (with the
    aligned runs); the CSV alone lacks the aligned rows."""
    if frame is None or not (frame.protocol == "aligned").any():
        return "_No conclusion: the aligned runs are not among the rows given._"
    summary = nonaligned_summary(frame)
    last, per_cat = summary.iloc[-1], summary.iloc[:-1] if len(summary) > 1 else summary
    lines = []
    for m in METRICS:
        worst = per_cat.loc[per_cat[f"{m} drop"].idxmax()]
        sd = last[f"{m} non-aligned std"]
        lines.append(f"- {METRIC_LABEL[m]}: {last[f'{m} aligned']:.1f} aligned, {last[f'{m} non-aligned mean']:.1f} "
                     f"non-aligned (sd {sd:.1f} over placements): a drop of {last[f'{m} drop']:.1f} pt; the "
                     f"largest on {worst.category} ({worst[f'{m} drop']:.1f} pt).")
    most = max(METRICS, key=lambda m: last[f"{m} drop"])
    return "\n".join([f"Over {len(per_cat)} categories with R18-Rd100:", "", *lines, "", f"Rotations and crops cost "
                      f"the {METRIC_LABEL[most]} the most here: one Gaussian per position expects the object where it "
                      "was in training. The paper's drops are for WR50-Rd550 over 15 categories (claim C7 sets them "
                      "side by side, with intervals)."])  # fmt: skip


def _magnetic_tile(results: Path, frame: pd.DataFrame | None = None) -> str:
    metrics = pd.read_csv(beyond_dir(results) / "magnetic_tile" / "metrics.csv").set_index("scope")
    pooled = metrics.loc["all defects"]
    types = metrics.drop(index="all defects")
    lines = ["- All defects pooled: " + ", ".join(f"{METRIC_LABEL[m]} {100 * pooled[m]:.1f}" for m in METRICS) + "."]
    for m in ("image_auroc", "pro"):
        lines.append(f"- {METRIC_LABEL[m]} by defect type: from {100 * types[m].min():.1f} ({types[m].idxmin()}) to "
                     f"{100 * types[m].max():.1f} ({types[m].idxmax()}).")
    worst = types.pro.idxmin()
    return "\n".join(["PaDiM-R18-Rd100 on a second real dataset, unaligned grayscale tiles:", "", *lines, "",
                      f"The pooled numbers hide the defect types: {worst} defects are localised worst (PRO "
                      f"{100 * types.pro.min():.1f}), so a reader's own defects, not the pooled mean, decide whether "
                      "PaDiM fits them."])  # fmt: skip


#: Page -> (what must exist under RESULTS, the command computing it, the conclusion's writer).
PAGES: dict[str, tuple[str, str, Callable[[Path, pd.DataFrame | None], str]]] = {
    "layers": ("ablations/layers.csv", "make ablations", _layers),
    "n_features": ("ablations/n_features.csv", "make ablations", _n_features),
    "pca": ("ablations/pca.csv", "make ablations", _pca),
    "sigma": ("ablations/sigma.csv", "make ablations", _sigma),
    "protocol": ("ablations/protocol.csv", "make ablations", _protocol),
    "efficientnet": ("beyond/efficientnet.csv", "make beyond", _efficientnet),
    "nonaligned": ("beyond/nonaligned.csv", "make beyond", _nonaligned),
    "magnetic_tile": ("beyond/magnetic_tile/metrics.csv", "make beyond", _magnetic_tile),
}  # fmt: skip


def conclusion(page: str, results: str | Path, frame: pd.DataFrame | None = None) -> str:
    """The Markdown conclusion of ``page`` (a key of :data:`PAGES`) from the results under ``results`` (``frame``:
    the rows the page computed, where the files alone do not hold them: the non-aligned page's aligned runs)."""
    need, command, write = PAGES[page]
    results = Path(results)
    if not (results / need).is_file():
        return PENDING.format(command=command)
    return write(results, frame)
