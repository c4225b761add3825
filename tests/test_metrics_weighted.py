"""padim_repro.metrics.curves.sort_samples / weighted_curve: one sort, reweighted by group.

Checked against :func:`binary_curve` and :func:`padim_repro.metrics.pro.aupro` on the explicitly materialised set
(every group's samples repeated ``w`` times, its regions as new regions), on small random data with many ties.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from padim_repro.metrics.curves import auroc, average_precision, binary_curve, f1_max, sort_samples, weighted_curve
from padim_repro.metrics.pro import _STRUCTURE_8_PER_IMAGE, area_to_limit, aupro, pro_points

LIMIT = 0.3


def _images(seed: int, n: int = 7, h: int = 9, w: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Maps with many ties (rounded), masks with rectangles and single pixels; good images (empty masks) too."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if rng.random() < 0.3 and i:
            continue  # a good image (image 0 always has a defect)
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
        masks[i, rng.integers(0, h), rng.integers(0, w)] = True
    masks[-1] = False  # at least one good image
    maps = np.round(rng.normal(size=masks.shape) + 1.3 * masks, 1).astype(np.float32)
    return maps, masks


def _sorted(maps: np.ndarray, masks: np.ndarray):  # noqa: ANN202
    regions, n_regions = ndimage.label(masks, structure=_STRUCTURE_8_PER_IMAGE)
    groups = np.broadcast_to(np.arange(maps.shape[0])[:, None, None], maps.shape)
    return sort_samples(maps, masks, groups, regions, n_regions), regions, n_regions


def _pro_area(curve) -> float:  # noqa: ANN001
    return area_to_limit(*pro_points(curve), LIMIT) / LIMIT


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("until", [1.0, LIMIT])
def test_unit_weights_give_binary_curve(seed: int, until: float) -> None:
    maps, masks = _images(seed)
    samples, regions, n_regions = _sorted(maps, masks)
    ref = binary_curve(maps, masks, regions, n_regions, pro_until_fpr=until)
    got = weighted_curve(samples, np.ones(maps.shape[0]), pro_until_fpr=until)
    assert got.fp.dtype == np.float64 and got.tp.dtype == np.float64
    np.testing.assert_array_equal(got.fp, ref.fp)
    np.testing.assert_array_equal(got.tp, ref.tp)
    assert (got.n_neg, got.n_pos) == (ref.n_neg, ref.n_pos)
    assert got.pro is not None and ref.pro is not None and got.pro.size == ref.pro.size
    np.testing.assert_allclose(got.pro, ref.pro, rtol=0, atol=1e-12)
    for metric in (auroc, average_precision, f1_max):
        assert metric(got) == pytest.approx(metric(ref), abs=1e-12)
    # the flat (image-level) case, without regions
    scores, labels = maps.ravel()[::3], masks.ravel()[::3]
    flat = weighted_curve(sort_samples(scores, labels, np.arange(scores.size)), np.ones(scores.size))
    ref_flat = binary_curve(scores, labels)
    np.testing.assert_array_equal(flat.fp, ref_flat.fp)
    np.testing.assert_array_equal(flat.tp, ref_flat.tp)
    assert flat.pro is None


def test_sorted_samples_keep_every_sample_with_its_code_and_group() -> None:
    maps, masks = _images(3)
    samples, regions, n_regions = _sorted(maps, masks)
    groups = np.broadcast_to(np.arange(maps.shape[0])[:, None, None], maps.shape)
    pairs = lambda g, c: sorted(zip(g.ravel().tolist(), c.ravel().tolist()))  # noqa: E731
    assert pairs(samples.groups, samples.codes) == pairs(groups, regions)
    assert samples.last[-1] == maps.size - 1 and np.all(np.diff(samples.last) > 0)
    assert samples.last.size == np.unique(maps).size
    np.testing.assert_array_equal(samples.region_sizes[1:], np.bincount(regions.ravel())[1:])
    for r in range(1, n_regions + 1):
        assert np.all(groups[regions == r] == samples.region_groups[r])
    with pytest.raises(ValueError, match="spans more than one group"):
        sort_samples(np.arange(4.0), [True, True, False, False], [0, 1, 0, 1], np.array([1, 1, 0, 0]), 1)


@pytest.mark.parametrize("seed", range(10))
def test_integer_weights_equal_the_materialised_duplicates(seed: int) -> None:
    maps, masks = _images(seed)
    rng = np.random.default_rng(100 + seed)
    weights = rng.integers(0, 4, size=maps.shape[0])
    weights[0], weights[-1] = max(weights[0], 1), max(weights[-1], 1)  # a defect and a good image remain
    samples, _, _ = _sorted(maps, masks)
    idx = np.repeat(np.arange(maps.shape[0]), weights)
    maps2, masks2 = maps[idx], masks[idx]  # duplicates of an image are separate images: new regions
    regions2, n2 = ndimage.label(masks2, structure=_STRUCTURE_8_PER_IMAGE)
    ref = binary_curve(maps2, masks2, regions2, n2, pro_until_fpr=LIMIT)
    for thin in (False, True):
        got = weighted_curve(samples, weights, pro_until_fpr=LIMIT, thin=thin)
        assert (got.n_neg, got.n_pos) == (ref.n_neg, ref.n_pos)
        for metric in (auroc, average_precision, f1_max):
            assert metric(got) == pytest.approx(metric(ref), abs=1e-12)
        assert _pro_area(got) == pytest.approx(aupro(maps2, masks2, LIMIT), abs=1e-12)
    # image level: scores of images, each image one group
    scores, labels = maps.reshape(maps.shape[0], -1).max(1), masks.reshape(maps.shape[0], -1).any(1)
    got = weighted_curve(sort_samples(scores, labels, np.arange(scores.size)), weights)
    ref = binary_curve(scores[idx], labels[idx])
    for metric in (auroc, average_precision, f1_max):
        assert metric(got) == pytest.approx(metric(ref), abs=1e-12)


def test_zero_weights_drop_groups() -> None:
    maps, masks = _images(5, n=8)
    samples, _, _ = _sorted(maps, masks)
    keep = np.array([1, 0, 1, 1, 0, 1, 0, 1])
    got = weighted_curve(samples, keep, pro_until_fpr=1.0)
    sub_maps, sub_masks = maps[keep == 1], masks[keep == 1]
    regions, n_regions = ndimage.label(sub_masks, structure=_STRUCTURE_8_PER_IMAGE)
    ref = binary_curve(sub_maps, sub_masks, regions, n_regions)
    # the same curve, with repeated points where only dropped samples lie
    points = np.stack([got.fp, got.tp])
    distinct = np.any(np.diff(points, axis=1, prepend=0.0) != 0, axis=0)  # the point differs from the one before
    np.testing.assert_array_equal(got.fp[distinct], ref.fp)
    np.testing.assert_array_equal(got.tp[distinct], ref.tp)
    np.testing.assert_allclose(got.pro[distinct], ref.pro, rtol=0, atol=1e-12)
    assert _pro_area(got) == pytest.approx(aupro(sub_maps, sub_masks, LIMIT), abs=1e-12)


def test_weights_matter_and_undefined_curves_give_nan() -> None:
    maps, masks = _images(2)
    samples, _, _ = _sorted(maps, masks)
    ones = np.ones(maps.shape[0])
    base = weighted_curve(samples, ones, pro_until_fpr=LIMIT)
    heavier = ones.copy()
    heavier[0] = 3.0  # image 0 has a defect: every pixel metric moves
    other = weighted_curve(samples, heavier, pro_until_fpr=LIMIT)
    for metric in (auroc, average_precision, f1_max, _pro_area):
        assert metric(other) != metric(base)
    no_defect = (~masks.reshape(maps.shape[0], -1).any(1)).astype(float)  # only the good images
    empty = weighted_curve(samples, no_defect)
    assert empty.n_pos == 0 and empty.pro is None
    assert all(np.isnan(m(empty)) for m in (auroc, average_precision, f1_max))
    with pytest.raises(ValueError):
        weighted_curve(samples, -ones)
    with pytest.raises(ValueError):
        weighted_curve(samples, ones[:-1])
