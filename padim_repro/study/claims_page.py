"""The Claims page's generated fragments and the introduction's: the verdict summary (each verdict with its scope),
the rules, one section per claim (:mod:`~padim_repro.study.claims`), the compute per step; the scope and the
same-scope headline (:mod:`~padim_repro.study.evidence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..storage import write_text
from .claim import Claim
from .claims import claims
from .conclusions import upsampling_markdown
from .display import markdown_table
from .evidence import headline_markdown, scope_markdown
from .verdicts import FLOOR, RATIO_FACTOR

SCOPE_FILE = Path("_generated") / "scope.md"
HEADLINE_FILE = Path("_generated") / "headline.md"
VERDICTS_FILE = Path("_generated") / "verdicts.md"
CLAIMS_FILE = Path("_generated") / "claims.md"
UPSAMPLING_FILE = Path("_generated") / "upsampling.md"
def verdict_table(items: Sequence[Claim]) -> str:
    """The summary table at the top of the Claims page: claim, verdict, why."""
    return markdown_table(pd.DataFrame([{"claim": c.title, "verdict": c.verdict, "why": c.reason} for c in items]))


def times_markdown(results: str | Path) -> str:
    """The wall time of each step of the last ``make reproduce`` (``RESULTS/reproduce_times.tsv``)."""
    path = Path(results) / "reproduce_times.tsv"
    if not path.is_file():
        return "_No `make reproduce` timing recorded yet._\n"
    t = pd.read_csv(path, sep="\t")
    t = pd.concat([t, pd.DataFrame([{"step": "total (before the book)", "seconds": t.seconds.sum(), "status": ""}])])
    t["minutes"] = t.seconds / 60
    return markdown_table(t[["step", "seconds", "minutes", "status"]], {"seconds": 0, "minutes": 1},
                          align=["l", "r", "r", "l"])


def claims_markdown(results: str | Path, book_dir: str | Path, items: Sequence[Claim] | None = None) -> str:
    """The generated part of the Claims page: the verdict summary, then one section per claim (``items``: the
    claims already judged, else judged here)."""
    items = claims(results, book_dir) if items is None else items
    rules = (f"Verdict rules (coded in `padim_repro.study.verdicts`): a published **value** is reproduced when it "
             f"lies within our 95 % interval, ± {FLOOR} pt. A claimed **difference** between two variants is judged "
             "by our difference's 95 % interval (the paired bootstrap over the test images combined with the spread "
             "over channel seeds, {ref}`difference-intervals`): reproduced when the interval excludes 0 on the "
             "paper's side and holds the paper's difference or at least half of it (or when neither shows a "
             f"difference: the interval holds 0 and the paper's is under {FLOOR} pt); partly reproduced when it is "
             "smaller, when the interval holds both 0 and the paper's difference (inconclusive), or when ours shows "
             "a difference the paper does not; not reproduced when the interval holds 0 but not the paper's "
             "difference, or lies on the other side. A claimed **cost ratio** is reproduced when ours, measured on "
             f"one machine, is within a factor {RATIO_FACTOR:g} of the paper's. A verdict judged on fewer "
             "categories than the paper's 15, or on some of its cells, says so, whether positive or negative. A "
             "question of this book that the paper does not claim gets a finding, no verdict.")
    return "\n".join([verdict_table(items), rules, "", *[c.markdown() for c in items],
                      "## Compute per step", "", "Wall time of each step of the last `make reproduce` on this "
                      "machine:", "", times_markdown(results)])  # fmt: skip


def verdicts_markdown(items: Sequence[Claim]) -> str:
    """The introduction's verdict summary: each claim and its verdict, with the scope it was judged on (the reasons
    are on the Claims page)."""
    table = pd.DataFrame([{"claim": c.title, "verdict": c.verdict} for c in items])
    return markdown_table(table) + "\nEach verdict's evidence, reason and rule: {doc}`claims`.\n"


def write_claims(results: str | Path, book_dir: str | Path) -> None:
    """Write the scope, headline, verdict summary, claims and map-upsampling fragments into ``book_dir/_generated/``."""
    book_dir = Path(book_dir)
    write_text(book_dir / SCOPE_FILE, scope_markdown(results))
    write_text(book_dir / HEADLINE_FILE, headline_markdown(results))
    write_text(book_dir / UPSAMPLING_FILE, upsampling_markdown(results))
    items = claims(results, book_dir)
    write_text(book_dir / VERDICTS_FILE, verdicts_markdown(items))
    write_text(book_dir / CLAIMS_FILE, claims_markdown(results, book_dir, items))
