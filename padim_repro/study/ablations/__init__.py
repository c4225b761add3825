"""Ablations of the paper (Defard et al., 2020): its Tables I and II, its choice sigma = 4, and the preprocessing.

Four experiments, all with ResNet-18, all three metrics, every category asked for:

* ``n_features`` (Table II): d in {10, 25, 50, 100, 200, 300, 448} channels, chosen at random with 10 seeds
  (``SEEDS`` = 1024 .. 1033; 1024 is the seed of the main runs and of the public reproduction), or by PCA to the
  same d, or all 448.
* ``layers`` (Table I): layer1, layer2 or layer3 alone, the three layers as three separate Gaussians whose
  Mahalanobis distances are summed, and the concatenation of all 448 channels.
* ``sigma``: the blur of the anomaly map, sigma in {0 (none), 1, 2, 4, 8, 16}, with R18-Rd100 (seed 1024).
* ``protocol``: the paper's preprocessing (resize 256, center crop 224) against resize 256 without crop
  (anomalib's: resize 256, crop 256), with R18-Rd100 (seed 1024), sigma 4.

The package is split by concern: :mod:`.cache` (backbone embeddings computed once per category),
:mod:`.variants` (every variant's Gaussians and distance maps through the method's own Eq. 1 and Eq. 2),
:mod:`.experiments` (the four experiments, resumable CSV rows), :mod:`.tables` and :mod:`.figures` (what the
notebooks show), and :func:`run_ablations` (the four notebooks, ``make ablations``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...backbones import build_backbone
from ...data import DataError, list_categories
from ..notebooks import execute, from_repo
from .cache import BACKBONE, DEFAULT_CACHE, LAYERS, EmbeddingCache, Embeddings, log
from .experiments import ABLATIONS_DIR, EXPERIMENTS, load_results, results_path, run_experiment
from .figures import plot_layers, plot_n_features, plot_protocol, plot_sigma
from .tables import (
    comparison_table,
    n_features_summary,
    paper_rd100_reference,
    per_category_table,
    protocol_table,
    seed_spread,  # fmt: skip
    sigma_table,
    timing_summary,
)

#: The notebooks that run the experiments, in the order :func:`run_ablations` executes them.
NOTEBOOKS = tuple(f"ablation_{name}" for name in EXPERIMENTS)
BOOK_ABLATIONS = Path("book") / "ablations"

__all__ = [
    "EmbeddingCache", "Embeddings", "comparison_table", "load_results", "n_features_summary", "paper_rd100_reference",
    "per_category_table", "plot_layers", "plot_n_features", "plot_protocol", "plot_sigma", "protocol_table",
    "results_path", "run_ablations", "run_experiment", "seed_spread", "sigma_table", "timing_summary",
]  # fmt: skip


def run_ablations(
    data_root: str | Path,
    results_root: str | Path,
    weights: str,
    categories: Sequence[str] | None = None,
    book_dir: str | Path = "book",
    force: bool = False,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    extra_parameters: dict[str, Any] | None = None,
) -> list[Path]:
    """Execute the four ablation notebooks into ``BOOK_DIR/ablations/NAME.ipynb``; returns their paths.

    Resumable: a notebook whose categories already have rows with the same data, weights and parameters in
    ``RESULTS/ablations/EXPERIMENT.csv`` only reads them back (unless ``force``), and the embeddings and
    distance maps are cached under ``cache_dir`` (default ``.cache/embeddings``). ``extra_parameters`` go to
    every notebook (the tests use them to shrink the images).
    """
    present = list_categories(data_root)  # DataError naming the folder when it is missing
    missing = [c for c in categories or [] if c not in present]
    if missing:
        raise DataError(f"categories {missing} not found under {data_root} (present: {', '.join(present) or 'none'})")
    build_backbone(BACKBONE, LAYERS, weights, seed=1024)  # WeightsError with the reason before any notebook runs
    spec = from_repo(weights) if Path(weights).is_file() else weights
    params = {
        "categories": list(categories) if categories else None,
        "data_root": from_repo(data_root),
        "weights": spec,
        "results_root": from_repo(results_root),
        "cache_dir": from_repo(cache_dir if cache_dir is not None else DEFAULT_CACHE),
        "device": device,
        "force": bool(force),
        **(extra_parameters or {}),
    }
    out = []
    t_all = time.perf_counter()
    for name in NOTEBOOKS:
        t0 = time.perf_counter()
        out.append(execute(name, Path(book_dir) / ABLATIONS_DIR / f"{name}.ipynb", params))
        log(f"{name}: executed in {time.perf_counter() - t0:.0f} s -> {out[-1]}")
    log(f"ablations: {len(out)} notebooks in {(time.perf_counter() - t_all) / 60:.1f} min")
    return out
