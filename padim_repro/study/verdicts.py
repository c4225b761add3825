"""The verdict rules of the Claims page (:mod:`~padim_repro.study.claims`): when a published value or a claimed
difference counts as reproduced.

Why rules, coded: a delta of a few tenths of a point on test sets of ~100 images may be noise, so a verdict must
weigh a difference against the noise the run itself measured (bootstrap intervals, the spread over random channel
subsets), the same way for every claim; these functions are that rule, unit-tested on synthetic numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .display import signed

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE = ("reproduced", "partly reproduced", "not reproduced",
                                                    "not testable here")  # fmt: skip
#: Smallest difference, in points, called a difference: below it, test-set noise dominates whatever the seeds say.
FLOOR = 0.5
#: The noise of a difference between variants: this many standard deviations over random-subset seeds.
NOISE_SDS = 2.0


def noise_level(seed_sd: float | None) -> float:
    """The noise a difference must exceed, in points: ``NOISE_SDS`` seed standard deviations, at least ``FLOOR``."""
    return max(FLOOR, NOISE_SDS * seed_sd) if seed_sd is not None and np.isfinite(seed_sd) else FLOOR


def difference_verdict(ours: float, paper: float, noise: float) -> tuple[str, str]:
    """Verdict on a claimed difference between two variants (``paper`` = its value in points, ours alike).

    * both within ``noise`` of zero: reproduced (neither finds a difference);
    * ours within noise, the paper's beyond it: not reproduced (no difference found);
    * opposite signs, ours beyond noise: not reproduced (reversed);
    * same sign, ours beyond noise: reproduced if ours is at least half the paper's, else partly (smaller effect);
    * either not a number: not testable.
    """
    if not (np.isfinite(ours) and np.isfinite(paper)):
        return NOT_TESTABLE, "not computed"
    if abs(ours) < noise:
        if abs(paper) < noise:
            return REPRODUCED, f"no difference in either (|Δ| < {noise:.1f} pt)"
        return NOT_REPRODUCED, f"no difference found (|Δ| < {noise:.1f} pt; the paper's is {signed(paper)} pt)"
    if np.sign(ours) != np.sign(paper) and abs(paper) >= noise:
        return NOT_REPRODUCED, f"reversed ({signed(ours)} pt against the paper's {signed(paper)} pt)"
    if abs(paper) < noise:
        return PARTLY, f"a difference the paper does not show ({signed(ours)} pt; the paper's {signed(paper)} pt)"
    if abs(ours) >= abs(paper) / 2:
        return REPRODUCED, f"same direction, comparable size ({signed(ours)} pt against {signed(paper)} pt)"
    return PARTLY, f"same direction, smaller ({signed(ours)} pt against {signed(paper)} pt)"


def value_verdict(ours: float, low: float, high: float, paper: float) -> tuple[str, str]:
    """Verdict on a published value (points): reproduced if it lies in our 95 % interval [low, high] widened by
    ``FLOOR`` (without an interval: within ``FLOOR`` of ours), else not reproduced (ours higher or lower)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        if abs(ours - paper) <= FLOOR:
            return REPRODUCED, f"the paper's {paper:.1f} is within {FLOOR} pt of our {ours:.1f} (no interval)"
        return NOT_REPRODUCED, f"ours {ours:.1f} against the paper's {paper:.1f} (no interval)"
    if low - FLOOR <= paper <= high + FLOOR:
        return REPRODUCED, f"the paper's {paper:.1f} lies within our interval [{low:.1f}, {high:.1f}] (± {FLOOR} pt)"
    side = "higher" if ours > paper else "lower"
    return NOT_REPRODUCED, f"ours is {side}: {ours:.1f} [{low:.1f}, {high:.1f}] against the paper's {paper:.1f}"


def combine(verdicts: Sequence[str], complete_scope: bool) -> str:
    """One verdict from several: all reproduced -> reproduced (partly when the scope is incomplete), none
    reproduced -> not reproduced, a mix -> partly; not testable when there is nothing to judge."""
    judged = [v for v in verdicts if v != NOT_TESTABLE]
    if not judged:
        return NOT_TESTABLE
    if all(v == REPRODUCED for v in judged):
        return REPRODUCED if complete_scope else PARTLY
    if all(v == NOT_REPRODUCED for v in judged):
        return NOT_REPRODUCED
    return PARTLY
