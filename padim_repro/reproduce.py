"""``make reproduce``: data and weights acquisition, every category x backbone (resumable), status for the book.

Runs go through the papermill category notebook, so each finished (category, backbone) leaves an executed notebook
(the book's per-category page) next to its ``metrics.json``. A finished run is not recomputed unless forced, one
failing run does not stop the rest, and what could not be run (absent categories, unavailable weights) is recorded
with the reason in ``RESULTS/status.json``, which the results notebook and the book read.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .artifacts import provenance, write_json
from .config import PadimConfig
from .data import MVTEC_CATEGORIES, DataError, list_categories
from .features import WeightsError, build_backbone
from .notebooks import REPO_ROOT, execute
from .runner import default_run_dir, is_complete

#: The official archive as used by anomalib's MVTec AD datamodule, and its sha256.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/420938113-1629960298/"
    "mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"

#: Official counts per category: (train good images, test images, defect types) (Bergmann et al., 2019).
MVTEC_COUNTS: dict[str, tuple[int, int, int]] = {
    "bottle": (209, 83, 3), "cable": (224, 150, 8), "capsule": (219, 132, 5), "carpet": (280, 117, 5),
    "grid": (264, 78, 5), "hazelnut": (391, 110, 4), "leather": (245, 124, 5), "metal_nut": (220, 115, 4),
    "pill": (267, 167, 7), "screw": (320, 160, 5), "tile": (230, 117, 5), "toothbrush": (60, 42, 1),
    "transistor": (213, 100, 4), "wood": (247, 79, 5), "zipper": (240, 151, 7),
}  # fmt: skip

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


def category_counts(root: Path, category: str) -> tuple[int, int, int]:
    """(train good, test, defect types) of a category folder, counted as the official table counts them."""
    cat = root / category
    n_train = sum(1 for p in (cat / "train" / "good").glob("*.png"))
    test_dirs = [p for p in (cat / "test").iterdir() if p.is_dir()] if (cat / "test").is_dir() else []
    n_test = sum(1 for d in test_dirs for _ in d.glob("*.png"))
    return n_train, n_test, sum(1 for d in test_dirs if d.name != "good")


def verify_counts(root: Path, categories: list[str]) -> list[str]:
    """Messages for MVTec AD categories whose file counts differ from the official ones (empty when all match)."""
    problems = []
    for cat in categories:
        if cat in MVTEC_COUNTS and (got := category_counts(root, cat)) != MVTEC_COUNTS[cat]:
            problems.append(f"{root / cat}: found (train, test, defect types) = {got}, official {MVTEC_COUNTS[cat]}")
    return problems


def download_mvtec(root: Path, url: str = MVTEC_URL, sha256: str = MVTEC_SHA256, timeout: float = 30) -> None:
    """Download the official archive (about 4.9 GB), check its sha256, extract it into ``root``, check counts."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "mvtec_anomaly_detection.tar.xz"
    partial = archive.with_suffix(".xz.partial")
    if not archive.is_file():
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(partial, "wb") as fh:
            total = int(resp.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="MVTec AD") as bar:
                while block := resp.read(1 << 20):
                    fh.write(block)
                    bar.update(len(block))
        partial.replace(archive)
    h = hashlib.sha256()
    with open(archive, "rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    if h.hexdigest() != sha256:
        raise DataError(f"{archive}: sha256 {h.hexdigest()} differs from the official {sha256}; delete it and retry")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    problems = verify_counts(root, list_categories(root))
    if problems:
        raise DataError("extracted data do not match the official counts:\n" + "\n".join(problems))
    archive.unlink()


def ensure_data(root: Path) -> list[str]:
    """The categories under ``root``; downloads MVTec AD first when ``root`` holds none (needs internet)."""
    if root.is_dir() and list_categories(root):
        return list_categories(root)
    print(f"No MVTec AD category under {root}: downloading the official archive ...", file=sys.stderr)
    try:
        download_mvtec(root)
    except OSError as exc:  # URLError, timeouts and DNS failures are OSErrors
        raise DataError(
            f"could not download MVTec AD ({exc}). Offline? Point DATA_ROOT at a local copy in the official layout, "
            "e.g. `make reproduce DATA_ROOT=../shared/mvtec_ad "
            "WEIGHTS_RESNET18=../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth`"
        ) from exc
    return list_categories(root)


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
        {"results_root": _from_repo(results), "tables_dir": _from_repo(results / "tables"),
         "headline_md": _from_repo(Path(book_results).parent / "_generated" / "headline.md")},
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
        "data_root": _from_repo(data_root),
        "results_root": _from_repo(results),
        "force": force,
        **{k: v for k, v in config.to_dict().items() if k != "layers"},
        "layers": ",".join(config.layers),
    }
    return execute("category", out, params)


def _from_repo(path: str | Path) -> str:
    """``path`` relative to the repo root (the notebooks' working folder) when it is near it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), REPO_ROOT)
    return rel if not rel.startswith("../..") else str(Path(path).resolve())


def main_summary(statuses: list[RunStatus]) -> int:
    """Print the end-of-run summary; exit code 1 when any run failed."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    print("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("failed") else 0

