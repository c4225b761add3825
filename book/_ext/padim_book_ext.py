"""Sphinx extension of the book: keep napoleon from turning prose in attribute comments into type references.

napoleon reads the first line of an attribute's or module variable's docstring as ``type: description`` when it
holds a colon, so ``#: The paper's number of channels (Sec. 4.1: "Rd100")`` would get the "type"
``The paper's number of channels (Sec. 4.1``, which the build (nitpicky, warnings as errors) then reports as a
missing class. This extension lets napoleon run, and puts the original docstring back wherever the "type" it
found is not a type expression. Real inline types (``int: number of ...``) are kept.
"""

from __future__ import annotations

import re
from typing import Any

#: A type expression: dotted names, optionally subscripted, joined by ``|`` (spaces allowed after commas and
#: around ``|`` only).
_TYPE = re.compile(r"~?[A-Za-z_][\w.]*(\[[\w.\[\],|~ ]*\])?(\|~?[A-Za-z_][\w.]*(\[[\w.\[\],|~ ]*\])?)*")
_ATTRIBUTES = ("attribute", "data", "property")


def _is_type(text: str) -> bool:
    return bool(_TYPE.fullmatch(text.strip().replace(" | ", "|").replace(", ", ",")))


def _save(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what in _ATTRIBUTES:
        app.env.temp_data.setdefault("padim_book_original", {})[(what, name)] = list(lines)


def _restore(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if what not in _ATTRIBUTES:
        return
    original = app.env.temp_data.get("padim_book_original", {}).pop((what, name), None)
    types = [line[len(":type:"):] for line in lines if line.startswith(":type:")]
    if original is not None and any(not _is_type(t) for t in types):
        lines[:] = original


def setup(app: Any) -> dict[str, Any]:
    # napoleon processes docstrings at the default priority (500): save before it, check after it.
    app.connect("autodoc-process-docstring", _save, priority=400)
    app.connect("autodoc-process-docstring", _restore, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
