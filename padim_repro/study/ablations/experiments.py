"""The ablation experiments of the paper (Defard et al., 2020) on one category, and over categories.

* ``n_features`` (Table II): d in {10, 25, 50, 100, 200, 448} channels, chosen at random, or by PCA to the same d,
  or all 448. The paper's d = 100 (``spread_d``) with 10 seeds (``SEEDS`` = 1024 .. 1033; 1024 is the seed of the
  main runs and of the public reproduction): the seed spread of the main runs; the other d with the first 3 of them
  (``other_seeds``), which bound the spread at a third of the cost (the paper averages 10 seeds at every d).
* ``pca`` (why Table II's PCA drop is not reproduced here): d = 100 principal components of largest or of smallest
  variance (Rippel et al., 2020, found the low-variance directions carry the anomaly signal), from one PCA of all
  positions pooled (the paper's) or one PCA per position, next to Rd100.
* ``layers`` (Table I): layer1, layer2 or layer3 alone, the three layers as three separate Gaussians whose
  Mahalanobis distances are summed, and the concatenation of all 448 channels.
* ``sigma``: the blur of the anomaly map, sigma in {0 (none), 1, 2, 4, 8, 16}, with R18-Rd100 (seed 1024).
* ``protocol``: the paper's preprocessing (resize 256, center crop 224) against resize 256 without crop
  (anomalib's: resize 256, crop 256), and the anomaly maps upsampled bicubically (the paper, as translated) against
  bilinearly (every reproduction), with R18-Rd100 (seed 1024), sigma 4.

Results go to ``RESULTS/ablations/EXPERIMENT.csv`` (one row per category x variant x seed x sigma) with its manifest
``EXPERIMENT.json`` (:class:`~padim_repro.study.rows.RowStore`); a category whose rows were computed from the same
settings, data, weights and code is read back unless forced.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...data import DataError, find_samples, list_categories
from ...features import select_channels
from ..identity import code_fingerprint, data_fingerprint, identity_key, sample_files
from ..provenance import provenance
from ..rows import RowStore
from .embeddings import CategoryEmbedder, log
from .variants import WORKERS, VariantRows
from .work import CategoryWork

EXPERIMENTS = ("n_features", "pca", "layers", "sigma", "protocol")
D_VALUES = (10, 25, 50, 100, 200, 448)
#: Seeds of the random channel subsets: 1024 (the main runs' seed) and the nine after it.
SEEDS = tuple(range(1024, 1034))
SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Parameters of each experiment and their defaults (the paper's values where it gives them).
EXPERIMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "n_features": {"d_values": D_VALUES, "seeds": SEEDS, "spread_d": 100, "other_seeds": SEEDS[:3], "sigma": 4.0,
                   "epsilon": 0.01},
    "pca": {"d": 100, "seed": 1024, "sigma": 4.0, "epsilon": 0.01},
    "layers": {"sigma": 4.0, "epsilon": 0.01},
    "sigma": {"sigmas": SIGMAS, "d": 100, "seed": 1024, "epsilon": 0.01},
    "protocol": {"d": 100, "seed": 1024, "sigma": 4.0, "epsilon": 0.01},
}
ABLATIONS_DIR = "ablations"
#: The study modules whose code computes the rows (with the method's, they enter every row's key).
CODE = ("study/ablations/embeddings.py", "study/ablations/variants.py", "study/ablations/work.py",
        "study/ablations/experiments.py")

#: An experiment's rows on one category and their bootstrap resamples (metric -> (rows, B), one row per row).
Rows = tuple[list[dict[str, Any]], dict[str, np.ndarray]]
COLUMNS = ["experiment", "category", "variant", "method", "d", "seed", "sigma", "protocol", "resize", "crop",
           "image_auroc", "pixel_auroc", "pro", "seconds", "seconds_linalg", "seconds_metrics", "n_train", "n_test",
           "embeddings_key", "weights_id"]  # fmt: skip


def n_features_category(work: CategoryWork, d_values: Sequence[int] = D_VALUES, seeds: Sequence[int] = SEEDS,
                        spread_d: int = 100, other_seeds: Sequence[int] = SEEDS[:3],
                        sigma: float = 4.0) -> Rows:  # fmt: skip
    """Table II on one category: all channels, random subsets of each d (one row per seed: ``seeds`` at
    ``spread_d``, ``other_seeds`` at the other d), PCA to each d.

    d values >= the number of channels are the "all" variant (for PCA too: a full rotation leaves Mahalanobis
    distances unchanged), computed once. Every variant is a sub-block of the one full covariance (PCA: of that
    covariance rotated into the pooled principal axes).
    """
    emb, n_ch = work.emb, work.emb.n_channels
    subset_ds = sorted({int(d) for d in d_values if d < n_ch})
    with VariantRows("n_features") as out:
        out.add(emb, work.channels, sigma, f"all{n_ch}", "all", d=n_ch)
        for d in subset_ds:
            for seed in seeds if d == spread_d else other_seeds:
                out.add(emb, lambda d=d, seed=seed: work.random(d, seed), sigma, f"Rd{d}", "random", d=d,
                        seed=int(seed))  # fmt: skip
        for d in subset_ds:
            out.add(emb, lambda d=d: work.pooled_pca(d), sigma, f"PCA{d}", "pca", d=d)
        return out.rows(), out.bootstrap


def pca_category(work: CategoryWork, d: int = 100, seed: int = 1024, sigma: float = 4.0) -> Rows:
    """The PCA probe on one category: the ``d`` components of largest or smallest variance, from the pooled PCA or
    one PCA per position, and the random subset Rd``d`` (seed ``seed``) they are compared with."""
    variants = [
        ("pooled, largest variance", "pca_pooled_top", lambda: work.pooled_pca(d, largest=True)),
        ("pooled, smallest variance", "pca_pooled_bottom", lambda: work.pooled_pca(d, largest=False)),
        ("per position, largest variance", "pca_position_top", lambda: work.position_pca(d, largest=True)),
        ("per position, smallest variance", "pca_position_bottom", lambda: work.position_pca(d, largest=False)),
        (f"Rd{d} (seed {seed})", "random", lambda: work.random(d, seed)),
    ]
    with VariantRows("pca") as out:
        for label, method, compute in variants:
            out.add(work.emb, compute, sigma, label, method, d=d, seed=seed if method == "random" else None)
        return out.rows(), out.bootstrap


def layers_category(work: CategoryWork, sigma: float = 4.0) -> Rows:
    """Table I on one category: each layer alone, the layers as separate Gaussians summed, all layers concatenated.

    Everything is on the first layer's grid: a coarser layer's embeddings there are its own nearest-upsampled,
    so each of its positions is repeated and gets the same Gaussian as on the layer's own grid; the distance map
    is then piecewise constant on the layer1 grid before the bilinear upsampling to the image. Each layer's
    Gaussian is a diagonal block of the concatenation's covariance. The summed variant adds the three layers'
    distance maps on that grid, then upsamples and blurs.
    """
    emb = work.emb
    with VariantRows("layers") as out:
        for layer in emb.layers:
            out.add(emb, lambda layer=layer: work.channels(emb.layer_block(layer)), sigma, f"{layer} only", "layer",
                    d=emb.layer_block(layer).numel())  # fmt: skip
        out.add(emb, work.channels, sigma, f"all{emb.n_channels} (concatenated)", "all", d=emb.n_channels)
        out.add(emb, lambda: torch.stack([work.channels(emb.layer_block(layer)) for layer in emb.layers]).sum(0),
                sigma, "separate Gaussians summed", "summed", d=emb.n_channels)  # fmt: skip
        rows = out.rows()
    order = ["layer", "summed", "all"]
    perm = sorted(range(len(rows)), key=lambda i: order.index(rows[i]["method"]))
    return [rows[i] for i in perm], {m: v[perm] for m, v in out.bootstrap.items()}


def sigma_category(work: CategoryWork, sigmas: Sequence[float] = SIGMAS, d: int = 100,
                   seed: int = 1024) -> Rows:  # fmt: skip
    """R18-Rd``d`` (one seed) with each blur sigma; the distance maps are computed once."""
    with VariantRows("sigma") as out:
        for s in sigmas:
            out.add(work.emb, lambda: work.random(d, seed), float(s), f"sigma {float(s):g}", "random", d=d, seed=seed)
        return out.rows(), out.bootstrap


def protocol_category(works: dict[str, CategoryWork], d: int = 100, seed: int = 1024,
                      sigma: float = 4.0) -> Rows:  # fmt: skip
    """R18-Rd``d`` (one seed) under each preprocessing protocol (``works``: protocol name -> its category work),
    and under the paper's preprocessing with the anomaly maps upsampled bicubically (protocol ``bicubic_maps``, what
    the one translation of the paper read offline says) instead of bilinearly (the method's and every public
    reproduction's): the same distances, only the upsampling differs."""
    with VariantRows("protocol") as out:
        for name, work in works.items():
            emb = work.emb
            out.add(emb, lambda work=work: work.random(d, seed), sigma, f"resize {emb.resize}, crop {emb.crop}",
                    "random", d=d, seed=seed, protocol=name)  # fmt: skip
        emb = works["paper"].emb
        out.add(emb, lambda: works["paper"].random(d, seed), sigma, f"resize {emb.resize}, crop {emb.crop}, "
                "bicubic maps", "random", upsample="bicubic", d=d, seed=seed, protocol="bicubic_maps")  # fmt: skip
        return out.rows(), out.bootstrap


def results_path(results_root: str | Path, experiment: str) -> Path:
    """``RESULTS/ablations/EXPERIMENT.csv``."""
    return Path(results_root) / ABLATIONS_DIR / f"{experiment}.csv"


def store(results_root: str | Path, experiment: str) -> RowStore:
    """The rows of ``experiment`` and their manifest."""
    return RowStore(Path(results_root) / ABLATIONS_DIR, experiment)


def load_results(results_root: str | Path, experiment: str) -> pd.DataFrame:
    """Every row of ``RESULTS/ablations/EXPERIMENT.csv`` (empty frame with the columns if absent)."""
    table = store(results_root, experiment).table()
    return table[COLUMNS] if len(table) else pd.DataFrame(columns=COLUMNS)


def protocols(resize: int = 256, crop: int = 224) -> dict[str, tuple[int, int]]:
    """The two preprocessing protocols compared: the paper's (resize, crop) and the same resize without crop."""
    return {"paper": (resize, crop), "no_crop": (resize, resize)}


def _checked_params(experiment: str, params: dict[str, Any]) -> dict[str, Any]:
    if experiment not in EXPERIMENT_DEFAULTS:
        raise ValueError(f"unknown experiment {experiment!r}; one of {EXPERIMENTS}")
    unknown = sorted(set(params) - set(EXPERIMENT_DEFAULTS[experiment]))
    if unknown:
        raise ValueError(f"unknown parameters for {experiment}: {unknown}")
    params = {**EXPERIMENT_DEFAULTS[experiment], **params}
    return {k: [float(v) if k == "sigmas" else int(v) for v in val] if isinstance(val, (list, tuple)) else val
            for k, val in params.items()}  # fmt: skip


def run_experiments(experiments: dict[str, dict[str, Any]], data_root: str | Path, weights: str,
                    categories: Sequence[str] | None = None, results_root: str | Path = "results",
                    device: str = "auto", force: bool = False, resize: int = 256, crop: int = 224,
                    batch_size: int = 8) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Run several experiments ({name: parameters overriding :data:`EXPERIMENT_DEFAULTS`}) on ``categories``
    (default: all present under ``data_root``) in one pass per category; returns each experiment's rows.

    Per category, the experiments whose rows were computed from the same parameters, data (every file's content),
    weights and code are read back (unless ``force``); the others share one backbone pass and one
    :class:`~padim_repro.study.ablations.work.CategoryWork` (each variant computed once), and each experiment's rows
    are stored as soon as they are computed.
    """
    experiments = {name: _checked_params(name, params) for name, params in experiments.items()}
    epsilons = {p["epsilon"] for p in experiments.values()}
    if len(epsilons) > 1:
        raise ValueError(f"experiments run together must share epsilon, got {sorted(epsilons)}")
    epsilon = epsilons.pop() if epsilons else 0.01
    present = list_categories(data_root)
    categories = list(categories) if categories else present
    missing = [c for c in categories if c not in present]
    if missing:
        raise DataError(f"categories {missing} not found under {data_root} (present: {', '.join(present)})")
    sizes = protocols(resize, crop) if "protocol" in experiments else {"paper": (resize, crop)}
    embedders = {name: CategoryEmbedder(data_root, weights, r, c, device=device, batch_size=batch_size)
                 for name, (r, c) in sizes.items()}  # fmt: skip
    stores, code = {name: store(results_root, name) for name in experiments}, code_fingerprint(CODE)
    t_all = time.perf_counter()
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in experiments}
    reused: dict[str, list[str]] = {name: [] for name in experiments}
    for category in categories:
        files = sample_files(find_samples(data_root, category, "train") + find_samples(data_root, category, "test"))
        data = data_fingerprint(data_root, files)
        described = {name: e.describe(category) for name, e in embedders.items()}
        keys, todo = {}, []
        for name, params in experiments.items():
            used = described if name == "protocol" else {"paper": described["paper"]}
            keys[name] = identity_key({"experiment": name, "params": params, "code": code, "data": data["sha256"],
                                       "embeddings": used}, 16)  # fmt: skip
            done = None if force else stores[name].done(category, keys[name])
            if done is None:
                todo.append(name)
            else:
                tables[name].append(done)
                reused[name].append(category)
                log(f"{name} {category}: reusing {len(done)} rows computed from the same inputs")
        if not todo:
            continue
        t0 = time.perf_counter()
        works = _works(todo, experiments, embedders, category, epsilon)
        t_emb = time.perf_counter() - t0
        for name in todo:
            t1 = time.perf_counter()
            params = {k: v for k, v in experiments[name].items() if k != "epsilon"}
            if name == "protocol":
                rows, resampled = protocol_category(works, **params)
            else:
                rows, resampled = {"n_features": n_features_category, "pca": pca_category, "layers": layers_category,
                                   "sigma": sigma_category}[name](works["paper"], **params)  # fmt: skip
            seconds = time.perf_counter() - t1
            tables[name].append(stores[name].put(
                category, keys[name], pd.DataFrame(rows, columns=COLUMNS), arrays=resampled, seconds=round(seconds, 1),
                embeddings_seconds=round(t_emb, 1), data=data, embeddings_key=described["paper"],
            ))  # fmt: skip
            log(f"{name} {category}: {len(rows)} variants in {seconds:.1f} s (backbone pass {t_emb:.1f} s, shared)")
        del works
    any_embedder = next(iter(embedders.values()))
    for name, params in experiments.items():
        stores[name].note(experiment=name, params=params, data_root=str(data_root), code=code,
                          weights={"spec": weights, "fingerprint": any_embedder.weights_id},
                          protocols={p: {"resize": r, "crop": c} for p, (r, c) in sizes.items()},
                          last_invocation={"categories": list(categories), "reused": reused[name],
                                           "seconds": round(time.perf_counter() - t_all, 1),
                                           "device": str(any_embedder.device), "workers": WORKERS,
                                           "load_average": [round(x, 2) for x in os.getloadavg()]},
                          **provenance())  # fmt: skip
    return {name: pd.concat(t, ignore_index=True)[COLUMNS] if t else pd.DataFrame(columns=COLUMNS)
            for name, t in tables.items()}  # fmt: skip


def _works(todo: Sequence[str], experiments: dict[str, dict[str, Any]], embedders: dict[str, CategoryEmbedder],
           category: str, epsilon: float) -> dict[str, CategoryWork]:  # fmt: skip
    """The category's backbone passes: all channels when a Table I/II or PCA experiment is to be computed, else only
    the random subset the sigma / protocol experiments study; for the protocol experiment, the no-crop pass too."""
    n_channels = embedders["paper"].extractor.n_channels
    subsets = {name: select_channels(n_channels, experiments[name]["d"], experiments[name]["seed"])
               for name in ("sigma", "protocol") if name in todo}  # fmt: skip
    distinct = {tuple(s.tolist()) for s in subsets.values()}
    full = bool({"n_features", "pca", "layers"} & set(todo)) or len(distinct) > 1
    works = {"paper": CategoryWork(embedders["paper"].embed(category, None if full else next(iter(subsets.values()))),
                                   epsilon)}  # fmt: skip
    if "protocol" in todo:
        works["no_crop"] = CategoryWork(embedders["no_crop"].embed(category, subsets["protocol"]), epsilon)
    return works


def run_experiment(experiment: str, data_root: str | Path, weights: str, categories: Sequence[str] | None = None,
                   results_root: str | Path = "results", device: str = "auto", force: bool = False,
                   resize: int = 256, crop: int = 224, batch_size: int = 8, **params: Any) -> pd.DataFrame:  # fmt: skip
    """One experiment of :func:`run_experiments` (``params`` override its :data:`EXPERIMENT_DEFAULTS`)."""
    return run_experiments({experiment: params}, data_root, weights, categories, results_root, device, force,
                           resize, crop, batch_size)[experiment]  # fmt: skip
