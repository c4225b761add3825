"""How every table of the book is shown: the same conventions on every page.

* metrics in **%** with a fixed number of decimals (never a fraction on one page and a percent on another, never
  scientific notation);
* deltas as **signed points** (``+0.3``, ``−1.2``) with one decimal less than the values they compare;
* a missing or undefined value is **"—"**, explained by a footnote under the table (never NaN);
* no index column: the columns that identify a row come first.

:func:`table` returns a pandas ``Styler`` (rendered as HTML by the notebooks and the book) and
:func:`markdown_table` the same as Markdown for the pages the book generates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

DASH = "—"
MINUS = "−"  # U+2212: a minus sign that does not break from its number


def is_missing(value: Any) -> bool:
    """None, NaN, or an empty string."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def percent(value: Any, decimals: int = 1) -> str:
    """A fraction as a percent with ``decimals`` decimals (``0.9968`` -> ``99.7``); "—" if missing."""
    return DASH if is_missing(value) else f"{100 * float(value):.{decimals}f}"


def number(value: Any, decimals: int = 1) -> str:
    """A number with ``decimals`` decimals; "—" if missing; text is kept as it is."""
    if is_missing(value):
        return DASH
    if isinstance(value, str):
        return value
    return f"{float(value):,.{decimals}f}".replace(",", "\u2009")  # thin space between thousands


def signed(value: Any, decimals: int = 1) -> str:
    """A signed delta in points (``+0.3``, ``−1.2``, ``±0.0``); "—" if missing."""
    if is_missing(value):
        return DASH
    text = f"{abs(float(value)):.{decimals}f}"
    if float(text) == 0:
        return f"±{text}"
    return ("+" if value > 0 else MINUS) + text


def interval(low: Any, high: Any, decimals: int = 1) -> str:
    """A 95 % interval of fractions as ``[98.9, 99.9]`` in %; "—" if missing."""
    if is_missing(low) or is_missing(high):
        return DASH
    return f"[{100 * float(low):.{decimals}f}, {100 * float(high):.{decimals}f}]"


def _formatted(df: pd.DataFrame, formats: Mapping[str, Any] | None, default_decimals: int) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        fmt = (formats or {}).get(col)
        if fmt is None:
            out[col] = [number(v, default_decimals) if not isinstance(v, str) else v for v in out[col]]
        elif callable(fmt):
            out[col] = [fmt(v) for v in out[col]]
        else:
            out[col] = [number(v, int(fmt)) for v in out[col]]
    return out.astype(str).replace({"nan": DASH, "None": DASH, "": DASH})


def table(df: pd.DataFrame, formats: Mapping[str, Any] | None = None, default_decimals: int = 1,
          caption: str | None = None) -> Any:  # fmt: skip
    """``df`` with every cell formatted (``formats``: column -> decimals or a function of the value), no index,
    missing values as "—"; a pandas Styler."""
    styler = _formatted(df.reset_index(drop=True), formats, default_decimals).style.hide(axis="index")
    return styler.set_caption(caption) if caption else styler


def markdown_table(df: pd.DataFrame, formats: Mapping[str, Any] | None = None, default_decimals: int = 1,
                   align: Sequence[str] | None = None) -> str:  # fmt: skip
    """The same as :func:`table`, as a Markdown (MyST) table; ``align``: one of "l", "r" per column (default: the
    first column left, the others right)."""
    text = _formatted(df.reset_index(drop=True), formats, default_decimals)
    align = list(align or ["l"] + ["r"] * (len(text.columns) - 1))
    rule = ["---" if a == "l" else "--:" for a in align]
    rows = [list(map(str, text.columns)), rule, *text.values.tolist()]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows) + "\n"
