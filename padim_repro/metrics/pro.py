r"""The PRO score (Bergmann et al., CVPR 2019 / IJCV 2021), PaDiM Sec. 4.1: per-region overlap to FPR 0.3.

PRO conventions (following the MVTec AD evaluation code)
--------------------------------------------------------
* Ground-truth regions are the 8-connected components of each image's mask
  (``scipy.ndimage.label`` with a 3x3 structure of ones); a region never spans
  two images.  Regions are pooled over the whole test set.
* At threshold ``t`` a pixel is *positive* when ``score >= t``.  Thresholds are
  all distinct score values, visited in descending order, so pixels with equal
  scores always enter the curve together.
* :math:`\mathrm{PRO}(t)` is the mean, over all regions of the test set, of the fraction of
  the region's pixels that are positive:
  :math:`\mathrm{PRO}(t) = \frac{1}{R} \sum_{r=1}^{R} |\{p \in r : s_p \ge t\}| / |r|` for the :math:`R` regions.
* :math:`\mathrm{FPR}(t)` is the fraction of all anomaly-free pixels of the test set (pixels
  of good images included) that are positive.
* The curve starts at ``(0, 0)`` (threshold above every score) and ends at
  ``(1, 1)`` (threshold at the minimum score); consecutive points are joined by
  straight lines.
* ``aupro`` integrates that curve with the trapezoid rule from FPR 0 to
  ``fpr_limit``, inserting the linearly interpolated point at exactly
  ``fpr_limit``, and divides by ``fpr_limit`` so that a perfect map scores 1:
  :math:`\frac{1}{l} \int_0^{l} \mathrm{PRO} \, d\mathrm{FPR}` for the limit :math:`l`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .curves import Curve, binary_curve
from .inputs import check_maps_masks, warn_undefined

# 8-connectivity inside each image, no connectivity across the image axis:
# labelling the whole (N, H, W) stack in one call is then equivalent to
# labelling each image separately, but much faster than a Python loop.
_STRUCTURE_8_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8_PER_IMAGE[1] = True


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """The ground-truth regions of (N, H, W) bool masks: 8-connected components within each image, numbered 1..n
    over the whole test set (0: defect-free pixels), and n."""
    regions, n_regions = ndimage.label(masks, structure=_STRUCTURE_8_PER_IMAGE)
    return regions, int(n_regions)


def pro_curve(anomaly_maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact Per-Region-Overlap curve ``(fpr, pro)`` over all distinct scores.

    Implements the PRO curve of the MVTec AD protocol (Bergmann et al.,
    CVPR 2019 / IJCV 2021), used for the "PRO score" of PaDiM Section 4; see
    the module docstring for the exact conventions (8-connected regions pooled
    over the test set, ``score >= t`` is positive, ties enter together).

    Rather than thresholding once per score value (quadratic), every pixel is
    given a weight -- ``1 / (region_size * n_regions)`` for an anomalous pixel,
    which is its contribution to PRO, and ``1 / n_normal`` for a normal pixel,
    its contribution to FPR -- and one global sort by descending score plus two
    cumulative sums yields the curve at every pixel.  Keeping only the last
    index of each run of equal scores gives one point per distinct threshold.
    This takes a fraction of a second for 100 maps of 224x224.

    Parameters
    ----------
    anomaly_maps : array of shape (N, H, W)
        Anomaly maps, finite, higher = more anomalous.
    masks : array of shape (N, H, W)
        Ground-truth masks, bool or 0/1.  Images with an empty mask (good
        images) contribute normal pixels only; single-pixel regions count as
        regions like any other.

    Returns
    -------
    fpr, pro : float64 arrays of equal length ``n_distinct_scores + 1``
        Non-decreasing, starting at ``(0, 0)`` and ending at ``(1, 1)``.  A
        constant map gives just ``[0, 1], [0, 1]``.  If the masks contain no
        anomalous pixel, or no normal pixel, the curve is undefined: an
        :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning` is issued and
        ``(array([nan]), array([nan]))`` is returned.

    Raises
    ------
    ValueError
        Shape mismatch or not (N, H, W), NaN/inf in ``anomaly_maps``, or
        non-binary ``masks``.
    """
    maps_arr, masks_arr = check_maps_masks(anomaly_maps, masks, "anomaly_maps", require_3d=True)
    curve = region_curve(maps_arr, masks_arr)
    if curve is None:
        return np.array([np.nan]), np.array([np.nan])
    return pro_points(curve)


def region_curve(maps: np.ndarray, masks: np.ndarray, pro_until_fpr: float = 1.0) -> Curve | None:
    """The :class:`~padim_repro.metrics.curves.Curve` of checked (N, H, W) maps and masks with the PRO of every
    threshold up to the first beyond FPR ``pro_until_fpr``; None (and an
    :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning`) without anomalous or without normal pixels."""
    regions, n_regions = label_regions(masks)
    n_normal = masks.size - int(np.count_nonzero(masks))
    if n_regions == 0 or n_normal == 0:
        warn_undefined(
            "PRO is undefined: the masks contain "
            + ("no anomalous pixel" if n_regions == 0 else "no normal pixel")
            + "; returning NaN"
        )
        return None
    return binary_curve(maps, masks, regions, n_regions, pro_until_fpr)


def pro_points(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) from (0, 0), of a curve computed with regions, as far as its PRO was computed (to (1, 1) unless
    cut at a smaller FPR)."""
    assert curve.pro is not None
    return np.concatenate(([0.0], curve.fp[: curve.pro.size] / curve.n_neg)), np.concatenate(([0.0], curve.pro))


def area_to_limit(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under the piecewise-linear curve from FPR 0 to ``fpr_limit``.

    The point at exactly ``fpr_limit`` is obtained by linear interpolation
    between the last point with ``fpr <= fpr_limit`` and the next one, so the
    area does not depend on which thresholds happen to exist near the limit.
    """
    # Index of the first point strictly beyond the limit.
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    if end >= fpr.size:  # the curve does not go beyond the limit
        x, y = fpr, pro
    else:
        x0, x1 = fpr[end - 1], fpr[end]  # x0 <= limit < x1, so x1 > x0
        y0, y1 = pro[end - 1], pro[end]
        y_limit = y0 + (fpr_limit - x0) * (y1 - y0) / (x1 - x0)
        x = np.append(fpr[:end], fpr_limit)
        y = np.append(pro[:end], y_limit)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1])) / 2.0)


def aupro(anomaly_maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (the PaDiM "PRO score").

    PaDiM (Section 4) and the MVTec AD protocol (Bergmann et al.) integrate the
    PRO curve from FPR 0 up to FPR 0.3 and divide by 0.3, so that a perfect
    map scores 1.  Here the curve of :func:`pro_curve` is integrated with the
    trapezoid rule, with the point at exactly ``fpr_limit`` interpolated
    linearly, and the area is divided by ``fpr_limit`` itself -- never by the
    last FPR reached below the limit, which would inflate the score (it can
    then exceed 1).

    Reference values: a perfect map gives 1.0; a map ranking every anomalous
    pixel below every normal pixel gives 0.0; a constant map gives the
    diagonal from (0, 0) to (1, 1) and hence ``fpr_limit / 2`` (0.15 for the
    default limit).

    Parameters
    ----------
    anomaly_maps, masks
        As for :func:`pro_curve`.
    fpr_limit : float in (0, 1]
        Upper integration limit on the false-positive rate (default 0.3).

    Returns
    -------
    float
        In [0, 1]; NaN with an :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning` when the masks
        contain no anomalous pixel (or no normal pixel).

    Raises
    ------
    ValueError
        Invalid ``fpr_limit``, or any input error of :func:`pro_curve`.
    """
    fpr_limit = check_fpr_limit(fpr_limit)
    fpr, pro = pro_curve(anomaly_maps, masks)
    if np.isnan(fpr[0]):
        return float("nan")  # pro_curve has already warned
    return area_to_limit(fpr, pro, fpr_limit) / fpr_limit


def check_fpr_limit(fpr_limit: float) -> float:
    """``fpr_limit`` as a float in (0, 1], else a ValueError."""
    fpr_limit = float(fpr_limit)
    if not (0.0 < fpr_limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit
