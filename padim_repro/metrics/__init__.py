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

The package splits them by concern: :mod:`~padim_repro.metrics.inputs` (validation shared by all metrics),
:mod:`~padim_repro.metrics.roc` (image and pixel AUROC, ROC curves, per-defect AUROC) and
:mod:`~padim_repro.metrics.pro` (the PRO curve and its normalised area); :func:`evaluate` computes them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .inputs import UndefinedMetricWarning
from .pro import aupro, pro_curve
from .roc import image_auroc, image_roc_curve, per_defect_image_auroc, pixel_auroc, pixel_roc_curve

__all__ = [
    "UndefinedMetricWarning",
    "image_auroc",
    "pixel_auroc",
    "image_roc_curve",
    "pixel_roc_curve",
    "pro_curve",
    "aupro",
    "per_defect_image_auroc",
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
    """All PaDiM metrics for one category, as plain Python types (JSON-ready).

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
        ``{"image_auroc": float, "pixel_auroc": float, "pro": float,
        "per_defect_image_auroc": {defect_type: float}}``; ``pro`` is the
        normalised area of :func:`~padim_repro.metrics.pro.aupro`, a fraction in [0, 1] (not a percent).
        Undefined metrics are NaN (see the individual functions).
    """
    maps_arr = np.asarray(anomaly_maps)
    scores_arr = np.asarray(image_scores)
    if maps_arr.ndim >= 1 and scores_arr.ndim == 1 and maps_arr.shape[0] != scores_arr.shape[0]:
        raise ValueError(
            f"anomaly_maps has {maps_arr.shape[0]} images but image_scores has {scores_arr.shape[0]} entries"
        )
    return {
        "image_auroc": float(image_auroc(scores_arr, labels)),
        "pixel_auroc": float(pixel_auroc(maps_arr, masks)),
        "pro": float(aupro(maps_arr, masks, fpr_limit=fpr_limit)),
        "per_defect_image_auroc": {
            str(k): float(v) for k, v in per_defect_image_auroc(scores_arr, labels, defect_types).items()
        },
    }
