"""padim_repro.metrics.curves and .thresholded: one sort for every curve, checked against scikit-learn and brute
force on random data with many ties; and :func:`padim_repro.metrics.evaluate` on test sets that leave metrics
undefined."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from padim_repro.metrics import (
    UndefinedMetricWarning,
    evaluate,
    image_auroc,
    image_average_precision,
    image_f1_max,
    pixel_auroc,  # fmt: skip
    pixel_average_precision,
    pixel_f1_max,
)
from padim_repro.metrics.curves import auroc, average_precision, binary_curve, f1_max, roc_points


def _case(seed: int, n: int = 400, levels: int | None = 23) -> tuple[np.ndarray, np.ndarray]:
    """Scores (rounded to ``levels`` values: many ties) and labels correlated with them."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[:2] = [True, False]  # both classes
    scores = rng.normal(size=n) + 1.2 * labels
    if levels:
        scores = np.round(scores * levels / 8) / (levels / 8)
    return scores.astype(np.float32), labels


def _f1_brute(scores: np.ndarray, labels: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp, fp, fn = (pred & labels).sum(), (pred & ~labels).sum(), (~pred & labels).sum()
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_auroc_and_ap_equal_scikit_learn_and_f1_equals_brute_force(seed: int) -> None:
    scores, labels = _case(seed, levels=None if seed % 3 == 0 else 5 + seed)
    curve = binary_curve(scores, labels)
    assert auroc(curve) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(curve) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert f1_max(curve) == pytest.approx(_f1_brute(scores, labels), abs=1e-12)
    p, r, _ = precision_recall_curve(labels, scores)
    assert f1_max(curve) == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-300)), abs=1e-12)


def test_the_references_are_sensitive() -> None:
    """Swapping two samples of different classes changes every metric: the comparisons above can fail."""
    scores, labels = _case(0, levels=None)
    curve = binary_curve(scores, labels)
    i, j = int(np.argmax(np.where(labels, scores, -np.inf))), int(np.argmax(np.where(~labels, scores, -np.inf)))
    swapped = scores.copy()
    swapped[[i, j]] = swapped[[j, i]]
    other = binary_curve(swapped, labels)
    assert auroc(other) != auroc(curve) and average_precision(other) != average_precision(curve)


def test_pixel_metrics_take_any_shape_and_agree_with_the_flat_ones() -> None:
    rng = np.random.default_rng(1)
    maps = rng.random((3, 8, 9)).astype(np.float32)
    masks = rng.random((3, 8, 9)) < 0.2
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel_average_precision(maps, masks) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()))
    assert pixel_f1_max(maps, masks) == pytest.approx(_f1_brute(maps.ravel(), masks.ravel()))
    s, lab = maps.ravel()[:50], masks.ravel()[:50]
    assert image_auroc(s, lab) == pytest.approx(roc_auc_score(lab, s)) and image_f1_max(s, lab) == pixel_f1_max(s, lab)
    assert image_average_precision(s, lab) == pytest.approx(average_precision_score(lab, s))


def test_roc_points_thinning_keeps_the_curve() -> None:
    scores, labels = _case(3, n=2000, levels=None)
    curve = binary_curve(scores, labels)
    full, thin = roc_points(curve), roc_points(curve, thin=True)
    assert thin[0].size < full[0].size
    area = lambda x, y: float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2)  # noqa: E731
    assert area(*thin) == pytest.approx(area(*full), abs=1e-12)  # only collinear points were dropped
    assert set(zip(*thin)) <= set(zip(*full))
    assert (thin[0][0], thin[1][0], thin[0][-1], thin[1][-1]) == (0, 0, 1, 1)


def _category(n_good: int, n_bad: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_good + n_bad
    maps = rng.random((n, 12, 12)).astype(np.float32)
    masks = np.zeros((n, 12, 12), dtype=bool)
    masks[n_good:, 3:7, 4:8] = True
    maps[masks] += 0.5
    labels = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)]
    types = ["good"] * n_good + ["scratch"] * n_bad
    return maps, masks, maps.reshape(n, -1).max(1), labels, types


def test_evaluate_records_undefined_metrics_as_none_with_the_reason() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # evaluate itself never warns
        only_bad = evaluate(*_category(0, 4))
        only_good = evaluate(*_category(4, 0))
        both = evaluate(*_category(3, 3))
    image = {"image_auroc", "image_f1_max", "image_ap", "per_defect_image_auroc"}  # with defects only, F1 = AP = 1
    assert only_bad["undefined"] == dict.fromkeys(image, "no good test image") and only_bad["pixel_auroc"] > 0.5
    assert only_good["undefined"].keys() == image | {"pixel_auroc", "pro", "pixel_f1_max", "pixel_ap"}
    assert all(only_good[k] is None for k in only_good["undefined"])
    assert both["undefined"] == {} and both["image_auroc"] == 1.0
    for result in (only_bad, only_good, both):
        assert "NaN" not in json.dumps(result)
