"""One sort, every curve: the counts behind ROC, precision-recall and PRO at every distinct threshold.

Every metric of this package is a function of the same ordering of the samples (images, or pixels of the whole test
set) by descending score. :func:`binary_curve` sorts once and returns, for each distinct score taken as threshold
(a sample is *positive* when ``score >= t``, so tied samples always enter together), the number of negative and
positive samples at or above it, and, given ground-truth regions, the PRO value there (Bergmann et al.; see
:mod:`padim_repro.metrics.pro`). From those counts:

* ROC: FPR = fp / n_neg, TPR = tp / n_pos; AUROC is the trapezoid area from (0, 0) to (1, 1), which is what
  scikit-learn's ``roc_auc_score`` computes (:func:`auroc`);
* precision-recall: precision = tp / (tp + fp), recall = tp / n_pos; average precision is
  sum_k (recall_k - recall_{k-1}) precision_k (scikit-learn's ``average_precision_score``, :func:`average_precision`)
  and F1-max the largest 2 P R / (P + R) over thresholds (anomalib's ``F1Max``, :func:`f1_max`).

Sharing the sort is what makes a full evaluation (pixel AUROC, PRO, pixel AP and F1) cost one sort of the test set's
pixels instead of four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """Counts at every distinct threshold, from the highest score down (the last point holds every sample).

    ``fp`` / ``tp``: negatives / positives scoring at or above each threshold (int64, non-decreasing);
    ``n_neg`` / ``n_pos``: their totals; ``pro``: the PRO value at each threshold when regions were given, else None.
    """

    fp: np.ndarray
    tp: np.ndarray
    n_neg: int
    n_pos: int
    pro: np.ndarray | None = None


def _sort_descending(scores: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort samples by descending score; return ``(sorted_keys, sorted_codes)``.

    ``sorted_keys`` is any array whose equal entries are exactly the samples with equal scores (only group
    boundaries are used); ``sorted_codes`` are the codes (label or region number) in the same order. The order among
    tied samples is arbitrary, which is fine because ties are collapsed afterwards.

    Fast path (scores exactly representable as float32, the usual case for PaDiM maps): each score is mapped to a
    32-bit unsigned key whose integer order is the descending float order, the code is packed in the low 32 bits of a
    uint64, and a single in-place ``np.sort`` of those integers (SIMD-accelerated in numpy) replaces ``argsort`` plus
    two gathers -- about 5x faster for 5 million pixels. Other dtypes use ``np.argsort``.
    """
    fast = scores.dtype in (np.float16, np.float32) or (scores.dtype.kind in "iu" and scores.dtype.itemsize <= 2)
    if scores.dtype == np.float64:
        with np.errstate(over="ignore"):  # huge values become inf and fail the check
            as32 = scores.astype(np.float32)
        fast = bool(np.array_equal(as32, scores))  # exact, so order and ties are kept
        scores = as32 if fast else scores
    if fast:
        # "+ 0" turns -0.0 into +0.0 so the two zeros (equal as floats) share a key.
        bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
        # IEEE-754 bits -> key with key order == descending float order:
        # negative floats keep their bits, non-negative ones flip all but the sign.
        sign_is_clear = (bits >> np.uint32(31)) - np.uint32(1)  # 0xFFFFFFFF where score >= 0
        bits ^= sign_is_clear & np.uint32(0x7FFFFFFF)
        packed = bits.astype(np.uint64)
        del bits, sign_is_clear
        packed <<= np.uint64(32)
        packed |= codes.astype(np.uint64)
        packed.sort()
        sorted_codes = (packed & np.uint64(0xFFFFFFFF)).astype(np.intp)
        packed >>= np.uint64(32)
        return packed, sorted_codes
    order = np.argsort(scores, kind="stable")[::-1]
    return scores[order], codes[order].astype(np.intp)


def binary_curve(scores: np.ndarray, positive: np.ndarray, regions: np.ndarray | None = None,
                 n_regions: int = 0) -> Curve:  # fmt: skip
    """The :class:`Curve` of finite ``scores`` against boolean ``positive`` (same shape, any dimensions).

    With ``regions`` (an int array labelling each positive sample's region 1..``n_regions``, 0 for negatives),
    every positive sample also adds ``1 / (region_size * n_regions)`` to PRO, its share of the mean per-region
    overlap, so ``pro`` is the PRO curve at the same thresholds. Callers check inputs first (:mod:`~padim_repro.metrics.inputs`).
    """
    codes = positive.ravel().astype(np.intp) if regions is None else regions.ravel()
    keys, sorted_codes = _sort_descending(scores.ravel(), codes)
    last = np.append(np.flatnonzero(keys[1:] != keys[:-1]), keys.size - 1)  # last index of each tie group
    del keys
    is_neg = sorted_codes == 0
    fp = np.cumsum(is_neg, dtype=np.int64)[last]
    tp = last.astype(np.int64) + 1 - fp
    n_neg, n_pos = int(fp[-1]), int(tp[-1])
    pro = None
    if regions is not None and n_regions and n_pos:
        sizes = np.bincount(codes, minlength=n_regions + 1)
        weight = 1.0 / (sizes.astype(np.float64) * n_regions)
        cum = np.concatenate(([0.0], np.cumsum(weight[sorted_codes[~is_neg]])))
        pro = np.clip(cum[tp], 0.0, 1.0)
        pro[-1] = 1.0  # every pixel positive: every region fully covered (removes cumulative-sum drift)
    return Curve(fp, tp, n_neg, n_pos, pro)


def roc_points(curve: Curve, thin: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from (0, 0) to (1, 1), one point per distinct threshold (float64).

    ``thin``: drop the points that lie on the segment joining their neighbours (equal steps in both counts, as
    scikit-learn's ``drop_intermediate`` does), for plotting millions of pixels; the curve drawn is the same.
    """
    fp, tp = np.concatenate(([0], curve.fp)), np.concatenate(([0], curve.tp))
    if thin and fp.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0), True]
        fp, tp = fp[keep], tp[keep]
    return fp / curve.n_neg, tp / curve.n_pos


def auroc(curve: Curve) -> float:
    """Area under the ROC curve by the trapezoid rule (scikit-learn's ``roc_auc_score`` for binary labels)."""
    fpr, tpr = roc_points(curve)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def average_precision(curve: Curve) -> float:
    """sum_k (recall_k - recall_{k-1}) precision_k over the thresholds (scikit-learn's ``average_precision_score``)."""
    precision = curve.tp / (curve.tp + curve.fp)
    recall = np.concatenate(([0.0], curve.tp / curve.n_pos))
    return float(np.sum(np.diff(recall) * precision))


def f1_max(curve: Curve) -> float:
    """The largest F1 = 2 P R / (P + R) = 2 tp / (tp + fp + n_pos) over the thresholds (anomalib's ``F1Max``)."""
    return float(np.max(2.0 * curve.tp / (curve.tp + curve.fp + curve.n_pos)))
