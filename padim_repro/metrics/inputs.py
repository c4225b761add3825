"""Input validation shared by every metric: finite scores, binary masks and labels, matching shapes.

A metric computed on bad input is silently wrong, so each check raises a ``ValueError`` that says what is wrong;
a metric that is undefined for valid input (one class only) warns with :class:`UndefinedMetricWarning` and is
NaN.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


class UndefinedMetricWarning(RuntimeWarning):
    """Warned when a metric is undefined for the given data and NaN is returned.

    Examples: an AUROC with only one class present, or a PRO curve on a test
    set without any anomalous pixel.  We warn and return NaN rather than raise
    so that a full evaluation (``evaluate``) still reports the other metrics.
    """


def as_finite_scores(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a real numeric array, raising if it has NaN/inf.

    Non-finite scores would silently corrupt a sort-based metric (NaN has no
    place in an ordering), so they are rejected with a count of each kind.
    """
    arr = np.asarray(x)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_nan or n_inf:
            parts = []
            if n_nan:
                parts.append(f"{n_nan} NaN values")
            if n_inf:
                parts.append(f"{n_inf} inf values")
            raise ValueError(f"{name} contains {' and '.join(parts)}; all scores must be finite")
    return arr


def as_binary(x: Any, name: str, hint: str = "") -> np.ndarray:
    """Return ``x`` as a bool array, raising if it has values other than 0/1."""
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be binary (bool or 0/1), got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = np.unique(arr[~ok])
        shown = ", ".join(repr(v.item()) for v in bad[:5])
        more = "" if bad.size <= 5 else f" (and {bad.size - 5} more)"
        raise ValueError(f"{name} must be binary (bool or 0/1), found values {shown}{more}{hint}")
    return arr.astype(bool)


def check_maps_masks(
    maps: Any, masks: Any, maps_name: str, require_3d: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Maps as finite scores and masks as bool, of equal shape ((N, H, W) when ``require_3d``); else ValueError."""
    maps_arr = np.asarray(maps)
    masks_arr = np.asarray(masks)
    if maps_arr.shape != masks_arr.shape:
        raise ValueError(
            f"{maps_name} and masks must have the same shape, got "
            f"{maps_name} {maps_arr.shape} and masks {masks_arr.shape}"
        )
    if require_3d and maps_arr.ndim != 3:
        raise ValueError(
            f"{maps_name} and masks must have shape (N, H, W), got {maps_arr.shape}"
        )
    maps_arr = as_finite_scores(maps_arr, maps_name)
    masks_arr = as_binary(
        masks_arr, "masks", "; threshold resized or interpolated masks first (e.g. masks > 0.5)"
    )
    return maps_arr, masks_arr


def check_scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores as a finite 1-D array and labels as bool of the same shape; else ValueError."""
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(labels)
    if scores_arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional (one score per image), got shape {scores_arr.shape}")
    if labels_arr.shape != scores_arr.shape:
        raise ValueError(
            f"scores and labels must have the same shape, got scores {scores_arr.shape} "
            f"and labels {labels_arr.shape}"
        )
    scores_arr = as_finite_scores(scores_arr, "scores")
    labels_arr = as_binary(labels_arr, "labels", " (0 = good image, 1 = defective image)")
    return scores_arr, labels_arr


def warn_undefined(message: str) -> None:
    """Warn with :class:`UndefinedMetricWarning`, attributed to the caller of the metric function."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
