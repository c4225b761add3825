"""Sphinx extension of the book: two repairs of what the book's toolchain does on its own.

**Prose in attribute comments stays prose.** napoleon reads the first line of an attribute's or module
variable's docstring as ``type: description`` when it holds a colon, so ``#: The paper's number of channels
(Sec. 4.1: "Rd100")`` would get the "type" ``The paper's number of channels (Sec. 4.1``, which the build
(nitpicky, warnings as errors) then reports as a missing class. This extension lets napoleon run, and puts the
original docstring back wherever the "type" it found is not a type expression. Real inline types
(``int: number of ...``) are kept.

**Each inline script once.** Sphinx 7.4 writes a body-only script (``app.add_js_file(None, body=...)``) twice
when an extension adds it after the builder started: once as the builder got it (file name ``None``) and once
more when the builder re-adds every registered script before writing (as ``''``, which it does not recognise as
the same script). Jupyter Book's sphinx-thebe and sphinx-togglebutton add theirs then, so every page declared
``const THEBE_JS_URL`` twice, and the browser reported "Identifier 'THEBE_JS_URL' has already been declared".
Before the pages are written, this extension drops the builder's copies: the registered ones are written once.
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


def _drop_early_inline_scripts(app: Any, env: Any) -> None:
    # Every script of a None file name reached the builder through app.add_js_file, which also registered it, and
    # the builder re-adds the registered ones (named '') when it prepares the writing, after this event.
    scripts = getattr(app.builder, "_js_files", None)
    if scripts is not None:
        scripts[:] = [script for script in scripts if script.filename is not None]


def setup(app: Any) -> dict[str, Any]:
    app.connect("env-updated", _drop_early_inline_scripts)
    # napoleon processes docstrings at the default priority (500): save before it, check after it.
    app.connect("autodoc-process-docstring", _save, priority=400)
    app.connect("autodoc-process-docstring", _restore, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
