"""Executing a notebook for the book: code inputs folded behind a toggle, the page's own title, parameters kept."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from padim_repro.study import notebooks


def _tiny_notebook(folder: Path) -> None:
    """``folder/tiny.ipynb``: a title, a parameter cell, a code cell with a tag of its own and a plain one."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A generic title\n\nSome text.\n\n# A second heading"),
                nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(x + 1)", metadata={"tags": ["mine"]}),
                nbformat.v4.new_code_cell("x * 10")]  # fmt: skip
    nbformat.write(nb, folder / "tiny.ipynb")


def test_execute_hides_inputs_and_retitles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_notebook(tmp_path)
    source_before = (tmp_path / "tiny.ipynb").read_text()
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path)
    out = notebooks.execute("tiny", tmp_path / "out" / "page.ipynb", {"x": 4}, cwd=tmp_path, title="bottle — ResNet-18")

    nb = json.loads(out.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tags = [c["metadata"].get("tags", []) for c in code]
    assert tags == [["parameters"], ["injected-parameters"], ["mine", "hide-input"], ["hide-input"]]
    assert "".join(code[2]["outputs"][0]["text"]) == "5\n"  # the injected value was used; outputs are kept
    assert "".join(nb["cells"][0]["source"]) == "# bottle — ResNet-18\n\nSome text.\n\n# A second heading"
    assert nb["metadata"]["papermill"]["input_path"] == str(tmp_path / "tiny.ipynb")
    assert sorted(p.name for p in out.parent.iterdir()) == ["page.ipynb"]  # no prepared or partial copy left
    assert (tmp_path / "tiny.ipynb").read_text() == source_before  # the source notebook is untouched


def test_without_title_the_heading_stays(tmp_path: Path) -> None:
    _tiny_notebook(tmp_path)
    nb = notebooks.prepare(tmp_path / "tiny.ipynb")
    assert nb.cells[0].source.startswith("# A generic title\n")
    assert nb.cells[3].metadata.tags == ["hide-input"] and "tags" not in nb.cells[0].metadata


def test_a_title_needs_a_heading(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## Only a section")])
    with pytest.raises(ValueError, match="no level-1 Markdown heading"):
        notebooks.retitle(nb, "bottle — ResNet-18")
