r"""Thresholded metrics beyond the paper that practitioners ask for: F1-max and average precision.

PaDiM reports threshold-free metrics only (AUROC, PRO). A deployed detector needs a threshold, and on pixels, where
defects are a few percent of the test set, AUROC hides how many false alarms come with each hit; anomalib reports
F1 for that reason. Both are computed from the counts of :func:`~padim_repro.metrics.curves.binary_curve`:

* **F1-max**: the best :math:`F_1 = 2 P R / (P + R)` over all thresholds (the threshold an oracle would pick; anomalib's
  ``F1Max``);
* **average precision** (AP): the area under the precision-recall curve as a step sum,
  :math:`\sum_k (R_k - R_{k-1}) P_k` (scikit-learn's ``average_precision_score``).

Image-level: one score per image against its label. Pixel-level: every pixel of the test set.
"""

from __future__ import annotations

from typing import Any

from .curves import Curve, average_precision, binary_curve, f1_max
from .inputs import check_maps_masks, check_scores_labels, warn_undefined


def _image_curve(scores: Any, labels: Any, name: str) -> Curve | None:
    scores_arr, labels_arr = check_scores_labels(scores, labels)
    if not labels_arr.any():
        warn_undefined(f"{name} is undefined: no defective image; returning NaN")
        return None
    return binary_curve(scores_arr, labels_arr)


def _pixel_curve(maps: Any, masks: Any, name: str) -> Curve | None:
    maps_arr, masks_arr = check_maps_masks(maps, masks, "maps", require_3d=False)
    if not masks_arr.any():
        warn_undefined(f"{name} is undefined: the masks contain no anomalous pixel; returning NaN")
        return None
    return binary_curve(maps_arr, masks_arr)


def image_f1_max(scores: Any, labels: Any) -> float:
    """Best image-level F1 over all thresholds on the image scores; NaN (with a warning) without defective image."""
    curve = _image_curve(scores, labels, "image_f1_max")
    return float("nan") if curve is None else f1_max(curve)


def image_average_precision(scores: Any, labels: Any) -> float:
    """Image-level average precision; NaN (with a warning) without defective image."""
    curve = _image_curve(scores, labels, "image_average_precision")
    return float("nan") if curve is None else average_precision(curve)


def pixel_f1_max(maps: Any, masks: Any) -> float:
    """Best pixel-level F1 over all thresholds, every pixel of the test set one sample; NaN without defect pixel."""
    curve = _pixel_curve(maps, masks, "pixel_f1_max")
    return float("nan") if curve is None else f1_max(curve)


def pixel_average_precision(maps: Any, masks: Any) -> float:
    """Pixel-level average precision, every pixel of the test set one sample; NaN without defect pixel."""
    curve = _pixel_curve(maps, masks, "pixel_average_precision")
    return float("nan") if curve is None else average_precision(curve)
