"""``make reproduce``'s runs: every MVTec AD category x backbone (resumable), their pages, and a status for the book.

For each (category, backbone) with data and weights, the run is computed, or reused when a complete run of the same
identity exists (:func:`padim_repro.study.runs.run_or_load`: settings, data content, weights and code), then its
page (``BOOK/results/CATEGORY_BACKBONE.ipynb``, the executed category notebook) is executed unless it already shows
exactly that run (it records the run's manifest hash). One failing run does not stop the rest; what could not be run
(absent categories, unavailable weights) and what failed is recorded with the reason, in one line, in
``RESULTS/status.json``, which says for every run whether it was computed now or reused and from which commit, and,
for a category whose image counts differ from the official ones, that difference (the book's coverage shows it).
Everything is written under ``results`` and ``book_dir``; nothing elsewhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backbones import WeightsError, build_backbone
from ..config import PadimConfig
from ..data import MVTEC_CATEGORIES, DataError, list_categories
from ..storage import write_json
from .book import category_title
from .download import DownloadError, download_mvtec, verify_counts
from .notebooks import NotebookError, default_book_dir, execute, from_repo, is_current
from .provenance import provenance
from .runs import Run, run_or_load

#: The paper's two main models (Tables III, V).
PAPER_BACKBONES = ("resnet18", "wide_resnet50_2")
STATUS_FILE = "status.json"
#: Errors that end one run with a reason (anything else is a bug and propagates).
RUN_ERRORS = (DataError, WeightsError, NotebookError, ValueError, OSError, RuntimeError)


@dataclass
class RunStatus:
    """What happened to one (category, backbone): ``ran`` (computed now), ``reused``, ``failed`` or ``not run``."""

    category: str
    backbone: str
    status: str
    reason: str = ""
    run_dir: str = ""  # relative to the results folder
    notebook: str = ""  # relative to the book folder
    seconds: float = 0.0
    computed_at: str = ""  # commit of the code that computed the run
    run_key: str = ""


def ensure_data(root: Path) -> list[str]:
    """The categories under ``root``; downloads MVTec AD first (:func:`~padim_repro.study.download.download_mvtec`)
    when ``root`` holds none. Offline, the error says how to point ``DATA_ROOT`` at a local copy."""
    if root.is_dir() and list_categories(root):
        return list_categories(root)
    print(f"No MVTec AD category under {root}: downloading the official archive ...", file=sys.stderr)
    try:
        return download_mvtec(root)
    except DownloadError as exc:
        raise DataError(
            f"{exc} Offline? Point DATA_ROOT at a local copy in the official layout, e.g. `make reproduce "
            "DATA_ROOT=../shared/mvtec_ad "
            "WEIGHTS_RESNET18=../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth`"
        ) from exc


def check_weights(backbone: str, weights: str) -> str | None:
    """None when the weights can be had (building the backbone once), else the reason they cannot."""
    try:
        build_backbone(backbone, ("layer1", "layer2", "layer3"), weights, seed=0)
    except (WeightsError, ValueError) as exc:
        return str(exc)
    return None


def notebook_parameters(category: str, config: PadimConfig, data_root: str | Path, results: str | Path,
                        run: Run | None = None) -> dict[str, Any]:  # fmt: skip
    """The parameters of ``notebooks/category.ipynb`` for one run (``run_manifest``: the run the page must show)."""
    return {"category": category, "data_root": from_repo(data_root), "results_root": from_repo(results),
            "force": False, **{k: v for k, v in config.to_dict().items() if k != "layers"},
            "layers": ",".join(config.layers), "run_manifest": run.manifest_sha256 if run else ""}  # fmt: skip


def run_category_notebook(category: str, config: PadimConfig, data_root: str | Path, results: str | Path,
                          notebook: str | Path | None = None, force: bool = False,
                          progress: bool | None = None) -> tuple[Run, Path, bool]:  # fmt: skip
    """Compute (or reuse) one run, then execute its page, ``notebooks/category.ipynb``, into ``notebook`` (default:
    ``category.ipynb`` in the run's own folder) unless the page there already shows this run, executed from the
    notebook as it is now (:func:`~padim_repro.study.notebooks.is_current`).

    Input errors surface from the run, before any notebook starts. Returns (run, page, whether it was executed).
    """
    run = run_or_load(category, data_root, results, config, force=force, progress=progress)
    out = Path(notebook) if notebook else run.run_dir / "category.ipynb"
    params = notebook_parameters(category, config, data_root, results, run)
    title = category_title(category, config.backbone)
    if not force and is_current(out, "category", params, title):
        return run, out, False
    return run, execute("category", out, params, title=title), True


def reproduce(
    data_root: str | Path,
    results: str | Path = "results",
    weights: dict[str, str] | None = None,
    backbones: Sequence[str] = PAPER_BACKBONES,
    device: str = "auto",
    force: bool = False,
    book_dir: str | Path | None = None,
    extra_parameters: dict[str, Any] | None = None,
    pages: bool = True,
) -> list[RunStatus]:
    """Run every MVTec AD category present for each backbone with the paper's settings; returns the statuses.

    ``book_dir`` defaults to :func:`~padim_repro.study.notebooks.default_book_dir`. ``extra_parameters`` override
    settings of every run (the tests use them to shrink images). ``pages=False`` computes (or reuses) the runs and
    writes the status without executing any notebook (no papermill needed).
    """
    book_dir = Path(book_dir) if book_dir else default_book_dir(results)
    data_root, results = Path(data_root), Path(results)
    weights = {b: (weights or {}).get(b, "tv_in1k") for b in backbones}
    present = ensure_data(data_root)
    counts = {c: problems[0] for c in present if (problems := verify_counts(data_root, [c]))}
    for problem in counts.values():
        print(f"warning: {problem}", file=sys.stderr)
    categories = sorted(set(present) | set(MVTEC_CATEGORIES), key=_category_order)
    statuses: list[RunStatus] = []
    for backbone in backbones:
        missing_weights = check_weights(backbone, weights[backbone])
        for category in categories:
            status = RunStatus(category, backbone, "not run")
            statuses.append(status)
            if category not in present:
                status.reason = f"data absent (no {category} under {data_root})"
            elif missing_weights:
                status.reason = f"weights unavailable: {missing_weights}"
            else:
                config = PadimConfig(backbone=backbone, weights=weights[backbone], device=device,
                                     **(extra_parameters or {}))  # fmt: skip
                _run_one(status, config, data_root, results, book_dir, force, pages)
                if status.status in ("ran", "reused") and category in counts:  # the book says so (coverage)
                    status.reason = f"not the official image counts ({counts[category].split(': ', 1)[1]})"
                print(f"{category:>12} {backbone:<16} {status.status} {status.reason}", file=sys.stderr)
    write_json(results / STATUS_FILE, {"data_root": str(data_root), "weights": weights, "book_dir": str(book_dir),
                                       "runs": [asdict(s) for s in statuses], **provenance()})  # fmt: skip
    if pages:
        execute("results", book_dir / "results" / "summary.ipynb",
                {"results_root": from_repo(results), "tables_dir": from_repo(results / "tables")})
    for s in statuses:
        if s.status == "failed":
            print(f"FAILED {s.category} {s.backbone}: {s.reason}", file=sys.stderr)
    return statuses


def _category_order(category: str) -> tuple[int, str]:
    return (MVTEC_CATEGORIES.index(category), category) if category in MVTEC_CATEGORIES else (99, category)


def _run_one(status: RunStatus, config: PadimConfig, data_root: Path, results: Path, book_dir: Path,
             force: bool, pages: bool = True) -> None:  # fmt: skip
    page = book_dir / "results" / f"{status.category}_{status.backbone}.ipynb"
    t0 = time.perf_counter()
    try:
        if pages:
            run, _, _ = run_category_notebook(status.category, config, data_root, results, page, force=force)
        else:
            run = run_or_load(status.category, data_root, results, config, force=force)
    except RUN_ERRORS as exc:  # one failing category must not stop the others
        status.status, status.reason = "failed", " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
        if pages:
            page.unlink(missing_ok=True)  # a page of an earlier run must not stand for this one
    else:
        status.status = "reused" if run.reused else "ran"
        status.run_dir = run.run_dir.relative_to(results).as_posix()
        status.notebook = page.relative_to(book_dir).as_posix() if pages else ""
        status.computed_at, status.run_key = str(run.manifest.get("git_commit") or ""), run.manifest.get("key", "")
    status.seconds = round(time.perf_counter() - t0, 1)


def exit_code(statuses: list[RunStatus]) -> int:
    """Print the end-of-run summary; 1 when any run failed or none was computed or reused, else 0."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    print("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    if not counts.get("ran") and not counts.get("reused"):
        print("error: no run could be computed (see the reasons above and in status.json)", file=sys.stderr)
        return 1
    return 1 if counts.get("failed") else 0
