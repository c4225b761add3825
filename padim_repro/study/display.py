"""How every table of the book is shown: the same conventions on every page.

* metrics in **%** with a fixed number of decimals: 1, as published, in every comparison, and 2 on a run's own page
  (never a fraction on one page and a percent on another, never scientific notation);
* deltas as **signed points** with 1 decimal (``+0.3``, ``−1.2``), the precision of the published values;
* a missing or undefined value is **"—"**, explained by a footnote under the table (never NaN);
* no index column: the columns that identify a row come first.

:func:`table` returns a pandas ``Styler`` (rendered as HTML by the notebooks and the book) and
:func:`markdown_table` the same as Markdown for the pages the book generates. :class:`Table` is a Styler with the
notes that go under it (what "—" or a source mark means there, :func:`dash_note`), so that a notebook cell shows
both with one expression; :class:`Tables` shows several, one under the other (e.g. one table per metric, where a
single one would be too wide to read).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from numbers import Integral
from typing import Any

import pandas as pd

DASH = "—"
MINUS = "−"  # U+2212: a minus sign that does not break from its number
NBSP = "\u00a0"  # a space where a line must not break
#: CSS of every table: text left-aligned and wrapped where the page is too narrow, the caption above the table, as a
#: title (numeric columns are right-aligned and never wrapped by :func:`table`, so that their decimals line up).
TABLE_STYLES = [
    {"selector": "td, th.col_heading", "props": "text-align: left; padding: 0.2em 0.45em"},
    {"selector": "th.col_heading[colspan]", "props": "text-align: center"},  # a group of columns (MultiIndex)
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; padding: 0.4em 0"},
]
#: A cell that reads as a number: a value, a signed delta, an interval, "4 of 15" (or "—").
_NUMERIC = re.compile(rf"^([+{MINUS}±\[]?\d.*|{DASH})$")
#: A value followed by its interval (:func:`signed_with_interval`).
_WITH_INTERVAL = re.compile(r"\S \[")


def is_missing(value: Any) -> bool:
    """None, NaN (of any float type), pandas' NA, or an empty string."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a container: not one missing value
        return False


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


def signed_interval(low: Any, high: Any, decimals: int = 1) -> str:
    """A 95 % interval of a delta in points as ``[+0.4, +2.0]``, a no-break space after the comma so that it never
    breaks across lines; "" if either end is missing."""
    if is_missing(low) or is_missing(high):
        return ""
    return f"[{signed(low, decimals)},{NBSP}{signed(high, decimals)}]"


def signed_with_interval(value: Any, low: Any = None, high: Any = None, decimals: int = 1) -> str:
    """A delta in points with its 95 % interval, ``+1.2 [+0.4, +2.0]`` (the delta alone without one; "—" if
    missing); a narrow table column may put the interval under the delta (:func:`table`)."""
    span = signed_interval(low, high, decimals)
    return f"{signed(value, decimals)} {span}" if span and not is_missing(value) else signed(value, decimals)


def interval(low: Any, high: Any, decimals: int = 1) -> str:
    """A 95 % interval of fractions as ``[98.9, 99.9]`` in %; "—" if missing."""
    if is_missing(low) or is_missing(high):
        return DASH
    return f"[{100 * float(low):.{decimals}f}, {100 * float(high):.{decimals}f}]"


def _default(value: Any, decimals: int) -> str:
    """A cell without a format of its own: text as it is, a boolean as yes / no, an integer without decimals (a
    count is never "12.0"), another number with ``decimals``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return number(value, 0 if isinstance(value, Integral) else decimals)


def _formatted(df: pd.DataFrame, formats: Mapping[str, Any] | None, default_decimals: int) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        fmt = (formats or {}).get(col)
        if fmt is None:
            out[col] = [_default(v, default_decimals) for v in out[col]]
        elif callable(fmt):
            out[col] = [fmt(v) for v in out[col]]
        else:
            out[col] = [number(v, int(fmt)) for v in out[col]]
    return out.astype(str).replace({"nan": DASH, "None": DASH, "": DASH})


def table(df: pd.DataFrame, formats: Mapping[str, Any] | None = None, default_decimals: int = 1,
          caption: str | None = None) -> Any:  # fmt: skip
    """``df`` with every cell formatted (``formats``: column -> decimals or a function of the value), no index,
    missing values as "—"; a pandas Styler."""
    text = _formatted(df.reset_index(drop=True), formats, default_decimals)
    numeric = [c for i, c in enumerate(text.columns) if i > 0 and text[c].str.match(_NUMERIC).all()]
    styler = text.style.hide(axis="index").set_table_styles(TABLE_STYLES)
    styler = styler.set_table_attributes('style="font-size: 0.9em"')  # a little smaller than prose: wide tables fit
    # A delta with its interval may wrap between the two (the interval itself never breaks): a table of them fits.
    wrap = {c: "normal" if text[c].str.contains(_WITH_INTERVAL).any() else "nowrap" for c in numeric}
    styler = styler.set_table_styles({c: [{"selector": "td", "props": f"text-align: right; white-space: {wrap[c]}"},
                                          {"selector": "th", "props": "text-align: right"}]
                                      for c in numeric}, overwrite=False)  # fmt: skip
    return styler.set_caption(caption) if caption else styler


def sourced(value: Any, source: Any, decimals: int = 1) -> str:
    """A published value in % with its source mark (``98.3 (S2)``); "—" if missing."""
    if is_missing(value):
        return DASH
    return number(value, decimals) + ("" if is_missing(source) else f" ({source})")


def mean_std(mean: Any, std: Any = None, decimals: int = 1) -> str:
    """A mean and its standard deviation, both already in the unit shown (``96.8 ± 0.1``); the mean alone when the
    std is missing (a single seed), "—" when the mean is."""
    if is_missing(mean):
        return DASH
    return number(mean, decimals) + ("" if is_missing(std) else f" ± {number(std, decimals)}")


def _matches(key: Any, column: Any) -> bool:
    return key == column or (isinstance(column, tuple) and key in column)


def dash_note(styler: Any, reasons: Mapping[Any, str]) -> str | None:
    """The note saying what "—" means in this table: the reasons of the columns that show one (``reasons``: a column
    label, or one level of a column label, -> why its values can be missing), or None when no cell is "—".

    Why per column: "—" under "paper" (not published) does not mean what it means under an interval (not
    recorded), and the note must say which applies here.
    """
    data = styler.data
    shown = [col for col in data.columns if (data[col].astype(str) == DASH).any()]
    if not shown:
        return None
    texts = [text for key, text in reasons.items() if any(_matches(key, col) for col in shown)]
    return f"{DASH} : " + ("; ".join(dict.fromkeys(texts)) if texts else "no value")


@dataclass(frozen=True)
class Table:
    """A formatted table (:func:`table`'s Styler) and the notes shown under it: the display of every table of the
    book's notebooks (a notebook cell ending with one shows both)."""

    styler: Any
    notes: tuple[str, ...] = ()

    @property
    def data(self) -> pd.DataFrame:
        """The cells as shown (strings)."""
        return self.styler.data

    def _repr_html_(self) -> str:
        if not self.notes:
            return self.styler.to_html()
        lines = "<br>".join(escape(n) for n in self.notes)
        return self.styler.to_html() + f'<p style="font-size: 85%; margin-top: 0.3em">{lines}</p>'

    def __repr__(self) -> str:
        caption = [self.styler.caption] if self.styler.caption else []
        return "\n".join([*caption, self.data.to_string(index=False), *self.notes])


def noted(styler: Any, *notes: str | None) -> Table:
    """``styler`` with the notes that are not None (e.g. :func:`dash_note`'s, None when no cell is "—")."""
    return Table(styler, tuple(n for n in notes if n))


class Tables:
    """Several :class:`Table` shown one under the other (e.g. one per metric, where a single one would be too wide
    to read without scrolling)."""

    def __init__(self, tables: Iterable[Table]):
        self.tables = tuple(tables)

    def _repr_html_(self) -> str:
        return "\n".join(t._repr_html_() for t in self.tables)

    def __repr__(self) -> str:
        return "\n\n".join(repr(t) for t in self.tables)


#: A formatted cell that reads as a number: a value, a signed delta, a value with a source mark, an interval, "—".
_NUMERIC_CELL = re.compile(r"[−+±]?[\d.,\u2009]+( \((R|S1|S2|T)\))?|\[[\d., −]+\]|—")


def markdown_table(df: pd.DataFrame, formats: Mapping[str, Any] | None = None, default_decimals: int = 1,
                   align: Sequence[str] | None = None) -> str:  # fmt: skip
    """The same as :func:`table`, as a Markdown (MyST) table; ``align``: one of "l", "r" per column (default:
    right for the columns whose every cell reads as a number, left for the others)."""
    text = _formatted(df.reset_index(drop=True), formats, default_decimals)
    align = list(align or ["r" if all(_NUMERIC_CELL.fullmatch(str(v)) for v in text[c]) else "l" for c in text.columns])
    rule = ["---" if a == "l" else "--:" for a in align]
    rows = [list(map(str, text.columns)), rule, *text.values.tolist()]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows) + "\n"
