"""``make reproduce``: data and weights acquisition, every category x backbone (resumable), status for the book.

Runs go through the papermill category notebook, so each finished (category, backbone) leaves an executed notebook
(the book's per-category page) next to its ``metrics.json``. A finished run is not recomputed unless forced, one
failing run does not stop the rest, and what could not be run (absent categories, unavailable weights) is recorded
with the reason in ``RESULTS/status.json``, which the results notebook and the book read.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backbones import WeightsError, build_backbone
from ..config import PadimConfig
from ..data import MVTEC_CATEGORIES, DataError, list_categories
from ..storage import write_json
from .download import DownloadError, download_mvtec, verify_counts
from .notebooks import REPO_ROOT, execute, from_repo
from .provenance import provenance
from .runs import default_run_dir, is_complete

#: The paper's two main models (Table III, V): backbone -> d.
PAPER_BACKBONES = ("resnet18", "wide_resnet50_2")
BOOK_RESULTS = Path("book") / "results"
STATUS_FILE = "status.json"


@dataclass
class RunStatus:
    """What happened to one (category, backbone): ``ran``, ``cached``, ``failed`` or ``not run``."""

    category: str
    backbone: str
    status: str
    reason: str = ""
    run_dir: str = ""  # relative to the results folder
    notebook: str = ""
    seconds: float = 0.0


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


def reproduce(
    data_root: str | Path,
    results: str | Path = "results",
    weights: dict[str, str] | None = None,
    backbones: tuple[str, ...] = PAPER_BACKBONES,
    device: str = "auto",
    force: bool = False,
    book_results: str | Path = BOOK_RESULTS,
    extra_parameters: dict[str, Any] | None = None,
) -> list[RunStatus]:
    """Run every MVTec AD category present for each backbone with the paper's settings; returns the statuses.

    ``extra_parameters`` are passed to every category notebook (the tests use them to shrink images).
    """
    data_root, results = Path(data_root), Path(results)
    weights = {b: (weights or {}).get(b, "tv_in1k") for b in backbones}
    present = ensure_data(data_root)
    for problem in verify_counts(data_root, present):
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
                continue
            if missing_weights:
                status.reason = f"weights unavailable: {missing_weights}"
                continue
            _run_one(status, data_root, results, weights[backbone], device, force, Path(book_results),
                     extra_parameters or {})  # fmt: skip
            print(f"{category:>12} {backbone:<16} {status.status} {status.reason}", file=sys.stderr)
    write_json(
        results / STATUS_FILE,
        {"data_root": str(data_root), "weights": weights, "runs": [asdict(s) for s in statuses], **provenance()},
    )
    execute(
        "results",
        Path(book_results) / "summary.ipynb",
        {"results_root": from_repo(results), "tables_dir": from_repo(results / "tables"),
         "headline_md": from_repo(Path(book_results).parent / "_generated" / "headline.md")},
    )  # fmt: skip
    failed = [s for s in statuses if s.status == "failed"]
    for s in failed:
        print(f"FAILED {s.category} {s.backbone}: {s.reason}", file=sys.stderr)
    return statuses


def _category_order(category: str) -> tuple[int, str]:
    return (MVTEC_CATEGORIES.index(category), category) if category in MVTEC_CATEGORIES else (99, category)


def _run_one(
    status: RunStatus, data_root: Path, results: Path, weights: str, device: str, force: bool, book_results: Path,
    extra: dict[str, Any],
) -> None:  # fmt: skip
    config = PadimConfig(backbone=status.backbone, weights=weights, device=device, **_config_overrides(extra))
    run_dir = default_run_dir(results, status.category, config)
    notebook = book_results / f"{status.category}_{status.backbone}.ipynb"
    status.run_dir, status.notebook = str(run_dir.relative_to(results)), str(notebook)
    if not force and is_complete(run_dir) and (REPO_ROOT / notebook).is_file():
        status.status = "cached"
        return
    t0 = time.perf_counter()
    try:
        run_category_notebook(status.category, config, data_root, results, notebook, force=True)
        status.status = "ran"
    except Exception as exc:  # one failing category must not stop the others
        status.status = "failed"
        # A notebook's error carries the original exception's name and message (papermill's ename / evalue).
        name, message = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
        status.reason = f"{name}: {message}".strip()[:2000]
        traceback.print_exc()
    status.seconds = round(time.perf_counter() - t0, 1)


def _config_overrides(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: extra[k] for k in ("resize", "crop", "layers", "d", "sigma", "seed", "batch_size") if k in extra}


def run_category_notebook(
    category: str,
    config: PadimConfig,
    data_root: str | Path,
    results: str | Path,
    notebook: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Execute ``notebooks/category.ipynb`` for one category and config; returns the executed notebook's path.

    Without ``notebook`` the executed copy goes into the run's own folder (keyed by config), so reruns with
    other parameters never overwrite anything.
    """
    run_dir = default_run_dir(results, category, config)
    out = Path(notebook) if notebook else run_dir / "category.ipynb"
    params = {
        "category": category,
        "data_root": from_repo(data_root),
        "results_root": from_repo(results),
        "force": force,
        **{k: v for k, v in config.to_dict().items() if k != "layers"},
        "layers": ",".join(config.layers),
    }
    return execute("category", out, params)


def main_summary(statuses: list[RunStatus]) -> int:
    """Print the end-of-run summary; exit code 1 when any run failed."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    print("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("failed") else 0

