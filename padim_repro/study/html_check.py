"""Find table cells of a built book that show a missing value or a number in scientific notation.

The book's tables are read by people comparing numbers with the paper's: a cell that reads ``nan``, ``None``,
``<NA>`` or ``NaT`` is a missing value that leaked through formatting (it should say why it is missing, or be
empty), and a cell that reads ``8.0e-02`` is a number pandas fell back to scientific notation for, which no
table of the paper uses. :func:`table_problems` parses every page of a built book (``_build/html``) with the
standard library's HTML parser and lists each such cell, so a build can fail on them instead of publishing them.
Text outside tables (prose, code, equations) is not looked at.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

#: Cell texts that are a missing value as Python, NumPy or pandas print it.
MISSING = frozenset({"nan", "NaN", "None", "<NA>", "NaT"})
#: NaN inside a longer cell text (``≤ nan``, ``98.1 (nan)``): a missing value formatted into a string.
NAN_WORD = re.compile(r"(?<![A-Za-z])nan(?![A-Za-z])", re.IGNORECASE)
#: A number in scientific notation (``8.0e-02``, ``1E5``), anywhere in a cell's text.
SCIENTIFIC = re.compile(r"\b\d+(\.\d+)?[eE][+-]?\d+\b")

_CELLS = ("td", "th")


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def cell_problem(text: str) -> bool:
    """Whether a table cell's text (whitespace collapsed) is a missing value, holds a NaN, or holds scientific
    notation."""
    return text in MISSING or NAN_WORD.search(text) is not None or SCIENTIFIC.search(text) is not None


class _TableCells(HTMLParser):
    """Collects, for every row of every ``<table>``, the texts of its ``<td>``/``<th>`` cells (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._tables = 0  # depth of <table> nesting
        self._cell: list[str] | None = None  # text of the open cell

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
        elif tag == "tr" and self._tables:
            self.rows.append([])
        elif tag in _CELLS and self._tables:
            self._close_cell()  # an unclosed <td> ends where the next one starts
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _CELLS or tag in ("tr", "table"):
            self._close_cell()
        if tag == "table" and self._tables:
            self._tables -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _close_cell(self) -> None:
        if self._cell is None:
            return
        if not self.rows:  # a cell outside any <tr>: a row of its own
            self.rows.append([])
        self.rows[-1].append(_squeeze("".join(self._cell)))
        self._cell = None


def table_rows(html: str) -> list[list[str]]:
    """The rows of every table in ``html``, each as the list of its cells' texts (whitespace collapsed)."""
    parser = _TableCells()
    parser.feed(html)
    parser.close()
    return parser.rows


def page_problems(html: str, page: str) -> list[str]:
    """``"PAGE: ROW TEXT: CELL"`` for every problem cell (:func:`cell_problem`) of the tables in ``html``."""
    return [f"{page}: {' | '.join(row)}: {cell}" for row in table_rows(html) for cell in row if cell_problem(cell)]


#: Pages Sphinx writes itself, whose tables are lists of names (``NAN_WORD`` in the general index), not results.
SPHINX_PAGES = frozenset({"genindex.html", "py-modindex.html", "search.html"})


def table_problems(html_dir: Path) -> list[str]:
    """Every problem cell of the tables of the ``*.html`` pages under ``html_dir`` (a built book's ``_build/html``),
    as ``"PAGE: ROW TEXT: CELL"`` with PAGE relative to ``html_dir``; an empty list when every table is clean.
    Sphinx's own index pages (:data:`SPHINX_PAGES`) are not looked at."""
    html_dir = Path(html_dir)
    problems: list[str] = []
    for path in sorted(p for p in html_dir.rglob("*.html") if p.relative_to(html_dir).as_posix() not in SPHINX_PAGES):
        problems += page_problems(path.read_text(encoding="utf-8"), path.relative_to(html_dir).as_posix())
    return problems
