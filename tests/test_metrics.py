"""Tests for padim_repro.metrics.

The PRO implementation is vectorised (one global sort + cumulative sums), so it
is checked against a deliberately naive reference written here from the
definition of the MVTec AD protocol (Bergmann et al.): threshold at every
distinct score, loop over the 8-connected regions of every image, integrate
with trapezoids up to the FPR limit.  Hand-computed cases pin the conventions.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from padim_repro.metrics import (
    UndefinedMetricWarning,
    aupro,
    evaluate,
    image_auroc,
    image_roc_curve,
    per_defect_image_auroc,
    pixel_auroc,
    pixel_roc_curve,
    pro_curve,
)


# --------------------------------------------------------------------------
# Naive reference
# --------------------------------------------------------------------------
def reference_pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve straight from the definition, one threshold at a time."""
    masks = masks.astype(bool)
    regions = []  # (image index, boolean mask of the region)
    for i in range(masks.shape[0]):
        labelled, n = ndimage.label(masks[i], structure=np.ones((3, 3), dtype=int))
        for r in range(1, n + 1):
            regions.append((i, labelled == r))
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        positive = maps >= t
        fprs.append((positive & normal).sum() / normal.sum())
        overlaps = [positive[i][region].sum() / region.sum() for i, region in regions]
        pros.append(sum(overlaps) / len(overlaps))
    return np.array(fprs), np.array(pros)


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    fpr, pro = reference_pro_curve(maps, masks)
    area = 0.0
    for k in range(1, len(fpr)):
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the segment at the limit
            y1 = y0 + (fpr_limit - x0) * (y1 - y0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small random maps/masks with ties, touching / diagonal regions, good images."""
    rng = np.random.default_rng(seed)
    while True:
        n = int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(8, 13, size=2))
        masks = np.zeros((n, h, w), dtype=bool)
        for i in range(n):
            kind = rng.integers(0, 4)
            if kind == 0:
                continue  # good image
            if kind in (1, 3):  # rectangles, possibly touching / overlapping
                for _ in range(rng.integers(1, 4)):
                    y, x = rng.integers(0, h - 1), rng.integers(0, w - 1)
                    masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
            if kind in (2, 3):  # sparse pixels: single-pixel and diagonal-only regions
                masks[i] |= rng.random((h, w)) < 0.08
                y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
                masks[i, y, x] = masks[i, y + 1, x + 1] = True
        if masks.any() and not masks.all():
            break
    levels = int(rng.integers(2, 7))
    maps = rng.integers(0, levels, size=masks.shape) + 1.5 * masks * rng.random()
    if seed % 3 == 0:
        maps = maps / 7.0 - 0.3  # float64 values not exact in float32: generic sort path
    elif seed % 3 == 1:
        maps = maps.astype(np.float32)  # float32 packed-key sort path
    else:
        maps = -np.round(maps, 1)  # negative values and -0.0
    return maps, masks


# --------------------------------------------------------------------------
# PRO against the reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(50))
def test_pro_curve_and_aupro_match_reference(seed: int) -> None:
    maps, masks = random_case(seed)
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = reference_pro_curve(maps, masks)
    assert fpr.shape == ref_fpr.shape
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=1e-9)
    for limit in (0.3, 0.05, 1.0, 0.123):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(
            reference_aupro(maps, masks, limit), abs=1e-9
        )


def test_reference_is_sensitive() -> None:
    """Guard against a vacuous comparison: a perturbed map changes the value."""
    maps, masks = random_case(4)
    base = reference_aupro(maps, masks, 0.3)
    shuffled = np.random.default_rng(0).permutation(maps.ravel()).reshape(maps.shape)
    assert abs(aupro(shuffled, masks) - base) > 1e-3


def test_float32_and_float64_paths_agree() -> None:
    maps, masks = random_case(7)
    maps32 = maps.astype(np.float32)
    fpr32, pro32 = pro_curve(maps32, masks)
    fpr64, pro64 = pro_curve(maps32.astype(np.float64), masks)  # exact in float32
    nudged = maps32.astype(np.float64)
    nudged[0, 0, 0] += 1e-12  # no longer float32-exact: argsort path
    fpr_g, pro_g = pro_curve(nudged, masks)
    np.testing.assert_array_equal(fpr32, fpr64)
    np.testing.assert_array_equal(pro32, pro64)
    assert aupro(nudged, masks) == pytest.approx(reference_aupro(nudged, masks, 0.3), abs=1e-9)
    assert len(fpr_g) in (len(fpr32), len(fpr32) + 1)


# --------------------------------------------------------------------------
# Hand-computed PRO cases
# --------------------------------------------------------------------------
def two_region_image() -> np.ndarray:
    """One 10x11 image (110 px): region A = 2x2 (4 px), region B = 2x3 (6 px), 100 normal px."""
    masks = np.zeros((1, 10, 11), dtype=bool)
    masks[0, 0:2, 0:2] = True  # A
    masks[0, 6:8, 6:9] = True  # B, far from A
    return masks


def test_perfect_map_scores_one() -> None:
    masks = two_region_image()
    maps = masks.astype(float) + 0.01 * np.random.default_rng(0).random(masks.shape)
    assert aupro(maps, masks) == pytest.approx(1.0, abs=1e-12)


def test_reversed_map_scores_zero() -> None:
    masks = two_region_image()
    maps = (~masks).astype(float) + 0.01 * np.random.default_rng(0).random(masks.shape)
    assert aupro(maps, masks) == pytest.approx(0.0, abs=1e-12)


def test_some_regions_found_hand_value() -> None:
    masks = two_region_image()
    maps = np.zeros(masks.shape)
    maps[0, 0:2, 0:2] = 4.0  # all of A (4 px)
    maps[0, 6, 6:9] = 3.0  # half of B (3 of 6 px); the other 3 stay at 0
    maps[0, 9, 0:10] = 2.0  # 10 of the 100 normal pixels
    # Thresholds 4, 3, 2, 0 give the points (FPR, PRO):
    #   t=4: A found               -> (0, (1 + 0) / 2)     = (0, 0.5)
    #   t=3: half of B too         -> (0, (1 + 0.5) / 2)   = (0, 0.75)
    #   t=2: 10 / 100 normals      -> (0.1, 0.75)
    #   t=0: everything            -> (1, 1)
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.1, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.5, 0.75, 0.75, 1], atol=1e-12)
    # Area up to FPR 0.3:
    #   [0, 0.1] at height 0.75                       -> 0.075
    #   (0.1, 0.75) -> (1, 1) has slope 0.25 / 0.9 = 5/18, so PRO(0.3) = 0.75 + 0.2 * 5/18
    #   = 0.75 + 1/18; trapezoid 0.2 * (0.75 + 0.75 + 1/18) / 2 = 0.15 + 1/180
    #   total 0.225 + 1/180 = 41.5/180; divided by 0.3 -> 83/108 = 0.76851...
    assert aupro(maps, masks) == pytest.approx(83 / 108, abs=1e-12)
    # Cut at an existing point: area 0.075 over [0, 0.1] -> 0.75.
    assert aupro(maps, masks, fpr_limit=0.1) == pytest.approx(0.75, abs=1e-12)
    # Normalising by the last FPR reached below the limit (0.1) instead of 0.3
    # would give 0.075 / 0.1 = 0.75 for limit 0.3 as well: make sure we do not.
    assert aupro(maps, masks) != pytest.approx(0.75, abs=1e-3)


def test_constant_map_is_diagonal() -> None:
    masks = two_region_image()
    maps = np.full(masks.shape, 0.7, dtype=np.float32)
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(pro, [0.0, 1.0])
    # Area under the diagonal up to 0.3 is 0.3^2 / 2 = 0.045; / 0.3 = 0.15.
    assert aupro(maps, masks) == pytest.approx(0.15, abs=1e-12)


def test_single_pixel_region_with_ties() -> None:
    masks = np.zeros((1, 5, 5), dtype=bool)
    masks[0, 2, 2] = True  # one region of one pixel; 24 normal pixels
    maps = np.zeros((1, 5, 5))
    maps[0, 2, 2] = 1.0
    assert aupro(maps, masks) == pytest.approx(1.0, abs=1e-12)
    maps[0, 0, 0:4] = 1.0  # 4 normal pixels tie with the anomalous one
    # Tied pixels enter together: (0, 0) -> (4/24, 1) -> (1, 1).
    # Area to 0.3: triangle (1/6) * 1 / 2 = 1/12, then 1 * (0.3 - 1/6) = 2/15;
    # total 13/60, / 0.3 = 13/18.
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 1 / 6, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 1, 1], atol=1e-12)
    assert aupro(maps, masks) == pytest.approx(13 / 18, abs=1e-12)


def test_diagonal_pixels_form_one_region() -> None:
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one 8-connected region
    masks[0, 4, 4] = True  # a separate single-pixel region
    maps = np.zeros((1, 6, 6))
    maps[0, 0, 0] = 1.0
    # 8-connectivity: regions {(0,0),(1,1)} and {(4,4)} -> PRO = (1/2 + 0) / 2 = 0.25.
    # (4-connectivity would give three regions and PRO = 1/3.)
    fpr, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.25, abs=1e-12)
    assert fpr[1] == 0.0


def test_regions_do_not_connect_across_images() -> None:
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, 2, 2] = True  # region of image 0
    masks[1, 2, 2:4] = True  # region of image 1, directly "below" in the stack
    maps = np.zeros((2, 5, 5))
    maps[0, 2, 2] = 1.0
    # Two regions: PRO = (1 + 0) / 2 = 0.5 (one merged 3-px region would give 1/3).
    _, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5, abs=1e-12)


def test_good_images_count_as_normal_pixels() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = True  # 15 normal px in image 0, 16 in the good image 1
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0] = 2.0
    maps[1, 0, 0:3] = 1.0  # 3 false positives in the good image
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 3 / 31, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 1, 1, 1], atol=1e-12)


def test_mask_dtypes_accepted() -> None:
    maps, masks = random_case(2)
    expected = aupro(maps, masks)
    assert aupro(maps, masks.astype(np.uint8)) == expected
    assert aupro(maps, masks.astype(np.float32)) == expected
    assert aupro(maps.tolist(), masks.tolist()) == expected


def test_negative_zero_ties_with_zero() -> None:
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 1, 1] = True
    maps = np.zeros((1, 3, 3), dtype=np.float32)
    maps[0, 1, 1] = -0.0
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(pro, [0.0, 1.0])


def test_aupro_never_exceeds_one() -> None:
    for seed in range(10):
        maps, masks = random_case(100 + seed)
        assert 0.0 <= aupro(maps, masks) <= 1.0


# --------------------------------------------------------------------------
# Validation and undefined cases
# --------------------------------------------------------------------------
def test_nan_in_maps_raises() -> None:
    maps, masks = random_case(1)
    maps = maps.astype(float)
    maps[0, 0, :3] = np.nan
    with pytest.raises(ValueError, match=r"anomaly_maps contains 3 NaN"):
        aupro(maps, masks)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(maps, masks)


def test_inf_in_maps_raises() -> None:
    maps, masks = random_case(1)
    maps = maps.astype(float)
    maps[0, 0, 0] = np.inf
    maps[0, 0, 1] = -np.inf
    with pytest.raises(ValueError, match=r"2 inf"):
        pro_curve(maps, masks)


def test_nan_in_scores_raises() -> None:
    with pytest.raises(ValueError, match=r"scores contains 1 NaN"):
        image_auroc([0.1, np.nan, 0.3], [0, 1, 1])


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same shape"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="same shape"):
        image_auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pro_curve(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool))


def test_non_binary_masks_and_labels_raise() -> None:
    masks = np.zeros((1, 4, 4))
    masks[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="masks must be binary"):
        aupro(np.zeros((1, 4, 4)), masks)
    with pytest.raises(ValueError, match="labels must be binary"):
        image_auroc([0.1, 0.2, 0.3], [0, 1, 2])


def test_invalid_fpr_limit_raises() -> None:
    maps, masks = random_case(0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(maps, masks, fpr_limit=bad)


def test_no_anomalous_pixel_gives_nan_and_warning() -> None:
    maps = np.random.default_rng(0).random((2, 5, 5))
    masks = np.zeros((2, 5, 5), dtype=bool)
    with pytest.warns(UndefinedMetricWarning, match="no anomalous pixel"):
        assert np.isnan(aupro(maps, masks))
    with pytest.warns(UndefinedMetricWarning):
        fpr, pro = pro_curve(maps, masks)
    assert np.isnan(fpr).all() and np.isnan(pro).all()
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(pixel_auroc(maps, masks))


def test_single_class_image_auroc_gives_nan_and_warning() -> None:
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(image_auroc([0.1, 0.5], [1, 1]))


# --------------------------------------------------------------------------
# ROC metrics, per-defect AUROC, evaluate
# --------------------------------------------------------------------------
def test_image_auroc_hand_value() -> None:
    # Positives 0.8, 0.3 vs negatives 0.1, 0.4: 3 of 4 pairs ordered -> 0.75.
    assert image_auroc([0.1, 0.4, 0.8, 0.3], [0, 0, 1, 1]) == pytest.approx(0.75)
    fpr, tpr = image_roc_curve([0.1, 0.4, 0.8, 0.3], [0, 0, 1, 1])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1


def test_pixel_auroc_hand_value() -> None:
    masks = np.array([[[1, 0], [0, 0]]])
    maps = np.array([[[0.5, 0.9], [0.1, 0.2]]])
    # One positive (0.5) vs three negatives (0.9, 0.1, 0.2): beats 2 of 3.
    assert pixel_auroc(maps, masks) == pytest.approx(2 / 3)
    fpr, tpr = pixel_roc_curve(maps, masks)
    assert np.trapezoid(tpr, fpr) == pytest.approx(2 / 3)


def test_per_defect_image_auroc_hand_case() -> None:
    scores = [0.1, 0.4, 0.5, 0.3, 0.9, 0.2]
    labels = [0, 0, 1, 1, 1, 1]
    types = ["good", "good", "crack", "crack", "scratch", "hole"]
    result = per_defect_image_auroc(scores, labels, types)
    # crack {0.5, 0.3} vs good {0.1, 0.4}: 3 of 4 pairs -> 0.75
    # scratch {0.9}: 1.0; hole {0.2}: beats 0.1 only -> 0.5
    assert result == {"crack": pytest.approx(0.75), "hole": pytest.approx(0.5), "scratch": pytest.approx(1.0)}
    assert list(result) == ["crack", "hole", "scratch"]


def test_per_defect_labels_and_types_must_agree() -> None:
    with pytest.raises(ValueError, match="disagree"):
        per_defect_image_auroc([0.1, 0.2], [0, 1], ["good", "good"])
    with pytest.raises(ValueError, match="one entry per image"):
        per_defect_image_auroc([0.1, 0.2], [0, 1], ["good"])


def test_evaluate_returns_plain_json_types() -> None:
    maps, masks = random_case(5)
    n = maps.shape[0]
    maps = np.concatenate([maps, np.zeros((1,) + maps.shape[1:])])  # add a good image
    masks = np.concatenate([masks, np.zeros((1,) + masks.shape[1:], dtype=bool)])
    labels = np.r_[np.ones(n, dtype=int), 0]
    labels[: n][~masks[:n].any(axis=(1, 2))] = 0
    types = ["good" if lab == 0 else f"defect{i % 2}" for i, lab in enumerate(labels)]
    scores = maps.reshape(len(maps), -1).max(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # single-class cases are allowed
        result = evaluate(maps, masks, scores, labels, types)
    assert set(result) == {"image_auroc", "pixel_auroc", "pro", "image_f1_max", "image_ap", "pixel_f1_max",
                           "pixel_ap", "per_defect_image_auroc", "undefined"}
    assert all(type(result[k]) is float for k in set(result) - {"per_defect_image_auroc", "undefined"})
    assert result["undefined"] == {}
    assert result["pro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert result["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks))
    assert all(type(v) is float for v in result["per_defect_image_auroc"].values())
    json.dumps(result)


def test_evaluate_rejects_mismatched_counts() -> None:
    maps, masks = random_case(5)
    with pytest.raises(ValueError, match="image_scores"):
        evaluate(maps, masks, np.zeros(maps.shape[0] + 1), np.zeros(maps.shape[0] + 1), ["good"] * (maps.shape[0] + 1))
