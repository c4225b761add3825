"""padim_repro.study.uncertainty: the stratified image bootstrap, checked against evaluate on materialised resamples."""

from __future__ import annotations

import numpy as np
import pytest

from padim_repro.metrics import evaluate
from padim_repro.study.uncertainty import (
    METRICS,
    bootstrap_intervals,
    bootstrap_values,
    intervals_from_values,
    mean_interval,
    stratified_weights,
)


def _run(seed: int = 0, n_good: int = 4, n_defective: int = 6, size: int = 12, signal: float = 1.2):  # noqa: ANN202
    """A small synthetic run: rounded maps (ties), rectangles and single-pixel defects, max-of-map image scores."""
    rng = np.random.default_rng(seed)
    n = n_good + n_defective
    labels = np.r_[np.zeros(n_good, int), np.ones(n_defective, int)]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n_good, n):
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, size - 3, 2)
            masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
    maps = np.round(rng.normal(size=masks.shape) + signal * masks, 1).astype(np.float32)
    scores = maps.reshape(n, -1).max(1) + 0.5 * labels * rng.random(n)
    return maps, masks, scores, labels


def _types(labels: np.ndarray) -> list[str]:
    return ["good" if v == 0 else "defect" for v in labels]


def test_estimate_equals_evaluate() -> None:
    maps, masks, scores, labels = _run(1)
    ref = evaluate(maps, masks, scores, labels, _types(labels))
    out = bootstrap_intervals(maps, masks, scores, labels, n_resamples=20, seed=0)
    assert set(out) == set(METRICS)
    for m in METRICS:
        assert out[m]["estimate"] == pytest.approx(ref[m], abs=1e-12)
        assert out[m]["n_resamples"] + out[m]["n_skipped"] == 20


@pytest.mark.parametrize("seed", [0, 7])
def test_resamples_equal_evaluate_on_the_materialised_resamples(seed: int) -> None:
    maps, masks, scores, labels = _run(2)
    _, values = bootstrap_values(maps, masks, scores, labels, n_resamples=5, seed=seed)
    rng = np.random.default_rng(seed)  # the documented draws, reproduced here
    good, defective = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    for b in range(5):
        idx = np.concatenate([good[rng.integers(0, good.size, good.size)],
                              defective[rng.integers(0, defective.size, defective.size)]])  # fmt: skip
        ref = evaluate(np.take(maps, idx, 0), np.take(masks, idx, 0), np.take(scores, idx), np.take(labels, idx),
                       _types(np.take(labels, idx)))  # fmt: skip
        for m in METRICS:
            assert values[m][b] == pytest.approx(ref[m], abs=1e-9), (b, m)


def test_stratification_keeps_the_counts_per_label() -> None:
    labels = np.r_[np.zeros(5, bool), np.ones(9, bool)]
    rng = np.random.default_rng(3)
    draws = np.stack([stratified_weights(rng, labels) for _ in range(200)])
    assert np.all(draws[:, ~labels].sum(1) == 5) and np.all(draws[:, labels].sum(1) == 9)
    assert np.all(draws == np.round(draws)) and np.all(draws >= 0)
    assert draws.std(0).min() > 0  # every image is sometimes drawn more, sometimes less often
    assert np.unique(draws, axis=0).shape[0] > 150  # resamples differ


def test_seeded_and_sane() -> None:
    maps, masks, scores, labels = _run(4, n_good=6, n_defective=8, signal=1.5)
    a = bootstrap_intervals(maps, masks, scores, labels, n_resamples=300, seed=11)
    assert a == bootstrap_intervals(maps, masks, scores, labels, n_resamples=300, seed=11)
    b = bootstrap_intervals(maps, masks, scores, labels, n_resamples=300, seed=12)
    assert any(a[m]["low"] != b[m]["low"] or a[m]["high"] != b[m]["high"] for m in METRICS)
    for m in METRICS:
        r = a[m]
        assert r["n_resamples"] == 300 and r["n_skipped"] == 0
        assert 0.0 <= r["low"] <= r["high"] <= 1.0
        assert r["low"] - 0.02 <= r["estimate"] <= r["high"] + 0.02, m
    for m in ("pixel_auroc", "pro"):
        assert a[m]["low"] < a[m]["estimate"] < a[m]["high"]
    narrow = bootstrap_intervals(maps, masks, scores, labels, n_resamples=300, seed=11, level=0.5)
    assert all(a[m]["low"] <= narrow[m]["low"] <= narrow[m]["high"] <= a[m]["high"] for m in METRICS)


def test_a_resample_without_defect_pixels_is_skipped_and_counted() -> None:
    maps, masks, scores, labels = _run(5, n_good=3, n_defective=3)
    masks[4:] = False  # defective images 4 and 5 have empty masks: only image 3 holds defect pixels
    out = bootstrap_intervals(maps, masks, scores, labels, n_resamples=40, seed=2)
    rng = np.random.default_rng(2)
    missed = sum(stratified_weights(rng, labels.astype(bool))[3] == 0 for _ in range(40))
    assert 0 < missed < 40
    for m in ("pixel_auroc", "pro", "pixel_f1_max"):
        assert (out[m]["n_skipped"], out[m]["n_resamples"]) == (missed, 40 - missed)
    for m in ("image_auroc", "image_f1_max", "image_ap"):
        assert out[m]["n_skipped"] == 0


def test_metrics_undefined_on_the_test_set_have_no_interval() -> None:
    maps, masks, scores, labels = _run(6, n_good=0, n_defective=5)
    out = bootstrap_intervals(maps, masks, scores, labels, n_resamples=10, seed=0)
    ref = evaluate(maps, masks, scores, labels, _types(labels))
    assert ref["image_auroc"] is None
    assert out["image_auroc"] == {"estimate": None, "low": None, "high": None, "n_resamples": 0, "n_skipped": 10}
    assert out["image_ap"]["estimate"] == pytest.approx(ref["image_ap"], abs=1e-12)  # always 1: all defective
    assert out["pro"]["n_resamples"] == 10
    with pytest.raises(ValueError):
        bootstrap_intervals(maps, masks, scores, labels, n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_intervals(maps, masks, scores, labels, level=1.0)


def test_mean_interval_reduces_to_the_category_interval_and_shifts_with_a_constant() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.9, 0.02, 500)
    one = mean_interval([0.9], a[None, :], seed=5)
    assert one == intervals_from_values({"m": 0.9}, {"m": a})["m"]  # permuting one category changes no quantile
    # Averaged with a category whose resamples never move, the interval is the first one's, halved, shifted.
    two = mean_interval([0.9, 0.5], np.stack([a, np.full(500, 0.5)]), seed=5)
    assert two["estimate"] == pytest.approx(0.7)
    assert two["low"] == pytest.approx((one["low"] + 0.5) / 2) and two["high"] == pytest.approx((one["high"] + 0.5) / 2)


def test_mean_interval_narrows_with_independent_categories_and_skips_undefined() -> None:
    rng = np.random.default_rng(4)
    vals = rng.normal(0.8, 0.05, (4, 2000))
    single = intervals_from_values({"m": 0.8}, {"m": vals[0]})["m"]
    mean = mean_interval(np.full(4, 0.8), vals, seed=0)
    # Independent noise: the mean's spread is about 1 / sqrt(4) of one category's.
    ratio = (mean["high"] - mean["low"]) / (single["high"] - single["low"])
    assert 0.4 < ratio < 0.6
    vals[1, :10] = np.nan
    assert mean_interval(np.full(4, 0.8), vals, seed=0)["n_skipped"] == 10
    with pytest.raises(ValueError, match="values must be"):
        mean_interval([0.8, 0.8], vals)


def test_thresholds_in_chunks_give_the_same_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pixel curves streamed over chunks of corners (each chunk's trapezoids, its PRO cut at the FPR limit,
    carried from the last point of the chunk before) equal the curves over all corners at once."""
    from padim_repro.study import uncertainty as U

    maps, masks, scores, labels = _run(3, n_good=6, n_defective=10, size=16)
    _, whole = bootstrap_values(maps, masks, scores, labels, n_resamples=8, seed=1)
    pixels = U.sort_samples(maps, masks, np.repeat(np.arange(16), 256).reshape(maps.shape), *U.label_regions(masks))
    assert U._corners(pixels).size > 3  # budget 1: one corner per chunk
    monkeypatch.setitem(U._BUDGET, "cpu", 1)
    _, chunked = bootstrap_values(maps, masks, scores, labels, n_resamples=8, seed=1)
    for m in ("pixel_auroc", "pixel_f1_max", "pro"):
        np.testing.assert_allclose(chunked[m], whole[m], rtol=0, atol=1e-12, err_msg=m)


def test_resamples_in_one_block_give_the_same_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resamples split between the cores (CPU) or in one block (GPU) give the same curves."""
    from padim_repro.study import uncertainty as U

    maps, masks, scores, labels = _run(3, n_good=6, n_defective=10, size=16)
    monkeypatch.setattr(U.os, "cpu_count", lambda: 4)
    _, split = bootstrap_values(maps, masks, scores, labels, n_resamples=9, seed=1)
    monkeypatch.setattr(U.os, "cpu_count", lambda: 1)
    _, one = bootstrap_values(maps, masks, scores, labels, n_resamples=9, seed=1)
    for m in ("pixel_auroc", "pixel_f1_max", "pro"):
        np.testing.assert_allclose(split[m], one[m], rtol=0, atol=1e-12, err_msg=m)


def test_difference_interval_pairs_the_resamples_and_adds_the_seed_spread() -> None:
    """A paired difference is as precise as the difference's own resampling: two variants that move together on
    every resample (shared test-set noise of sd 2) differ by exactly 1, so the paired interval is that point; the
    seed spread then widens it by z * sd on each side."""
    from padim_repro.study.uncertainty import difference_interval, difference_values

    rng = np.random.default_rng(0)
    shared = rng.normal(0, 2.0, (3, 1000))
    a, b = 90 + shared + 1.0, 90 + shared
    values = difference_values(a, b)
    assert np.allclose(values, 1.0)
    assert difference_interval(1.0, values) == pytest.approx((1.0, 1.0))
    low, high = difference_interval(1.0, values, seed_sd=0.5)
    assert (low, high) == pytest.approx((1.0 - 1.96 * 0.5, 1.0 + 1.96 * 0.5), abs=1e-3)
    # Unpaired (the resamples of b shuffled), the same data give a much wider interval: the pairing matters.
    unpaired = difference_values(a, b[:, rng.permutation(1000)])
    lo_u, hi_u = difference_interval(1.0, unpaired)
    assert hi_u - lo_u > 4.0
    assert all(np.isnan(difference_interval(1.0)))  # neither source: no interval
