"""Execute the project's parameterised notebooks with papermill, atomically.

A notebook is executed into ``NAME.partial.ipynb`` beside ``OUTPUT`` and renamed to ``OUTPUT`` only when every cell succeeded, so an
interrupted or failed execution never leaves a half-run notebook where the book (or a resumed run) expects a
finished one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"


def execute(name: str, output: str | Path, parameters: dict[str, Any], cwd: str | Path = REPO_ROOT) -> Path:
    """Run ``notebooks/NAME.ipynb`` with ``parameters`` into ``output`` (relative paths: from the repo root)."""
    import papermill

    output = Path(output)
    if not output.is_absolute():
        output = REPO_ROOT / output
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.stem + ".partial.ipynb")
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(partial),
        parameters=parameters,
        cwd=str(cwd),
        progress_bar=False,
        kernel_name="python3",
    )
    os.replace(partial, output)
    return output


def from_repo(path: str | Path) -> str:
    """``path`` relative to the repo root (the notebooks' working folder) when it is near it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), REPO_ROOT)
    return rel if not rel.startswith("../..") else str(Path(path).resolve())
