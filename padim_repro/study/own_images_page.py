"""The how-to page "PaDiM on your own images" (``notebooks/own_images.ipynb``), executed on Magnetic Tile.

The page runs the two commands a user runs, :func:`~padim_repro.study.own_images.fit_folder` and
:func:`~padim_repro.study.own_images.predict_folder`, on lists of files, and, because Magnetic Tile has masks,
scores what they wrote (the maps at each image's own size, read back from ``maps/*.npy``) with the method's metrics:
each map and mask brought to one evaluation size (maps bilinear, masks nearest, a defect pixel above 127 as in
:mod:`~padim_repro.study.beyond.magnetic_tile`), so that variants of different input sizes are compared on the same
pixels. Nothing is reused: executing the page computes everything again.

Produce the page (about 15 min on 2 CPU cores for the whole split, longer with tiles):
``python -m padim_repro.study.own_images_page --mt-root ../shared/magnetic_tile --weights WEIGHTS`` (``make howto``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PadimConfig
from ..data import Sample, mask_defects, open_image, resize_mask
from ..metrics import evaluate
from .beyond.magnetic_tile import MASK_THRESHOLD, split_samples
from .own_images import MAPS_DIR, SCORES_FILE, fit_folder, output_names, predict_folder

#: Where the page lands in the book.
PAGE = Path("howto") / "own_images.ipynb"


@dataclass
class Split:
    """Files to fit on, files to score (with labels, defect types and mask paths), normal files for the threshold."""

    train: list[Path]
    test: list[Sample]
    good: list[Path]


def _thin(items: list, limit: int) -> list:
    """Every k-th item so that at most ``limit`` remain (all when ``limit`` is 0), spread over the list."""
    if not limit or len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def magnetic_tile_split(root: str | Path, limit: int = 0, seed: int = 0) -> Split:
    """The seeded split of :func:`~padim_repro.study.beyond.magnetic_tile.split_samples`; the threshold's normal
    images are the test set's defect-free ones (so the false-positive rate asked for is the test set's).
    ``limit``: at most that many training images and test images of each kind (good / defective), for a quick run."""
    split = split_samples(root, seed)
    good = [s for s in split.test if s.label == 0]
    bad = [s for s in split.test if s.label == 1]
    test = _thin(good, limit) + _thin(bad, limit)
    return Split([s.image_path for s in _thin(split.train, limit)], test, [s.image_path for s in _thin(good, limit)])


def run_variant(name: str, config: PadimConfig, split: Split, out_dir: str | Path, fpr: float = 0.05,
                progress: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """``fit`` on ``split.train`` then ``predict`` on ``split.test`` (threshold at ``fpr`` on ``split.good``), into
    ``out_dir/NAME``; returns the variant's timings and paths."""
    out = Path(out_dir) / name
    t0 = time.perf_counter()
    fit_folder(split.train, out / "model.pt", config, progress=progress)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = predict_folder([s.image_path for s in split.test], out / "model.pt", out / "predict", good=split.good,
                             fpr=fpr, progress=progress)  # fmt: skip
    return {"variant": name, "out": out / "predict", "fit_s": fit_s, "predict_s": time.perf_counter() - t0,
            "threshold": summary["threshold"], "config": config}  # fmt: skip


def read_scores(out: str | Path) -> dict[str, float]:
    """{path: score} of a ``predict`` output folder's ``scores.csv``."""
    with open(Path(out) / SCORES_FILE) as fh:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(fh)}


def evaluate_variant(out: str | Path, samples: Sequence[Sample], size: int) -> dict[str, Any]:
    """The method's metrics (:func:`~padim_repro.metrics.evaluate`) of a ``predict`` output on ``samples``, maps
    (``maps/*.npy``) and masks brought to ``size`` x ``size``."""
    out = Path(out)
    scores = read_scores(out)
    names = output_names([s.image_path for s in samples])
    maps = np.empty((len(samples), size, size), np.float32)
    masks = np.zeros((len(samples), size, size), bool)
    for i, (s, name) in enumerate(zip(samples, names)):
        amap = torch.from_numpy(np.load(out / MAPS_DIR / name.with_suffix(".npy")).astype(np.float32))
        maps[i] = F.interpolate(amap[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        if s.mask_path is not None:
            masks[i] = mask_defects(resize_mask(open_image(s.mask_path, mask=True), (size, size)), MASK_THRESHOLD)
    return evaluate(maps, masks, np.array([scores[str(s.image_path)] for s in samples]),
                    np.array([s.label for s in samples]), [s.defect_type for s in samples])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Execute the page into ``BOOK_DIR/howto/own_images.ipynb``."""
    from .notebooks import execute, from_repo

    ap = argparse.ArgumentParser(description="execute the how-to page 'PaDiM on your own images' on Magnetic Tile")
    ap.add_argument("--mt-root", default="../shared/magnetic_tile")
    ap.add_argument("--weights", default="tv_in1k")
    ap.add_argument("--results", default="results", help="the commands' outputs go to RESULTS/howto/own_images")
    ap.add_argument("--book-dir", default="book")
    ap.add_argument("--limit", type=int, default=0, help="at most N images per part (0: the whole split)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    params = {"mt_root": from_repo(args.mt_root), "weights": args.weights, "limit": args.limit,
              "out_dir": from_repo(Path(args.results) / "howto" / "own_images"), "device": args.device}  # fmt: skip
    if Path(args.weights).exists():
        params["weights"] = from_repo(args.weights)
    page = execute("own_images", Path(args.book_dir) / PAGE, params)
    print(f"executed notebook: {page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
