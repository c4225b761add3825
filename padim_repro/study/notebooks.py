"""Execute the project's parameterised notebooks with papermill, atomically, with errors in one line.

A notebook is executed into a hidden ``.NAME.partial.ipynb`` beside ``OUTPUT`` and renamed to ``OUTPUT`` only when
every cell succeeded, so an interrupted or failed execution never leaves a half-run notebook where the book (or a
resumed run) expects a finished one; a failed execution's partial file is removed, and the error raised
(:class:`NotebookError`) names the notebook and the original exception in one line, not papermill's traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"


class NotebookError(RuntimeError):
    """A notebook cell failed; the message is one line: the notebook and the original error's name and text."""


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def execute(name: str, output: str | Path, parameters: dict[str, Any], cwd: str | Path = REPO_ROOT) -> Path:
    """Run ``notebooks/NAME.ipynb`` with ``parameters`` into ``output`` (relative paths: from the repo root)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    if not output.is_absolute():
        output = REPO_ROOT / output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(partial), parameters=parameters,
                                   cwd=str(cwd), progress_bar=False, kernel_name="python3")  # fmt: skip
    except PapermillExecutionError as exc:
        partial.unlink(missing_ok=True)
        raise NotebookError(f"notebook {name} failed: {exc.ename}: {_one_line(exc.evalue)}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return output


def parameters_of(path: str | Path) -> dict[str, Any]:
    """The papermill parameters an executed notebook was run with ({} if it is missing or was not executed)."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return {}
    return meta.get("papermill", {}).get("parameters", {}) or {}


def from_repo(path: str | Path) -> str:
    """``path`` relative to the repo root (the notebooks' working folder) when it is near it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), REPO_ROOT)
    return rel if not rel.startswith("../..") else str(Path(path).resolve())
