"""ROC-based metrics (PaDiM Sec. 4.1): image-level AUROC (detection), pixel-level AUROC (localisation), their
ROC curves, and the image AUROC of each defect type; all from the counts of
:func:`~padim_repro.metrics.curves.binary_curve`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .curves import auroc, binary_curve, roc_points
from .inputs import check_maps_masks, check_scores_labels, warn_undefined


def image_auroc(scores: Any, labels: Any) -> float:
    """Image-level ROC AUC (detection), as reported in PaDiM Table 2.

    Parameters
    ----------
    scores : array of shape (N,)
        One anomaly score per test image (higher = more anomalous); finite.
    labels : array of shape (N,)
        0 for good images, 1 for defective images (bool accepted).

    Returns
    -------
    float
        The trapezoid area under the ROC curve (what ``sklearn.metrics.roc_auc_score(labels, scores)``
        computes).  NaN, with an
        :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning`, when only one class is present,
        because the ROC curve is then undefined.

    Raises
    ------
    ValueError
        Shape mismatch, NaN/inf in ``scores``, or labels that are not 0/1.
    """
    scores_arr, labels_arr = check_scores_labels(scores, labels)
    n_pos = int(labels_arr.sum())
    if n_pos == 0 or n_pos == labels_arr.size:
        warn_undefined(
            f"image_auroc is undefined: all {labels_arr.size} images have label "
            f"{int(n_pos > 0)}; returning NaN"
        )
        return float("nan")
    return auroc(binary_curve(scores_arr, labels_arr))


def pixel_auroc(maps: Any, masks: Any) -> float:
    """Pixel-level ROC AUC (segmentation), as reported in PaDiM Table 1.

    Every pixel of the test set (good images included) is one sample; the
    ground truth is the mask.  This follows the MVTec AD protocol
    (Bergmann et al., 2019).

    Parameters
    ----------
    maps : array of shape (N, H, W) (any shape equal to ``masks``)
        Anomaly maps, finite, higher = more anomalous.
    masks : array of the same shape
        Ground-truth masks, bool or 0/1.  Empty masks (good images) are fine.

    Returns
    -------
    float
        The AUROC; NaN with an :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning` when the test
        set has no anomalous pixel or no normal pixel.

    Raises
    ------
    ValueError
        Shape mismatch, NaN/inf in ``maps``, or non-binary ``masks``.
    """
    maps_arr, masks_arr = check_maps_masks(maps, masks, "maps", require_3d=False)
    n_pos = int(np.count_nonzero(masks_arr))
    if n_pos == 0 or n_pos == masks_arr.size:
        warn_undefined(
            "pixel_auroc is undefined: the masks contain "
            + ("no anomalous pixel" if n_pos == 0 else "no normal pixel")
            + "; returning NaN"
        )
        return float("nan")
    return auroc(binary_curve(maps_arr, masks_arr))


def image_roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Image-level ROC curve ``(fpr, tpr)`` for plotting, one point per distinct score.

    Same inputs and validation as :func:`image_auroc`.  When only one class
    is present the curve is undefined: an :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning` is
    issued and ``(array([nan]), array([nan]))`` is returned.
    """
    scores_arr, labels_arr = check_scores_labels(scores, labels)
    n_pos = int(labels_arr.sum())
    if n_pos == 0 or n_pos == labels_arr.size:
        warn_undefined("image_roc_curve is undefined: only one class in labels; returning NaN")
        return np.array([np.nan]), np.array([np.nan])
    return roc_points(binary_curve(scores_arr, labels_arr))


def pixel_roc_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-level ROC curve ``(fpr, tpr)`` for plotting.

    Same inputs and validation as :func:`pixel_auroc`.  Collinear points are
    dropped (as scikit-learn's ``drop_intermediate`` does), which keeps the
    curve small enough to plot for millions of pixels.  When the masks have no
    anomalous or no normal pixel an :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning` is issued
    and ``(array([nan]), array([nan]))`` is returned.
    """
    maps_arr, masks_arr = check_maps_masks(maps, masks, "maps", require_3d=False)
    n_pos = int(np.count_nonzero(masks_arr))
    if n_pos == 0 or n_pos == masks_arr.size:
        warn_undefined("pixel_roc_curve is undefined: only one class in masks; returning NaN")
        return np.array([np.nan]), np.array([np.nan])
    return roc_points(binary_curve(maps_arr, masks_arr), thin=True)


def per_defect_image_auroc(scores: Any, labels: Any, defect_types: Sequence[str]) -> dict[str, float]:
    """Image AUROC of each defect type against all good images.

    MVTec AD test sets are split by defect type (e.g. ``bottle/broken_large``);
    scoring each type's images against the good images shows which defects a
    model misses, which the pooled image AUROC hides.

    Parameters
    ----------
    scores : array of shape (N,)
        One anomaly score per image; finite.
    labels : array of shape (N,)
        0 for good images, 1 for defective images.
    defect_types : sequence of N str
        Defect type of each image; must be ``"good"`` exactly for the images
        with label 0 (so that a mislabelled image cannot go unnoticed).

    Returns
    -------
    dict
        ``{defect_type: auroc}`` for every defect type present (``"good"``
        excluded), sorted by name, values plain Python floats.  With no good
        image every value is NaN (with an :class:`~padim_repro.metrics.inputs.UndefinedMetricWarning`).
    """
    scores_arr, labels_arr = check_scores_labels(scores, labels)
    types = np.asarray([str(t) for t in defect_types], dtype=object)
    if types.shape != scores_arr.shape:
        raise ValueError(
            f"defect_types must have one entry per image: got {types.size} for {scores_arr.size} scores"
        )
    is_good_type = types == "good"
    mismatch = np.flatnonzero(is_good_type != ~labels_arr)
    if mismatch.size:
        i = int(mismatch[0])
        raise ValueError(
            f"labels and defect_types disagree at {mismatch.size} images (first: index {i}, "
            f"label {int(labels_arr[i])}, defect type {types[i]!r}); label 0 must have "
            f"defect type 'good' and label 1 any other defect type"
        )
    good_scores = scores_arr[~labels_arr]
    result: dict[str, float] = {}
    for defect in sorted(set(types[labels_arr].tolist())):
        defect_scores = scores_arr[types == defect]
        sub_scores = np.concatenate([good_scores, defect_scores])
        sub_labels = np.concatenate([np.zeros(good_scores.size, bool), np.ones(defect_scores.size, bool)])
        result[defect] = image_auroc(sub_scores, sub_labels)
    return result
