"""``fit`` and ``predict`` on your own images: a model from a folder of normal images, then per image its score,
its anomaly map (float16 ``.npy``) and an overlay PNG, at the image's own size, in ``--out``.

Everything is checked before anything is computed (:func:`~padim_repro.images.check_images`, the model file, the
threshold options), and ``predict`` writes into a hidden staging folder inside ``--out`` that is moved into place
only when every image is done: an error or an interruption leaves ``--out`` as it was (a folder it had to create is
removed again).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from ..config import PadimConfig
from ..data import open_image
from ..images import check_images, fit_files, list_images, map_at_image_size, predict_files, threshold_at_fpr
from ..model import Padim
from ..storage import atomic_write, write_json

SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
MAPS_DIR = "maps"
OVERLAYS_DIR = "overlays"
#: Opacity of the heatmap over the image in the overlays.
ALPHA = 0.45


def decoding_workers(workers: int | None, model: Padim) -> int:
    """``workers`` when given (>= 0), else 2 processes decoding beside a CUDA backbone and none on the CPU (where
    they would take the backbone's cores)."""
    if workers is None:
        return 2 if model.device.type == "cuda" else 0
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    return workers


def fit_folder(paths: Sequence[str | Path], model_path: str | Path, config: PadimConfig, workers: int | None = None,
               progress: bool | None = None) -> Padim:  # fmt: skip
    """Fit PaDiM on the normal images of ``paths`` (folders searched recursively) and save it to ``model_path``
    (the file ``run --save-model`` writes)."""
    model_path = Path(model_path)
    if model_path.is_dir():
        raise FileExistsError(f"--model {model_path} is a folder; give the model file's path, e.g. model.pt")
    files = list_images(paths, "--images")
    check_images(files, config)
    model = Padim(config, progress=False)
    fit_files(model, files, decoding_workers(workers, model), progress)
    model.save(model_path)
    return model


def overlay(image: Image.Image, amap: np.ndarray, threshold: float | None, vmin: float, vmax: float) -> np.ndarray:
    """The image (RGB, its own size) under the anomaly map in the ``jet`` colour map (``vmin`` to ``vmax``) and, when
    a threshold is known, the contour of the region above it in white; pixels the model did not see (NaN) are left
    as they are. uint8 (H, W, 3)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    seen = np.isfinite(amap)
    norm = np.clip((np.nan_to_num(amap, nan=vmin) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = colormaps["jet"](norm)[..., :3]
    out = np.where(seen[..., None], (1 - ALPHA) * rgb + ALPHA * heat, rgb)
    if threshold is not None:
        above = seen & (np.nan_to_num(amap, nan=-np.inf) > threshold)
        edge = above & ~ndimage.binary_erosion(above, iterations=max(1, min(amap.shape) // 300))
        out[edge] = 1.0
    return (out * 255 + 0.5).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _write_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def output_names(files: Sequence[Path]) -> list[Path]:
    """Each file's path relative to the deepest folder holding them all: the names of its outputs."""
    base = Path(os.path.commonpath([f.resolve().parent for f in files]))
    return [f.resolve().relative_to(base) for f in files]


def _resolve_threshold(model: Padim, threshold: float | None, good: str | Sequence[Path] | None, fpr: float,
                       workers: int, progress: bool | None) -> tuple[float | None, dict[str, Any]]:  # fmt: skip
    """The threshold given, or the score at false-positive rate ``fpr`` on the normal images of ``good`` (a folder or
    a list of files)."""
    if threshold is not None and good is not None:
        raise ValueError("give either --threshold or --good (with --fpr), not both")
    if threshold is not None:
        if not np.isfinite(threshold):
            raise ValueError(f"--threshold must be a finite number, got {threshold}")
        return threshold, {"threshold": threshold, "threshold_from": "--threshold"}
    if good is None:
        return None, {"threshold": None}
    files = list_images([good] if isinstance(good, (str, Path)) else good, "--good")
    check_images(files, model.config, model.image_size_)
    threshold_at_fpr(np.zeros(len(files)), fpr)  # too few images: refused before any is scored
    scores = np.concatenate([s for _, s in predict_files(model, files, workers, progress, desc="good")])
    t = threshold_at_fpr(scores, fpr)
    where = good if isinstance(good, (str, Path)) else f"({len(files)} files)"
    return t, {"threshold": t, "threshold_from": f"--good {where} --fpr {fpr}", "n_good": len(files),
               "good_false_positive_rate": float((scores > t).mean())}  # fmt: skip


def predict_folder(paths: Sequence[str | Path], model_path: str | Path, out: str | Path,
                   threshold: float | None = None, good: str | Sequence[Path] | None = None, fpr: float = 0.01,
                   device: str | None = None, maps: bool = True, workers: int | None = None,
                   progress: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Score the images of ``paths`` with the model file ``model_path`` and write ``scores.csv`` (path, score,
    and anomalous yes/no when a threshold is known), ``summary.json`` and, unless ``maps`` is False, per image
    ``maps/NAME.npy`` (float16, its own size, NaN where unseen) and ``overlays/NAME.png`` into ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder")
    model = Padim.load(model_path, device=device, progress=False)
    workers = decoding_workers(workers, model)
    files = list_images(paths, "images to score")
    sizes = check_images(files, model.config, model.image_size_)
    t, summary = _resolve_threshold(model, threshold, good, fpr, workers, progress)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".predict-"))
    try:
        rows = _score_into(stage, model, files, sizes, t, maps, workers, progress)
        summary |= {"model": str(model_path), "n_images": len(files), "config": model.config.to_dict(),
                    "n_anomalous": None if t is None else sum(r["anomalous"] == "yes" for r in rows)}  # fmt: skip
        write_json(stage / SUMMARY_FILE, summary)
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    return summary


def _score_into(stage: Path, model: Padim, files: list[Path], sizes: list[tuple[int, int]], t: float | None,
                maps: bool, workers: int, progress: bool | None) -> list[dict[str, Any]]:  # fmt: skip
    """Score ``files`` into the staging folder: maps and overlays as they come, ``scores.csv`` last."""
    names = output_names(files)
    rows: list[dict[str, Any]] = []
    i = 0
    for group_maps, group_scores in predict_files(model, files, workers, progress):
        for amap, score in zip(group_maps, group_scores):
            row: dict[str, Any] = {"path": str(files[i]), "score": float(score)}
            if t is not None:
                row["anomalous"] = "yes" if score > t else "no"
            rows.append(row)
            if maps:
                full = map_at_image_size(amap, *sizes[i], model.config)
                _write_npy(stage / MAPS_DIR / names[i].with_suffix(".npy"), full.astype(np.float16))
                lo, hi = (0.5 * t, 1.5 * t) if t is not None else (float(np.nanmin(full)), float(np.nanmax(full)))
                rgb = overlay(open_image(files[i]), full, t, lo, hi)
                _write_png(stage / OVERLAYS_DIR / names[i].with_suffix(".png"), rgb)
            i += 1
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "score": f"{r['score']:.6g}"} for r in rows)
    atomic_write(stage / SCORES_FILE, lambda fh: fh.write(buf.getvalue().encode()))
    return rows


def _publish(stage: Path, out: Path) -> None:
    """Move the finished outputs from ``stage`` into ``out``, replacing those of an earlier ``predict`` there
    (an earlier run's maps and overlays go too, so that ``out`` never mixes two runs)."""
    old = stage / ".replaced"
    old.mkdir()
    names, moved = (MAPS_DIR, OVERLAYS_DIR, SCORES_FILE, SUMMARY_FILE), []
    try:
        for name in names:
            if (out / name).exists():
                os.replace(out / name, old / name)
                moved.append(name)
        for name in names:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
    except BaseException:  # put the earlier outputs back before the staging folder is removed
        for name in moved:
            if not (out / name).exists():
                os.replace(old / name, out / name)
        raise
    shutil.rmtree(stage)
