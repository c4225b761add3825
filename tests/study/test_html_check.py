"""The check of a built book's tables: missing values and scientific notation in cells are found, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from padim_repro.study.html_check import cell_problem, table_problems, table_rows


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"


def _table(*rows: tuple[str, ...]) -> str:
    head, *body = rows
    cells = "".join(f"<th>{c}</th>" for c in head)
    lines = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>"


def _book(tmp_path: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(_page(body), encoding="utf-8")
    return tmp_path


def test_a_nan_cell_is_reported(tmp_path: Path) -> None:
    book = _book(tmp_path, {"results/summary.html": _table(("category", "image AUROC"), ("bottle", "99.7"),
                                                           ("carpet", " NaN "))})  # fmt: skip
    assert table_problems(book) == ["results/summary.html: carpet | NaN: NaN"]


@pytest.mark.parametrize("text", ["nan", "NaN", "None", "&lt;NA&gt;", "NaT", "≤ nan", "98.1 (NaN)"])
def test_every_missing_value_spelling_is_reported(tmp_path: Path, text: str) -> None:
    book = _book(tmp_path, {"p.html": _table(("a",), (text,))})
    assert len(table_problems(book)) == 1


def test_scientific_notation_in_a_cell_is_reported(tmp_path: Path) -> None:
    book = _book(tmp_path, {"p.html": _table(("category", "delta"), ("bottle", "8.0e-02"), ("pill", "-3.3e+00"))})
    assert table_problems(book) == ["p.html: bottle | 8.0e-02: 8.0e-02", "p.html: pill | -3.3e+00: -3.3e+00"]


def test_sphinx_index_pages_are_not_looked_at(tmp_path: Path) -> None:
    book = _book(tmp_path, {"genindex.html": _table(("a",), ("NAN_WORD",)), "api/p.html": _table(("a",), ("nan",))})
    assert table_problems(book) == ["api/p.html: nan: nan"]


def test_words_containing_nan_are_not_reported(tmp_path: Path) -> None:
    book = _book(tmp_path, {"p.html": _table(("a",), ("financial",), ("Nancy",), ("nano-scale",))})
    assert table_problems(book) == []


def test_a_clean_table_has_no_problem(tmp_path: Path) -> None:
    """Decimals, percentages, empty cells, words containing "nan" and hashes with an e are fine."""
    book = _book(tmp_path, {"p.html": _table(("category", "AUROC", "note", "run"), ("bottle", "99.70", "", "a3e5f0"),
                                             ("banana", "95.3 ± 0.4", "nanometre", "3e5f"))})  # fmt: skip
    assert table_problems(book) == []


def test_scientific_notation_outside_a_table_is_not_looked_at(tmp_path: Path) -> None:
    prose = "<p>The covariance gets 1.0e-02 I added, and a nan here is prose.</p><pre>x = 8.0e-02</pre>"
    book = _book(tmp_path, {"method.html": prose + _table(("a", "b"), ("1", "2")) + "<p>NaN</p>"})
    assert table_problems(book) == []


def test_cells_of_nested_and_unclosed_markup() -> None:
    """Cell text is collected through inline tags and entities; an unclosed cell ends where the next one starts."""
    html = "<table><tr><th>a <b>b</b></th><td>1&nbsp;e<td>x</tr></table><p>2.0e-01</p>"
    assert table_rows(html) == [["a b", "1 e", "x"]]
    assert cell_problem("1.5E3") and cell_problem("<NA>") and cell_problem("NaN%") and not cell_problem("e-3")
