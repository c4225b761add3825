"""One claim of the paper as the Claims page shows it (:class:`Claim`), and the published values its prose quotes.

Every published number in a claim's text is read from the reference table (:mod:`~padim_repro.study.reference`)
with its source mark, never typed in: :func:`pub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import MVTEC_CATEGORIES
from . import reference
from .display import DASH, signed

PENDING = "_Pending: {what} has not been computed yet (`{command}`)._"


@dataclass
class Claim:
    """One claim of the paper: what it says, our evidence (Markdown), the verdict and why, and a discussion."""

    title: str
    paper: str
    evidence: str
    verdict: str
    reason: str
    discussion: str = ""

    def markdown(self) -> str:
        """The claim's section of the Claims page."""
        return "\n".join([f"## {self.title}", "", f"**The paper.** {self.paper}", "", f"**Verdict: {self.verdict}.** "
                          f"{self.reason}", "", "**Evidence.**", "", self.evidence, "",
                          *([f"**Discussion.** {self.discussion}", ""] if self.discussion else [])])  # fmt: skip


def paper_cell(model: str, metric: str, category: str = "all") -> tuple[float, str] | None:
    """(value in %, source mark) of one cell of the paper, or None when it is not available offline."""
    return reference.paper_value(reference.paper(), model, category, metric)


def pub(model: str, metric: str, category: str = "all") -> str:
    """A published value as prose, from the reference table: ``"96.7 (S2)"``, or "(not available offline)"."""
    cell = paper_cell(model, metric, category)
    return f"{cell[0]:.1f} ({cell[1]})" if cell else "(not available offline)"


def n_total() -> int:
    """The categories of MVTec AD: the scope of the paper's means."""
    return len(MVTEC_CATEGORIES)


def span(d: Any) -> str:
    """A difference's 95 % interval as ``[−0.3, +0.7]``; "—" when it was not computed."""
    ok = d is not None and np.isfinite(d.low) and np.isfinite(d.high)
    return f"[{signed(d.low)}, {signed(d.high)}]" if ok else DASH
