"""The verdict rules of the Claims page (:mod:`~padim_repro.study.claims`): when a published value or a claimed
difference counts as reproduced.

Why rules, coded: a delta of a few tenths of a point on test sets of ~100 images may be noise, so a verdict must
weigh a difference against the noise the run itself measured (its 95 % interval: the bootstrap over the test images
combined with the spread over random channel subsets), the same way for every claim; and a verdict judged on part
of the paper's scope says so (:func:`scoped`), whether positive or negative. These functions are that rule,
unit-tested on synthetic numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .display import signed

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE = ("reproduced", "partly reproduced", "not reproduced",
                                                    "not testable here")  # fmt: skip
#: Smallest difference, in points, that the paper's numbers (one decimal) state: below it a published difference is
#: read as "no difference", and a value within it of ours (or of our interval) agrees.
FLOOR = 0.5
#: Not a verdict: what a question of this book, not a claim of the paper, gets.
FINDING = "a finding, no verdict"
#: A cost ratio (one model's time or memory over another's, both measured on one machine) agrees with the paper's
#: when it is within this factor of it, either way: the paper's was measured on another CPU with other code.
RATIO_FACTOR = 2.0


def difference_verdict(ours: float, low: float, high: float, paper: float) -> tuple[str, str]:
    """Verdict on a claimed difference between two variants, from our difference ``ours`` and its 95 % interval
    [``low``, ``high``] (points; :func:`padim_repro.study.uncertainty.difference_interval`: the paired test-image
    bootstrap combined with the channel-seed spread) and the paper's difference ``paper`` (points).

    * our interval holds 0: reproduced if the paper shows no difference either (its Δ under ``FLOOR`` in size);
      partly (inconclusive) if it also holds the paper's Δ; not reproduced (no difference found) if the paper's Δ
      lies beyond it;
    * our interval excludes 0, on the side opposite to the paper's Δ: not reproduced (reversed);
    * our interval excludes 0 and holds the paper's Δ: reproduced;
    * our interval excludes 0 where the paper shows no difference: partly (a difference the paper does not show);
    * our interval excludes 0 on the paper's side: reproduced if ours is at least half the paper's Δ, else partly
      (same direction, smaller);
    * any number missing: not testable.
    """
    if not (np.isfinite(ours) and np.isfinite(paper)):
        return NOT_TESTABLE, "not computed"
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_TESTABLE, "no 95 % interval (the rows' bootstrap resamples were not kept: rerun make ablations)"
    span = f"{signed(ours)} pt [{signed(low)}, {signed(high)}]"
    if low <= 0 <= high:
        if abs(paper) < FLOOR:
            return REPRODUCED, f"no difference in either (ours {span}, the paper's {signed(paper)} pt)"
        if low <= paper <= high:
            return PARTLY, f"inconclusive: our interval {span} holds both 0 and the paper's {signed(paper)} pt"
        return NOT_REPRODUCED, f"no difference found (ours {span}; the paper's {signed(paper)} pt lies beyond it)"
    if low <= paper <= high:
        return REPRODUCED, f"the paper's {signed(paper)} pt lies within our interval (ours {span})"
    if abs(paper) < FLOOR:
        return PARTLY, f"a difference the paper does not show (ours {span}, the paper's {signed(paper)} pt)"
    if np.sign(ours) != np.sign(paper):
        return NOT_REPRODUCED, f"reversed (ours {span} against the paper's {signed(paper)} pt)"
    if abs(ours) >= abs(paper) / 2:
        return REPRODUCED, f"same direction, comparable size (ours {span} against {signed(paper)} pt)"
    return PARTLY, f"same direction, smaller (ours {span} against {signed(paper)} pt)"


def ratio_verdict(ours: float, paper: float) -> tuple[str, str]:
    """Verdict on a claimed cost ratio: reproduced when ours is within :data:`RATIO_FACTOR` of the paper's, either
    way (same order of magnitude on another machine), else not reproduced."""
    if not (np.isfinite(ours) and np.isfinite(paper)) or ours <= 0 or paper <= 0:
        return NOT_TESTABLE, "not measured"
    factor = max(ours / paper, paper / ours)
    if factor <= RATIO_FACTOR:
        return REPRODUCED, f"ours {ours:.1f} against the paper's {paper:.1f} (within × {RATIO_FACTOR:g})"
    return NOT_REPRODUCED, (f"ours {ours:.1f} against the paper's {paper:.1f}: {factor:.1f} times "
                            f"{'larger' if ours > paper else 'smaller'}")


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


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several: all reproduced -> reproduced, none reproduced -> not reproduced, a mix -> partly;
    not testable when there is nothing to judge. The scope is said by :func:`scoped`, whatever the verdict."""
    judged = [v for v in verdicts if v != NOT_TESTABLE]
    if not judged:
        return NOT_TESTABLE
    if all(v == REPRODUCED for v in judged):
        return REPRODUCED
    if all(v == NOT_REPRODUCED for v in judged):
        return NOT_REPRODUCED
    return PARTLY


def scoped(verdict: str, n: int, total: int, unit: str = "") -> str:
    """The verdict with the scope it was judged on when that is less than the paper's, positive or negative alike:
    ``"reproduced on 4 of 15"``, ``"not reproduced on 4 of 15 categories"``; unchanged when ``n >= total`` or when
    nothing was judged."""
    if verdict == NOT_TESTABLE or n >= total:
        return verdict
    return f"{verdict} on {n} of {total}" + (f" {unit}" if unit else "")


def verdict_kind(verdict: str) -> str:
    """The verdict without its scope (:func:`scoped`): one of the four verdicts, or :data:`FINDING`."""
    for kind in (NOT_REPRODUCED, PARTLY, NOT_TESTABLE, FINDING, REPRODUCED):  # "reproduced" begins none of the others
        if verdict.startswith(kind):
            return kind
    raise ValueError(f"not a verdict: {verdict!r}")
