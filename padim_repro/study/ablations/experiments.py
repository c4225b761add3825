"""The ablation experiments of the paper (Defard et al., 2020) on one category, and over categories.

* ``n_features`` (Table II): d in {10, 25, 50, 100, 200, 300, 448} channels, chosen at random with 10 seeds
  (``SEEDS`` = 1024 .. 1033; 1024 is the seed of the main runs and of the public reproduction), or by PCA to the
  same d, or all 448.
* ``pca`` (why Table II's PCA drop is not reproduced here): d = 100 principal components of largest or of smallest
  variance (Rippel et al., 2020, found the low-variance directions carry the anomaly signal), from one PCA of all
  positions pooled (the paper's) or one PCA per position, next to Rd100.
* ``layers`` (Table I): layer1, layer2 or layer3 alone, the three layers as three separate Gaussians whose
  Mahalanobis distances are summed, and the concatenation of all 448 channels.
* ``sigma``: the blur of the anomaly map, sigma in {0 (none), 1, 2, 4, 8, 16}, with R18-Rd100 (seed 1024).
* ``protocol``: the paper's preprocessing (resize 256, center crop 224) against resize 256 without crop
  (anomalib's: resize 256, crop 256), with R18-Rd100 (seed 1024), sigma 4.

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

import pandas as pd
import torch

from ...data import DataError, find_samples, list_categories
from ...features import select_channels
from ..identity import code_fingerprint, data_fingerprint, identity_key, sample_files
from ..provenance import provenance
from ..rows import RowStore
from .embeddings import CategoryEmbedder, Embeddings, log
from .variants import WORKERS, VariantRows, position_axes, principal_axes, variant_distances

EXPERIMENTS = ("n_features", "pca", "layers", "sigma", "protocol")
D_VALUES = (10, 25, 50, 100, 200, 300, 448)
#: Seeds of the random channel subsets: 1024 (the main runs' seed) and the nine after it.
SEEDS = tuple(range(1024, 1034))
SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Parameters of each experiment and their defaults (the paper's values where it gives them).
EXPERIMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "n_features": {"d_values": D_VALUES, "seeds": SEEDS, "sigma": 4.0, "epsilon": 0.01},
    "pca": {"d": 100, "seed": 1024, "sigma": 4.0, "epsilon": 0.01},
    "layers": {"sigma": 4.0, "epsilon": 0.01},
    "sigma": {"sigmas": SIGMAS, "d": 100, "seed": 1024, "epsilon": 0.01},
    "protocol": {"d": 100, "seed": 1024, "sigma": 4.0, "epsilon": 0.01},
}
ABLATIONS_DIR = "ablations"
#: The study modules whose code computes the rows (with the method's, they enter every row's key).
CODE = ("study/ablations/embeddings.py", "study/ablations/variants.py", "study/ablations/experiments.py")

COLUMNS = ["experiment", "category", "variant", "method", "d", "seed", "sigma", "protocol", "resize", "crop",
           "image_auroc", "pixel_auroc", "pro", "seconds", "seconds_linalg", "seconds_metrics", "n_train", "n_test",
           "embeddings_key", "weights_id"]  # fmt: skip


def n_features_category(emb: Embeddings, d_values: Sequence[int] = D_VALUES, seeds: Sequence[int] = SEEDS,
                        sigma: float = 4.0, epsilon: float = 0.01) -> list[dict[str, Any]]:  # fmt: skip
    """Table II on one category: all channels, random subsets of each d (one row per seed), PCA to each d.

    d values >= the number of channels are the "all" variant (for PCA too: a full rotation leaves Mahalanobis
    distances unchanged), computed once. Every variant indexes or projects the one full covariance.
    """
    g, n_ch = emb.gaussians, emb.n_channels
    subset_ds = sorted({int(d) for d in d_values if d < n_ch})
    axes = principal_axes(g) if subset_ds else None
    with VariantRows("n_features") as out:
        out.add(emb, lambda: variant_distances(g, emb.test, epsilon=epsilon), sigma, f"all{n_ch}", "all", d=n_ch)
        for d in subset_ds:
            for seed in seeds:
                idx = select_channels(n_ch, d, seed)
                out.add(emb, lambda idx=idx: variant_distances(g, emb.test, idx, epsilon=epsilon), sigma, f"Rd{d}",
                        "random", d=d, seed=int(seed))  # fmt: skip
        for d in subset_ds:
            out.add(emb, lambda d=d: variant_distances(g, emb.test, projection=axes[:, :d], epsilon=epsilon), sigma,
                    f"PCA{d}", "pca", d=d)  # fmt: skip
        return out.rows()


def pca_category(emb: Embeddings, d: int = 100, seed: int = 1024, sigma: float = 4.0,
                 epsilon: float = 0.01) -> list[dict[str, Any]]:  # fmt: skip
    """The PCA probe on one category: the ``d`` components of largest or smallest variance, from the pooled PCA or
    one PCA per position, and the random subset Rd``d`` (seed ``seed``) they are compared with."""
    g = emb.gaussians
    axes = principal_axes(g)
    top, bottom = position_axes(g, d, largest=True), position_axes(g, d, largest=False)
    variants = [
        ("pooled, largest variance", "pca_pooled_top", lambda: variant_distances(g, emb.test, projection=axes[:, :d],
                                                                                  epsilon=epsilon)),
        ("pooled, smallest variance", "pca_pooled_bottom", lambda: variant_distances(
            g, emb.test, projection=axes[:, -d:], epsilon=epsilon)),
        ("per position, largest variance", "pca_position_top", lambda: variant_distances(
            g, emb.test, projection=top, epsilon=epsilon)),
        ("per position, smallest variance", "pca_position_bottom", lambda: variant_distances(
            g, emb.test, projection=bottom, epsilon=epsilon)),
        (f"Rd{d} (seed {seed})", "random", lambda: variant_distances(
            g, emb.test, select_channels(emb.n_channels, d, seed), epsilon=epsilon)),
    ]  # fmt: skip
    with VariantRows("pca") as out:
        for label, method, compute in variants:
            out.add(emb, compute, sigma, label, method, d=d, seed=seed if method == "random" else None)
        return out.rows()


def layers_category(emb: Embeddings, sigma: float = 4.0, epsilon: float = 0.01) -> list[dict[str, Any]]:
    """Table I on one category: each layer alone, the layers as separate Gaussians summed, all layers concatenated.

    Everything is on the first layer's grid: a coarser layer's embeddings there are its own nearest-upsampled,
    so each of its positions is repeated and gets the same Gaussian as on the layer's own grid; the distance map
    is then piecewise constant on the layer1 grid before the bilinear upsampling to the image. Each layer's
    Gaussian is a diagonal block of the concatenation's covariance. The summed variant adds the three layers'
    distance maps on that grid, then upsamples and blurs.
    """
    g = emb.gaussians
    with VariantRows("layers") as out:
        jobs = [out.add(emb, lambda layer=layer: variant_distances(g, emb.test, emb.layer_block(layer),
                                                                   epsilon=epsilon),
                        sigma, f"{layer} only", "layer", d=emb.layer_block(layer).numel())
                for layer in emb.layers]  # fmt: skip
        out.add(emb, lambda: variant_distances(g, emb.test, epsilon=epsilon), sigma,
                f"all{emb.n_channels} (concatenated)", "all", d=emb.n_channels)  # fmt: skip
        # Queued after the three layers' jobs: by the time a worker picks it up they have all started.
        out.add(emb, lambda: torch.stack([j.result()[0] for j in jobs]).sum(0), sigma, "separate Gaussians summed",
                "summed", d=emb.n_channels)  # fmt: skip
        rows = out.rows()
    order = ["layer", "summed", "all"]
    return sorted(rows, key=lambda r: order.index(r["method"]))


def sigma_category(emb: Embeddings, sigmas: Sequence[float] = SIGMAS, d: int = 100, seed: int = 1024,
                   epsilon: float = 0.01) -> list[dict[str, Any]]:  # fmt: skip
    """R18-Rd``d`` (one seed) with each blur sigma; the distance maps are computed once."""
    dist = variant_distances(emb.gaussians, emb.test, epsilon=epsilon, workers=WORKERS)
    with VariantRows("sigma") as out:
        for s in sigmas:
            out.add(emb, dist, float(s), f"sigma {float(s):g}", "random", d=d, seed=seed)
        return out.rows()


def protocol_category(embs: dict[str, Embeddings], d: int = 100, seed: int = 1024, sigma: float = 4.0,
                      epsilon: float = 0.01) -> list[dict[str, Any]]:  # fmt: skip
    """R18-Rd``d`` (one seed) under each preprocessing protocol (``embs``: protocol name -> embeddings)."""
    with VariantRows("protocol") as out:
        for name, emb in embs.items():
            out.add(emb, lambda emb=emb: variant_distances(emb.gaussians, emb.test, epsilon=epsilon), sigma,
                    f"resize {emb.resize}, crop {emb.crop}", "random", d=d, seed=seed, protocol=name)  # fmt: skip
        return out.rows()


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


def _channels(experiment: str, params: dict[str, Any], n_channels: int) -> torch.Tensor | None:
    """The channels an experiment's Gaussians need: all, or only the random subset it studies."""
    return select_channels(n_channels, params["d"], params["seed"]) if experiment in ("sigma", "protocol") else None


def run_experiment(
    experiment: str,
    data_root: str | Path,
    weights: str,
    categories: Sequence[str] | None = None,
    results_root: str | Path = "results",
    device: str = "auto",
    force: bool = False,
    resize: int = 256,
    crop: int = 224,
    batch_size: int = 32,
    **params: Any,
) -> pd.DataFrame:
    """Run ``experiment`` on ``categories`` (default: all present under ``data_root``); return their rows.

    ``params`` override :data:`EXPERIMENT_DEFAULTS` (e.g. ``d_values``, ``seeds``, ``sigmas``). A category whose
    rows were computed from the same parameters, data (every file's content), weights and code is read back unless
    ``force``; each category's rows are stored as soon as they are computed.
    """
    if experiment not in EXPERIMENT_DEFAULTS:
        raise ValueError(f"unknown experiment {experiment!r}; one of {EXPERIMENTS}")
    unknown = sorted(set(params) - set(EXPERIMENT_DEFAULTS[experiment]))
    if unknown:
        raise ValueError(f"unknown parameters for {experiment}: {unknown}")
    params = {**EXPERIMENT_DEFAULTS[experiment], **params}
    params = {k: [float(v) if k == "sigmas" else int(v) for v in val] if isinstance(val, (list, tuple)) else val
              for k, val in params.items()}  # fmt: skip
    present = list_categories(data_root)
    categories = list(categories) if categories else present
    missing = [c for c in categories if c not in present]
    if missing:
        raise DataError(f"categories {missing} not found under {data_root} (present: {', '.join(present)})")
    sizes = protocols(resize, crop) if experiment == "protocol" else {"paper": (resize, crop)}
    embedders = {name: CategoryEmbedder(data_root, weights, r, c, device=device, batch_size=batch_size)
                 for name, (r, c) in sizes.items()}  # fmt: skip
    rows_store, code = store(results_root, experiment), code_fingerprint(CODE)
    t_all, tables, reused = time.perf_counter(), [], []
    for category in categories:
        files = sample_files(find_samples(data_root, category, "train") + find_samples(data_root, category, "test"))
        data = data_fingerprint(data_root, files)
        identity = {"experiment": experiment, "params": params, "code": code, "data": data["sha256"],
                    "embeddings": {name: e.describe(category) for name, e in embedders.items()}}  # fmt: skip
        run_key = identity_key(identity, 16)
        done = None if force else rows_store.done(category, run_key)
        if done is not None:
            log(f"{experiment} {category}: reusing {len(done)} rows computed from the same inputs")
            tables.append(done)
            reused.append(category)
            continue
        t0 = time.perf_counter()
        embs = {name: e.embed(category, _channels(experiment, params, e.extractor.n_channels))
                for name, e in embedders.items()}  # fmt: skip
        t_emb = time.perf_counter() - t0
        main = embs["paper"]
        if experiment == "protocol":
            rows = protocol_category(embs, **params)
        else:
            rows = {"n_features": n_features_category, "pca": pca_category, "layers": layers_category,
                    "sigma": sigma_category}[experiment](main, **params)  # fmt: skip
        del embs, main
        seconds = time.perf_counter() - t0
        tables.append(rows_store.put(
            category, run_key, pd.DataFrame(rows, columns=COLUMNS), seconds=round(seconds, 1),
            embeddings_seconds=round(t_emb, 1), data=data, embeddings_key=identity["embeddings"]["paper"],
        ))  # fmt: skip
        log(f"{experiment} {category}: {len(rows)} variants in {seconds:.1f} s (embeddings {t_emb:.1f} s)")
    any_embedder = next(iter(embedders.values()))
    rows_store.note(experiment=experiment, params=params, data_root=str(data_root), weights={
        "spec": weights, "fingerprint": any_embedder.weights_id}, code=code,
        protocols={name: {"resize": r, "crop": c} for name, (r, c) in sizes.items()},
        last_invocation={"categories": list(categories), "reused": reused,
                         "seconds": round(time.perf_counter() - t_all, 1),
                         "device": str(any_embedder.device), "workers": WORKERS,
                         "load_average": [round(x, 2) for x in os.getloadavg()]}, **provenance())  # fmt: skip
    return pd.concat(tables, ignore_index=True)[COLUMNS] if tables else pd.DataFrame(columns=COLUMNS)
