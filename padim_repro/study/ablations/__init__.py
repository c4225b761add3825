"""Ablations of the paper (Defard et al., 2020): its Tables I and II, its choice sigma = 4, the preprocessing, and
a probe of its PCA result; all with ResNet-18, all three metrics, every category asked for (the five experiments
are described in :mod:`~padim_repro.study.ablations.experiments`).

Split by concern:

* :mod:`~padim_repro.study.ablations.embeddings`: one category through the backbone, into the method's Gaussian
  accumulator;
* :mod:`~padim_repro.study.ablations.variants`: a variant's precisions and distance maps through the method's own
  Eq. 1 and Eq. 2;
* :mod:`~padim_repro.study.ablations.work`: one category's variants, each computed once for every experiment;
* :mod:`~padim_repro.study.ablations.experiments`: the experiments, with keyed, resumable rows;
* :mod:`~padim_repro.study.ablations.tables` and :mod:`~padim_repro.study.ablations.figures`: what the notebooks show;
* :func:`run_ablations`: every experiment in one pass per category, then one notebook each (``make ablations``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...backbones import build_backbone
from ...data import DataError, list_categories
from ..notebooks import default_book_dir, execute, from_repo
from .embeddings import BACKBONE, LAYERS, CategoryEmbedder, Embeddings, log
from .experiments import (
    ABLATIONS_DIR,
    EXPERIMENT_DEFAULTS,
    EXPERIMENTS,
    load_results,
    results_path,
    run_experiment,  # fmt: skip
    run_experiments,
)
from .figures import plot_layers, plot_n_features, plot_protocol, plot_sigma
from .tables import (
    comparison_table,
    n_features_summary,
    paper_rd100_reference,
    pca_table,
    per_category_table,
    protocol_table,
    seed_spread,
    sigma_table,
    timing_summary,
)

#: The notebooks that run the experiments, in the order :func:`run_ablations` executes them.
NOTEBOOKS = tuple(f"ablation_{name}" for name in EXPERIMENTS)
BOOK_ABLATIONS = Path("book") / "ablations"

__all__ = [
    "CategoryEmbedder", "Embeddings", "comparison_table", "load_results", "n_features_summary", "paper_rd100_reference",
    "pca_table",
    "per_category_table", "plot_layers", "plot_n_features", "plot_protocol", "plot_sigma", "protocol_table",
    "results_path", "run_ablations", "run_experiment", "run_experiments", "seed_spread", "sigma_table",
    "timing_summary",
]  # fmt: skip


def run_ablations(
    data_root: str | Path,
    results_root: str | Path,
    weights: str,
    categories: Sequence[str] | None = None,
    book_dir: str | Path | None = None,
    force: bool = False,
    device: str = "auto",
    extra_parameters: dict[str, Any] | None = None,
    pages: bool = True,
) -> list[Path]:
    """Execute the ablation notebooks into ``BOOK_DIR/ablations/NAME.ipynb``; returns their paths (none when
    ``pages`` is False: the rows are computed and stored, no notebook is executed, no papermill needed).

    Resumable: a notebook whose categories already have rows computed from the same settings, data, weights and
    code in ``RESULTS/ablations/EXPERIMENT.csv`` only reads them back (unless ``force``). ``extra_parameters`` go to
    every notebook (the tests use them to shrink the images).
    """
    present = list_categories(data_root)  # DataError naming the folder when it is missing
    missing = [c for c in categories or [] if c not in present]
    if missing:
        raise DataError(f"categories {missing} not found under {data_root} (present: {', '.join(present) or 'none'})")
    build_backbone(BACKBONE, LAYERS, weights, seed=1024)  # WeightsError with the reason before any notebook runs
    extra = dict(extra_parameters or {})
    common = {k: extra.pop(k) for k in ("resize", "crop", "batch_size") if k in extra}
    t_all = time.perf_counter()
    # Every experiment in one pass per category (shared backbone pass and variants); the notebooks then read back.
    run_experiments({name: {k: v for k, v in extra.items() if k in EXPERIMENT_DEFAULTS[name]} for name in EXPERIMENTS},
                    data_root, weights, categories, results_root, device, force, **common)  # fmt: skip
    log(f"ablations: rows of every experiment in {(time.perf_counter() - t_all) / 60:.1f} min")
    if not pages:
        return []
    spec = from_repo(weights) if Path(weights).is_file() else weights
    params = {"categories": list(categories) if categories else None, "data_root": from_repo(data_root),
              "weights": spec, "results_root": from_repo(results_root), "device": device, "force": False,
              **common, **extra}  # fmt: skip
    out, pages = [], Path(book_dir) if book_dir else default_book_dir(results_root)
    for name in NOTEBOOKS:
        t0 = time.perf_counter()
        out.append(execute(name, pages / ABLATIONS_DIR / f"{name}.ipynb", params))
        log(f"{name}: executed in {time.perf_counter() - t0:.0f} s -> {out[-1]}")
    log(f"ablations: {len(out)} notebooks in {(time.perf_counter() - t_all) / 60:.1f} min")
    return out
