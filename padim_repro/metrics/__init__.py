"""Evaluation metrics for anomaly detection on MVTec AD.

PaDiM (Defard et al., 2020, arXiv:2011.08785, Section 4) reports three numbers
per category:

* **image-level AUROC** -- ROC AUC of one anomaly score per image against the
  image label (0 = good, 1 = defective);
* **pixel-level AUROC** -- ROC AUC of the anomaly map against the ground-truth
  mask, treating every pixel of the test set as one sample;
* **PRO score** -- the area under the Per-Region-Overlap curve up to a
  false-positive rate of 30 %, normalised by 0.3.  PRO was introduced with the
  MVTec AD dataset (Bergmann et al., CVPR 2019; IJCV 2021) because pixel AUROC
  is dominated by large defects: PRO gives every connected defect region the
  same weight, whatever its size.

These modules depend on numpy, scipy and scikit-learn only (no torch) so that
they can be tested and reused independently of the model.

Beyond the paper, :mod:`~padim_repro.metrics.thresholded` adds image and pixel F1-max and average precision.

The package splits them by concern: :mod:`~padim_repro.metrics.inputs` (validation shared by all metrics),
:mod:`~padim_repro.metrics.curves` (one sort of the samples, the counts behind every curve),
:mod:`~padim_repro.metrics.roc` (image and pixel AUROC, ROC curves, per-defect AUROC),
:mod:`~padim_repro.metrics.pro` (the PRO curve and its normalised area) and
:mod:`~padim_repro.metrics.thresholded`; :func:`evaluate` computes them all from one sort of the test set's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .curves import auroc, average_precision, binary_curve, f1_max
from .inputs import UndefinedMetricWarning, check_maps_masks, check_scores_labels
from .pro import area_to_limit, aupro, check_fpr_limit, pro_curve, pro_points, region_curve
from .roc import image_auroc, image_roc_curve, per_defect_image_auroc, pixel_auroc, pixel_roc_curve
from .thresholded import image_average_precision, image_f1_max, pixel_average_precision, pixel_f1_max

#: The paper's three metrics (Sec. 4.1), fractions in [0, 1].
PAPER_METRICS = ("image_auroc", "pixel_auroc", "pro")
#: Thresholded metrics beyond the paper (:mod:`~padim_repro.metrics.thresholded`).
THRESHOLDED_METRICS = ("image_f1_max", "image_ap", "pixel_f1_max", "pixel_ap")

__all__ = [
    "PAPER_METRICS",
    "THRESHOLDED_METRICS",
    "UndefinedMetricWarning",
    "image_auroc",
    "pixel_auroc",
    "image_roc_curve",
    "pixel_roc_curve",
    "pro_curve",
    "aupro",
    "per_defect_image_auroc",
    "image_f1_max",
    "image_average_precision",
    "pixel_f1_max",
    "pixel_average_precision",
    "evaluate",
]


def evaluate(
    anomaly_maps: Any,
    masks: Any,
    image_scores: Any,
    labels: Any,
    defect_types: Sequence[str],
    fpr_limit: float = 0.3,
) -> dict[str, Any]:
    """All metrics of one category, as plain Python types (JSON-ready), from one sort of the test set's pixels.

    Parameters
    ----------
    anomaly_maps : array (N, H, W)
        Anomaly maps at mask resolution.
    masks : array (N, H, W)
        Ground-truth masks, bool or 0/1 (empty for good images).
    image_scores : array (N,)
        Image-level anomaly scores (PaDiM uses the maximum of the map).
    labels : array (N,)
        0 good / 1 defective.
    defect_types : sequence of N str
        ``"good"`` for label 0, the defect folder name otherwise.
    fpr_limit : float
        Integration limit of the PRO score (0.3 in PaDiM and MVTec AD).

    Returns
    -------
    dict
        Every name of :data:`PAPER_METRICS` and :data:`THRESHOLDED_METRICS` (``image_ap`` / ``pixel_ap``: average
        precision) as a fraction in [0, 1], ``per_defect_image_auroc`` ({defect_type: float}), and ``undefined``:
        {metric: why} for the metrics the test set cannot define (no good or no defective image: no image metric,
        since with defective images only any scorer gets F1-max and AP 1; no defect pixel or no defect-free pixel:
        no pixel metric), which are None, never NaN.
    """
    maps_arr, masks_arr = check_maps_masks(anomaly_maps, masks, "anomaly_maps", require_3d=True)
    scores_arr, labels_arr = check_scores_labels(image_scores, labels)
    if maps_arr.shape[0] != scores_arr.shape[0]:
        raise ValueError(
            f"anomaly_maps has {maps_arr.shape[0]} images but image_scores has {scores_arr.shape[0]} entries"
        )
    fpr_limit = check_fpr_limit(fpr_limit)
    n_defective = int(labels_arr.sum())
    n_good = labels_arr.size - n_defective
    out: dict[str, Any] = dict.fromkeys(PAPER_METRICS + THRESHOLDED_METRICS)
    undefined: dict[str, str] = {}
    if n_defective and n_good:
        image = binary_curve(scores_arr, labels_arr)
        out["image_auroc"], out["image_f1_max"], out["image_ap"] = auroc(image), f1_max(image), average_precision(image)
    else:  # without both classes no image metric measures anything (with defects only, any scorer gets F1 and AP 1)
        why = "no good test image" if n_defective else "no defective test image"
        undefined.update(dict.fromkeys(("image_auroc", "image_f1_max", "image_ap", "per_defect_image_auroc"), why))
    if masks_arr.any() and not masks_arr.all():
        pixels = region_curve(maps_arr, masks_arr, pro_until_fpr=fpr_limit)
        out["pixel_auroc"], out["pixel_f1_max"] = auroc(pixels), f1_max(pixels)
        out["pixel_ap"] = average_precision(pixels)
        out["pro"] = area_to_limit(*pro_points(pixels), fpr_limit) / fpr_limit
    else:
        why = "no defect pixel in the masks" if not masks_arr.any() else "no defect-free pixel in the masks"
        undefined.update(dict.fromkeys(("pixel_auroc", "pro", "pixel_f1_max", "pixel_ap"), why))
    out["per_defect_image_auroc"] = (
        {str(k): float(v) for k, v in per_defect_image_auroc(scores_arr, labels_arr, defect_types).items()}
        if n_good and n_defective else None
    )  # fmt: skip
    out["undefined"] = undefined
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}
