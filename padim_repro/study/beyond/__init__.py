"""Experiments beyond the paper's main tables, each an executed notebook of the book (``make beyond``).

1. ``nonaligned``: PaDiM on non-aligned MVTec AD (the paper's Table VI protocol,
   :mod:`padim_repro.study.beyond.nonaligned`), three seeded versions of the data, against the aligned protocol.
2. ``efficientnet``: PaDiM with an ImageNet EfficientNet backbone (the paper's best image-level model uses
   EfficientNet-B5, not available offline; here EfficientNet-Lite0, :mod:`padim_repro.backbones`) beside
   PaDiM-R18-Rd100.
3. ``magnetic_tile``: PaDiM-R18-Rd100 on the Magnetic Tile Defect dataset
   (:mod:`~padim_repro.study.beyond.magnetic_tile`), a second real dataset with pixel masks, overall and per defect
   type.

Each experiment function does the heavy work once and keeps its results as CSV files under ``RESULTS/beyond/``
(with a JSON of its configuration, timings and provenance): called again it only reads them back, unless
``force``. The non-aligned experiment also resumes after an interruption (one row per finished run). Aligned
ResNet-18 and EfficientNet runs are ordinary runs of :func:`padim_repro.study.runs.run_or_load`, shared with
``make reproduce`` (same folders, same cache). :func:`run_beyond` executes the three notebooks with papermill
into ``book/beyond/``.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..notebooks import default_book_dir, execute, from_repo
from .common import BEYOND
from .nonaligned import NONALIGNED_SEEDS

#: Experiment name -> notebook (``notebooks/NAME.ipynb``, executed into ``book/beyond/NAME.ipynb``).
NOTEBOOKS = {"nonaligned": "beyond_nonaligned", "efficientnet": "beyond_efficientnet",
             "magnetic_tile": "beyond_magnetic_tile"}  # fmt: skip


def run_beyond(data_root: str | Path, results_root: str | Path, weights_r18: str, book_dir: str | Path | None = None,
               force: bool = False, mt_root: str | Path | None = None,
               experiments: Sequence[str] = tuple(NOTEBOOKS), categories: Sequence[str] | str | None = None,
               seeds: Sequence[int] = NONALIGNED_SEEDS, device: str = "auto",
               effnet_weights: str | None = None, effnet_d: Sequence[int | None] = (100, 0),
               extra_parameters: dict[str, Any] | None = None, pages: bool = True) -> dict[str, str]:  # fmt: skip
    """Execute the notebooks of ``experiments`` into ``BOOK_DIR/beyond/NAME.ipynb``; returns name -> status.

    ``pages=False`` computes and stores each experiment's results (:func:`compute`) without executing its notebook:
    no papermill needed (``bench/check_cuda.py`` on a GPU machine).

    ``mt_root`` defaults to ``magnetic_tile`` beside ``data_root``. An experiment whose data is absent is not run
    (status says why); one that fails does not stop the others (status ``failed: ...``). ``extra_parameters`` are
    passed to every notebook (the tests use them to shrink images).
    """
    unknown = sorted(set(experiments) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {list(NOTEBOOKS)}")
    data_root, results_root = Path(data_root), Path(results_root)
    mt_root = Path(mt_root) if mt_root else data_root.parent / "magnetic_tile"
    cats = ",".join(categories) if isinstance(categories, (list, tuple)) else (categories or "")
    common = {"results_root": from_repo(results_root), "weights": weights_r18 if weights_r18 in ("tv_in1k", "none")
              else from_repo(weights_r18), "device": device, "force": force, **(extra_parameters or {})}  # fmt: skip
    params = {
        "nonaligned": {"data_root": from_repo(data_root), "categories": cats, "seeds": ",".join(map(str, seeds))},
        "efficientnet": {"data_root": from_repo(data_root), "categories": cats, "effnet_weights": effnet_weights or "",
                         "effnet_d": ",".join("0" if d is None else str(d) for d in effnet_d)},
        "magnetic_tile": {"mt_root": from_repo(mt_root)},
    }  # fmt: skip
    status: dict[str, str] = {}
    book = Path(book_dir) if book_dir else default_book_dir(results_root)
    for name in experiments:
        root = mt_root if name == "magnetic_tile" else data_root
        if not root.is_dir():
            status[name] = f"not run: data absent ({root} does not exist)"
            print(f"{name}: {status[name]}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        try:
            if pages:
                execute(NOTEBOOKS[name], book / BEYOND / f"{NOTEBOOKS[name]}.ipynb",
                        {**common, **params[name]})  # fmt: skip
            else:
                compute(name, {**common, **params[name]})
            status[name] = "ran"
        except Exception as exc:  # one failing experiment must not stop the others
            status[name] = f"failed: {type(exc).__name__}: {exc}"[:2000]
            traceback.print_exc()
        print(f"{name}: {status[name]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return status


def compute(name: str, p: dict[str, Any]) -> Any:
    """The results of experiment ``name`` from its notebook's parameters ``p`` (the call its notebook makes)."""
    shape = {k: p[k] for k in ("resize", "crop", "batch_size") if k in p}
    common = {"force": p["force"], "device": p["device"]}
    if name == "nonaligned":
        from .nonaligned import nonaligned_experiment

        seeds = [int(s) for s in str(p["seeds"]).split(",") if s.strip()]
        return nonaligned_experiment(p["data_root"], p["results_root"], p["weights"], p["categories"] or None, seeds,
                                     **common, **shape)  # fmt: skip
    if name == "efficientnet":
        from .efficientnet import efficientnet_experiment

        d_list = [int(d) for d in str(p["effnet_d"]).split(",") if d.strip()]
        return efficientnet_experiment(p["data_root"], p["results_root"], p["weights"], p["effnet_weights"] or None,
                                       None, d_list, p["categories"] or None, **common, **shape)  # fmt: skip
    from .magnetic_tile import magnetic_tile_experiment

    return magnetic_tile_experiment(p["mt_root"], p["results_root"], p["weights"], size=p.get("size", 224), **common,
                                    **{k: v for k, v in shape.items() if k == "batch_size"})  # fmt: skip
