"""Execute the project's parameterised notebooks with papermill, atomically, with errors in one line.

A notebook is executed into a hidden ``.NAME.partial.ipynb`` beside ``OUTPUT`` and renamed to ``OUTPUT`` only when
every cell succeeded, so an interrupted or failed execution never leaves a half-run notebook where the book (or a
resumed run) expects a finished one; a failed execution's partial file is removed, and the error raised
(:class:`NotebookError`) names the notebook and the original exception in one line, not papermill's traceback.

What is executed is a copy of the notebook prepared for the book (:func:`prepare`): every code cell is tagged
``hide-input``, so its page opens on the results, each cell's code folded behind a "show" toggle, and the title can
be replaced by the page's own (a category page is titled ``bottle — ResNet-18``, not with the notebook's generic
heading). The notebooks under ``notebooks/`` are never modified. A page records the hash of the notebook it was executed from,
so a page is up to date (:func:`is_current`) only for the same parameters and the same notebook content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # nbformat comes with papermill, an optional dependency: imported where a notebook is read
    import nbformat

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"


#: The executed notebook's metadata key for what it was executed from (:func:`is_current`).
PAGE_KEY = "padim_repro"
#: Jupyter Book's cell tag that folds a code cell's input behind a "show" toggle; its outputs stay visible.
HIDE_INPUT = "hide-input"
#: Cells left as they are: the parameter cell is folded whole by the book (``togglebutton_selector`` in
#: ``book/_config.yml``), and a cell whose input is already folded or removed needs no second toggle.
FOLDED_TAGS = frozenset({"parameters", HIDE_INPUT, "hide-cell", "remove-input", "remove-cell"})
#: A level-1 Markdown heading (one line).
_HEADING = re.compile(r"^# .*$", re.MULTILINE)


class NotebookError(RuntimeError):
    """A notebook cell failed; the message is one line: the notebook and the original error's name and text."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def hide_inputs(nb: nbformat.NotebookNode) -> None:
    """Tag every code cell ``hide-input`` (keeping its other tags), except those :data:`FOLDED_TAGS` already fold."""
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and not FOLDED_TAGS.intersection(tags):
            cell.metadata["tags"] = [*tags, HIDE_INPUT]


def retitle(nb: nbformat.NotebookNode, title: str) -> None:
    """Replace the notebook's first level-1 Markdown heading (``# ...``) by ``# TITLE``.

    Raises ValueError when no Markdown cell has one: the page would keep a title that is not the one asked for.
    """
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _HEADING.search(cell.source):
            cell.source = _HEADING.sub(lambda _: f"# {title}", cell.source, count=1)
            return
    raise ValueError(f"no level-1 Markdown heading to replace by {title!r}")


def prepare(source: Path, title: str | None = None) -> nbformat.NotebookNode:
    """The notebook at ``source`` as the book shows it: code inputs folded (:func:`hide_inputs`), and titled
    ``title`` when one is given (:func:`retitle`)."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    hide_inputs(nb)
    if title is not None:
        retitle(nb, title)
    return nb


def execute(name: str, output: str | Path, parameters: dict[str, Any], cwd: str | Path = REPO_ROOT,
            title: str | None = None) -> Path:  # fmt: skip
    """Run ``notebooks/NAME.ipynb``, prepared for the book (:func:`prepare`, titled ``title`` when given), with
    ``parameters`` into ``output`` (a relative path is the working directory's, as every path a command is given;
    the notebook itself runs in ``cwd``, by default the repository root).

    The prepared copy is a hidden file beside the partial one, removed afterwards; the executed notebook records
    the original notebook as papermill's input.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    source = NOTEBOOKS / f"{name}.ipynb"
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    prepared = output.with_name(f".{output.stem}.source.partial.ipynb")
    nb = prepare(source, title)
    try:
        nbformat.write(nb, prepared)
        executed = papermill.execute_notebook(str(prepared), str(partial), parameters=parameters, cwd=str(cwd),
                                              progress_bar=False, kernel_name="python3")  # fmt: skip
        executed.metadata.papermill["input_path"] = str(source)
        executed.metadata[PAGE_KEY] = {"source_sha256": _content_hash(nb)}
        nbformat.write(executed, partial)
        os.replace(partial, output)
    except PapermillExecutionError as exc:
        raise NotebookError(f"notebook {name} failed: {exc.ename}: {_one_line(exc.evalue)}") from None
    finally:  # a failed or interrupted execution, or a failed write, leaves neither copy behind
        for leftover in (prepared, partial):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return output


def _content_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 of a prepared notebook's content (cells, metadata, title): what its pages were executed from."""
    import nbformat

    return hashlib.sha256(nbformat.writes(nb).encode()).hexdigest()


def is_current(page: str | Path, name: str, parameters: dict[str, Any], title: str | None = None) -> bool:
    """Whether ``page`` is what :func:`execute` would make of ``notebooks/NAME.ipynb`` now: run with the same
    ``parameters``, from the same notebook content (a cell added or changed since makes the page stale)."""
    try:
        meta = json.loads(Path(page).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return False
    recorded = meta.get(PAGE_KEY, {}).get("source_sha256")
    return parameters_of(page) == parameters and recorded == _content_hash(prepare(NOTEBOOKS / f"{name}.ipynb", title))


def parameters_of(path: str | Path) -> dict[str, Any]:
    """The papermill parameters an executed notebook was run with ({} if it is missing or was not executed)."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return {}
    return meta.get("papermill", {}).get("parameters", {}) or {}


def default_book_dir(results: str | Path) -> Path:
    """Where the pages of ``results`` go when no book folder is given: the repository's ``book/`` for the
    repository's ``results/``, else ``RESULTS/book`` (other results never rewrite the repository's pages)."""
    results = Path(results).resolve()
    return REPO_ROOT / "book" if results == REPO_ROOT / "results" else results / "book"


def from_repo(path: str | Path) -> str:
    """``path`` relative to the repo root (the notebooks' working folder) when it is near it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), REPO_ROOT)
    return rel if not rel.startswith("../..") else str(Path(path).resolve())
