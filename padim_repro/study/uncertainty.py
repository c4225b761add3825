"""Bootstrap confidence intervals for the metrics of one run (image / pixel AUROC, PRO, F1-max, AP).

What: :func:`bootstrap_intervals` gives, for every metric of :func:`padim_repro.metrics.evaluate`, its value on the
test set and a percentile confidence interval (95 % by default) from >= 1000 bootstrap resamples of the test images.

Why: MVTec AD test sets are small (bottle: 83 images, 63 of them defective), so a difference of a few tenths of a
point between a reproduction and the paper, or between two settings, may be resampling noise; the interval says
how far a number would move on another test set drawn like this one.

Method: the stratified image bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall,
1993; percentile interval, their Ch. 13). Each resample draws, with replacement, as many good images from the good
ones and as many defective images from the defective ones as the test set has (``rng.integers`` into the good
indices, then into the defective ones, with ``numpy.random.default_rng(seed)``); one resample serves every metric.
Pixel metrics and PRO are resampled *by image*: a drawn image brings all its pixels and all its defect regions
(8-connected, per image), once per draw. The interval is the ``(1 - level) / 2`` and ``1 - (1 - level) / 2``
quantiles of the resampled values; resamples on which a metric is undefined (no positive or no negative) are
skipped and counted.

Exactness with one sort: a resample is a multiplicity ``w_i`` per image. The copies of an image tie with each
other, so the resampled test set, sorted, is the original sorted order with every sample of image ``i`` counted
``w_i`` times. The counts at each threshold are then sums over images of ``w_i`` times image ``i``'s own counts
there, and PRO weighs each region by its image's multiplicity: with the pixels sorted once, and, per image, its
defect-free and defect pixels (and defect pixels / region size) at or above each threshold, the curves of all
resamples are matrix products of the (resamples x images) multiplicities with those (images x thresholds) counts.
Only the thresholds where defect pixels enter, and the points before them, are kept (between them the curves are
straight), so the metrics of every resample equal those of the materialised resample, up to float rounding, in a
few seconds for 1000 resamples instead of a sort of millions of pixels each.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..gaussian import torch_threads

from ..memory import reuse_freed_memory
from ..metrics import PAPER_METRICS, THRESHOLDED_METRICS, evaluate
from ..metrics.curves import SortedSamples, auroc, average_precision, f1_max, sort_samples, weighted_curve
from ..metrics.inputs import check_maps_masks, check_scores_labels
from ..metrics.pro import check_fpr_limit, label_regions

#: The metrics given an interval, in :func:`padim_repro.metrics.evaluate`'s names (pixel AP is not: it needs every
#: step of the precision-recall curve, millions of points per resample, where the others need only its corners).
METRICS = PAPER_METRICS + tuple(m for m in THRESHOLDED_METRICS if m != "pixel_ap")


def _image_metrics(image: SortedSamples, weights: np.ndarray) -> dict[str, float]:
    """The image metrics of the test set in which image ``i`` appears ``weights[i]`` times; NaN where undefined
    (as :func:`~padim_repro.metrics.evaluate`: each needs both classes)."""
    out = dict.fromkeys(("image_auroc", "image_f1_max", "image_ap"), float("nan"))
    im = weighted_curve(image, weights)
    if im.n_pos > 0 and im.n_neg > 0:
        out["image_auroc"], out["image_f1_max"], out["image_ap"] = auroc(im), f1_max(im), average_precision(im)
    return out


class _ImageCounts:
    """Per image, where its pixels lie in the one sort: what :meth:`at` turns into (N, K) count matrices."""

    def __init__(self, pixels: SortedSamples, n_images: int):
        order = np.argsort(pixels.groups, kind="stable")  # the sorted indices, image by image, still ascending
        bounds = np.searchsorted(pixels.groups[order], np.arange(n_images + 1))
        inv_size = 1.0 / np.maximum(pixels.region_sizes, 1)
        self.neg, self.pos, self.share = [], [], []
        for i in range(n_images):
            idx = order[bounds[i]:bounds[i + 1]]
            codes = pixels.codes[idx]
            self.neg.append(idx[codes == 0])
            self.pos.append(idx[codes > 0])
            self.share.append(np.concatenate(([0.0], np.cumsum(inv_size[codes[codes > 0]]))))

    def at(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, K) matrices: per image, its defect-free pixels, its defect pixels, and the sum of 1 / region size
        over its defect pixels, scoring at or above each of the K thresholds whose last sorted index is ``ends``."""
        neg = np.stack([np.searchsorted(s, ends, side="right") for s in self.neg]).astype(np.float64)
        pos_i = np.stack([np.searchsorted(s, ends, side="right") for s in self.pos])
        share = np.stack([c[k] for c, k in zip(self.share, pos_i)])
        return neg, pos_i.astype(np.float64), share


def _corners(pixels: SortedSamples) -> np.ndarray:
    """The tie groups where the pixel ROC and PRO curves turn: the last group of every run of groups holding defect
    pixels only, every group holding both, and the group before each run (and the last group). Between them the
    curves are straight (vertical inside a run of defect pixels, horizontal inside a run of defect-free ones), so
    AUROC, the PRO area (its interpolated end at the FPR limit included) and F1-max are unchanged."""
    pos = np.diff(pixels.pos_upto, prepend=0) > 0
    neg = np.diff(pixels.neg_upto, prepend=0) > 0
    pos_only = pos & ~neg
    run_end = pos & ~(pos_only & np.append(pos_only[1:], False))  # a defect group not followed by a pos-only one
    before = np.flatnonzero(pos[1:] & ~pos[:-1])  # the group before each rise
    return np.union1d(np.union1d(np.flatnonzero(run_end), before), [pixels.last.size - 1]).astype(np.int64)


class _Curves:
    """The pixel ROC, F1 and PRO sums of a block of resamples (``w``: (b, N) float64 multiplicities, on the device
    that computes them), fed the per-image count matrices of one chunk of thresholds after another (:meth:`add`, in
    threshold order)."""

    def __init__(self, w: torch.Tensor, per_image: list[torch.Tensor], fpr_limit: float):
        self.w, self.fpr_limit = w, fpr_limit
        self.n_neg, self.n_pos, self.n_reg = (w @ c for c in per_image)
        b = w.shape[0]
        self.fp0, self.tp0, self.fpr0, self.pro0 = (w.new_zeros((b, 1)) for _ in range(4))
        self.area2, self.f1, self.pro_area = (w.new_zeros(b) for _ in range(3))

    def add(self, neg_c: torch.Tensor, pos_c: torch.Tensor, share_c: torch.Tensor) -> None:
        """Extend the curves over the next thresholds: trapezoids of the ROC (twice its area), F1's maximum, the
        PRO area up to the FPR limit (its last segment cut there by linear interpolation). Divisions by zero give
        inf or NaN, which only resamples without a defect or defect-free pixel keep (:meth:`result` drops them)."""
        w, lim = self.w, self.fpr_limit
        fp, tp = torch.cat([self.fp0, w @ neg_c], 1), torch.cat([self.tp0, w @ pos_c], 1)
        self.area2 += ((fp[:, 1:] - fp[:, :-1]) * (tp[:, 1:] + tp[:, :-1])).sum(1)
        self.f1 = torch.maximum(self.f1, (2 * tp[:, 1:] / (tp[:, 1:] + fp[:, 1:] + self.n_pos[:, None])).amax(1))
        x, y = fp / self.n_neg[:, None], torch.cat([self.pro0, (w @ share_c) / self.n_reg[:, None]], 1)
        x[:, :1] = self.fpr0
        x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
        xe = x1.clamp(max=lim)
        ye = torch.where(x1 > x0, y0 + (xe - x0) * (y1 - y0) / (x1 - x0), y1)
        self.pro_area += torch.where(x0 < lim, (xe - x0) * (y0 + ye) / 2, 0.0).sum(1)
        self.fp0, self.tp0, self.fpr0, self.pro0 = fp[:, -1:], tp[:, -1:], x[:, -1:], y[:, -1:]

    def result(self) -> dict[str, np.ndarray]:
        """Pixel AUROC, F1-max and PRO of each resample (NaN where it has no defect or no defect-free pixel)."""
        ok = (self.n_pos > 0) & (self.n_neg > 0)
        nan = torch.full_like(self.f1, float("nan"))
        out = {"pixel_auroc": torch.where(ok, self.area2 / (2 * self.n_neg * self.n_pos), nan),
               "pixel_f1_max": torch.where(ok, self.f1, nan), "pro": torch.where(ok, self.pro_area / self.fpr_limit, nan)}
        return {k: v.cpu().numpy() for k, v in out.items()}


#: Floats per (resamples x thresholds) temporary of ``_Curves.add``: 2 MB on a CPU (cache-sized; 8 MB blocks raised a
#: run's peak memory by 0.4 GB, two threads each holding a dozen of them, for no speed), 256 MB on a GPU.
_BUDGET = {"cpu": 250_000, "cuda": 32_000_000}


def _pixel_metrics(pixels: SortedSamples, n_images: int, weights: np.ndarray, fpr_limit: float,
                   device: torch.device | str = "cpu") -> dict[str, np.ndarray]:  # fmt: skip
    """Pixel AUROC, PRO and F1-max of every resample at once (``weights``: (B, N) multiplicities), from the corners
    of the curves (:func:`_corners`), as matrix products of the multiplicities with the per-image counts, in float64
    on ``device`` (the run's: on a GPU this is a fraction of a second, on a CPU the bulk of a run's bootstrap).

    On a CPU the resamples are split between the cores, one torch thread each (as numpy's products, torch's run
    outside the GIL); on a GPU they are one block. The thresholds go in chunks of ``_BUDGET`` / (resamples per
    block) corners, so that each of the (resamples x chunk) temporaries of ``_Curves.add`` holds about ``_BUDGET``
    floats, and the count matrices of one chunk only are held (3 x N x chunk floats): whole, bottle's matrices and
    temporaries took 2 GB."""
    device = torch.device(device)
    counts = _ImageCounts(pixels, n_images)
    ends = pixels.last[_corners(pixels)]
    per_image = [np.bincount(pixels.groups[pixels.codes == 0], minlength=n_images),
                 np.bincount(pixels.groups[pixels.codes > 0], minlength=n_images),
                 np.bincount(pixels.region_groups[1:][pixels.region_sizes[1:] > 0], minlength=n_images)]

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(device)

    n_blocks = max(1, min(os.cpu_count() or 1, weights.shape[0])) if device.type == "cpu" else 1
    blocks = [_Curves(dev(w), [dev(c) for c in per_image], fpr_limit) for w in np.array_split(weights, n_blocks)]
    chunk = max(1, _BUDGET[device.type] // max(len(block.w) for block in blocks))
    with torch_threads(1 if n_blocks > 1 else None), ThreadPoolExecutor(max_workers=n_blocks) as pool:
        for s in range(0, ends.size, chunk):
            matrices = [dev(m) for m in counts.at(ends[s:s + chunk])]
            if n_blocks == 1:  # on the calling thread (a GPU's work stays on one thread)
                blocks[0].add(*matrices)
            else:
                list(pool.map(lambda block: block.add(*matrices), blocks))
    results = [block.result() for block in blocks]
    return {m: np.concatenate([r[m] for r in results]) for m in results[0]}


def stratified_weights(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """One stratified resample of the images as multiplicities (float64, one per image): ``rng.integers`` draws as
    many good images among the good ones, then as many defective among the defective ones, as there are."""
    labels = np.asarray(labels, dtype=bool)
    strata = [s for s in (np.flatnonzero(~labels), np.flatnonzero(labels)) if s.size]
    drawn = np.concatenate([s[rng.integers(0, s.size, s.size)] for s in strata])
    return np.bincount(drawn, minlength=labels.size).astype(np.float64)


def bootstrap_values(maps: Any, masks: Any, scores: Any, labels: Any, n_resamples: int = 1000, seed: int = 0,
                     fpr_limit: float = 0.3, progress: bool | None = False,
                     device: torch.device | str = "cpu") -> tuple[dict[str, float], dict[str, np.ndarray]]:  # fmt: skip
    """``(estimate, values)``: every metric on the whole test set (:func:`~padim_repro.metrics.evaluate`, NaN where
    undefined) and its ``n_resamples`` resampled values (NaN where undefined on that resample), resample ``b`` being
    the ``b``-th call of :func:`stratified_weights` on ``numpy.random.default_rng(seed)``. Arguments as for
    :func:`bootstrap_intervals`; the pixel metrics' products run on ``device`` (a run's own: on a GPU they take a
    fraction of a second, on a CPU most of the bootstrap), in float64 on every device.
    """
    maps_arr, masks_arr = check_maps_masks(maps, masks, "maps", require_3d=True)
    scores_arr, labels_arr = check_scores_labels(scores, labels)
    n = maps_arr.shape[0]
    if scores_arr.shape[0] != n:
        raise ValueError(f"maps has {n} images but scores has {scores_arr.shape[0]} entries")
    fpr_limit = check_fpr_limit(fpr_limit)
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    full = evaluate(maps_arr, masks_arr, scores_arr, labels_arr, ["defect" if v else "good" for v in labels_arr],
                    fpr_limit=fpr_limit)  # fmt: skip
    estimate = {m: np.nan if full[m] is None else float(full[m]) for m in METRICS}
    rng = np.random.default_rng(seed)
    draws = np.stack([stratified_weights(rng, labels_arr) for _ in range(int(n_resamples))])  # in order: seeded
    image = sort_samples(scores_arr, labels_arr, np.arange(n))
    disable = None if progress is None else not progress
    values = {m: np.full(int(n_resamples), np.nan) for m in METRICS}
    for b, w in enumerate(tqdm(draws, desc="bootstrap (images)", unit="resample", disable=disable)):
        for m, v in _image_metrics(image, w).items():
            values[m][b] = v
    if masks_arr.any() and not masks_arr.all():
        regions, n_regions = label_regions(masks_arr)
        groups = np.repeat(np.arange(n, dtype=np.int32), maps_arr[0].size).reshape(maps_arr.shape)
        pixels = sort_samples(maps_arr, masks_arr, groups, regions, n_regions)  # the one sort of the pixels
        del regions, groups
        with reuse_freed_memory():  # blocks of resamples: temporaries of the same sizes, over and over
            values.update(_pixel_metrics(pixels, n, draws, fpr_limit, device))
    return estimate, values


def bootstrap_intervals(maps: Any, masks: Any, scores: Any, labels: Any, n_resamples: int = 1000, seed: int = 0,
                        level: float = 0.95, fpr_limit: float = 0.3,
                        progress: bool | None = False) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Stratified image-bootstrap percentile intervals of every metric of one run.

    Parameters
    ----------
    maps, masks : arrays (N, H, W)
        Anomaly maps (finite) and ground-truth masks (bool or 0/1) at the same resolution.
    scores, labels : arrays (N,)
        Image scores and labels (0 good, 1 defective).
    n_resamples : int
        Bootstrap resamples (>= 1; use >= 1000 for a 95 % interval).
    seed : int
        Seed of ``numpy.random.default_rng``: the same seed gives the same resamples, hence the same intervals.
    level : float in (0, 1)
        Coverage of the interval.
    fpr_limit : float in (0, 1]
        Integration limit of PRO, as for :func:`~padim_repro.metrics.evaluate`.
    progress : bool or None
        tqdm progress bar (None: only on a terminal; default False: print nothing).

    Returns
    -------
    dict
        For each name of :data:`METRICS`: ``{"estimate", "low", "high", "n_resamples", "n_skipped"}``, where
        ``estimate`` is the value on the whole test set (equal to :func:`~padim_repro.metrics.evaluate`'s, None
        where it is undefined), ``low`` / ``high`` the interval (None without a valid resample), ``n_resamples`` the
        resamples used and ``n_skipped`` those on which the metric was undefined (all of them where the estimate is).
    """
    estimate, values = bootstrap_values(maps, masks, scores, labels, n_resamples, seed, fpr_limit, progress)
    return intervals_from_values(estimate, values, level)


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def intervals_from_values(estimate: dict[str, float], values: dict[str, np.ndarray],
                          level: float = 0.95) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Percentile intervals from :func:`bootstrap_values`' output: what :func:`bootstrap_intervals` returns."""
    alpha = (1.0 - _check_level(level)) / 2.0
    out: dict[str, dict[str, Any]] = {}
    for m, est in estimate.items():
        defined = bool(np.isfinite(est))
        vals = np.asarray(values[m], dtype=np.float64)
        ok = vals[np.isfinite(vals)] if defined else vals[:0]
        low, high = (float(q) for q in np.quantile(ok, [alpha, 1.0 - alpha])) if ok.size else (None, None)
        out[m] = {"estimate": float(est) if defined else None, "low": low, "high": high,
                  "n_resamples": int(ok.size), "n_skipped": int(vals.size) - int(ok.size)}  # fmt: skip
    return out


def mean_interval(estimates: Any, values: Any, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Interval of a mean over categories of one metric, from each category's bootstrap resamples.

    ``estimates``: (C,) the metric on each category's test set; ``values``: (C, B) its B resampled values per
    category (:func:`bootstrap_values`, NaN where undefined). The categories' test sets are disjoint and were
    resampled independently, so a resample of the mean takes one resample of each category: resample ``b`` is the
    mean over categories of their ``perm_c[b]``-th values, ``perm_c`` an independent permutation per category from
    ``numpy.random.default_rng(seed)`` (pairing the b-th resamples directly would correlate categories drawn from
    the same seed). Resamples where a category's value is undefined are skipped. Returns the same fields as
    :func:`intervals_from_values`.
    """
    est = np.asarray(estimates, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 2 or vals.shape[0] != est.shape[0] or est.ndim != 1 or est.size == 0:
        raise ValueError(f"values must be (C, B) for C = {est.size} estimates, got {vals.shape}")
    rng = np.random.default_rng(seed)
    paired = np.stack([v[rng.permutation(v.size)] for v in vals])
    return intervals_from_values({"mean": float(est.mean())}, {"mean": paired.mean(axis=0)}, level)["mean"]


def difference_values(a: Any, b: Any, seed: int = 0) -> np.ndarray:
    """Resampled values of a mean over categories of the difference ``a - b`` between two variants, paired.

    ``a``, ``b``: (C, B) each variant's B resampled values per category (:func:`bootstrap_values` with the same
    ``seed`` on the same test set: its b-th resample is the same draw of test images for both variants, so
    ``a[c, i] - b[c, i]`` is the difference on one resampled test set). Across categories, as in
    :func:`mean_interval`, an independent permutation per category from ``numpy.random.default_rng(seed)``; NaN where
    a category's difference is undefined on that resample. Returns (B,).
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 2 or diff.shape[0] == 0:
        raise ValueError(f"a and b must be (C, B) with C >= 1, got {np.shape(a)} and {np.shape(b)}")
    rng = np.random.default_rng(seed)
    return np.stack([d[rng.permutation(d.size)] for d in diff]).mean(axis=0)


def difference_interval(estimate: float, values: Any = None, seed_sd: float | None = None,
                        level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """A ``level`` interval of a difference between two variants that holds both sources of noise: the sampling of
    the test images and the choice of the random channel subset.

    ``values``: the difference's paired bootstrap resamples (:func:`difference_values`), giving the percentile
    distances from ``estimate`` down to the ``(1 - level) / 2`` quantile and up to the ``1 - (1 - level) / 2`` one;
    ``seed_sd``: the standard deviation of the difference over channel seeds, giving ``z * seed_sd`` (``z`` the
    normal quantile of ``level``). The two are independent, so each side is their root sum of squares:
    ``estimate - hypot(estimate - q_low, z * seed_sd)`` to ``estimate + hypot(q_high - estimate, z * seed_sd)``.
    Either may be absent (None); (NaN, NaN) when both are, or the estimate is not finite.
    """
    alpha = (1.0 - _check_level(level)) / 2.0
    vals = np.asarray([] if values is None else values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    has_seed = seed_sd is not None and bool(np.isfinite(seed_sd))
    if not np.isfinite(estimate) or (vals.size == 0 and not has_seed):
        return float("nan"), float("nan")
    q_low, q_high = np.quantile(vals, [alpha, 1.0 - alpha]) if vals.size else (estimate, estimate)
    s = NormalDist().inv_cdf(1.0 - alpha) * float(seed_sd) if has_seed else 0.0
    return (float(estimate - np.hypot(max(estimate - q_low, 0.0), s)),
            float(estimate + np.hypot(max(q_high - estimate, 0.0), s)))
