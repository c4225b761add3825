"""The four ablation experiments of the paper (Defard et al., 2020) on one category, and over categories.

* ``n_features`` (Table II): d in {10, 25, 50, 100, 200, 300, 448} channels, chosen at random with 10 seeds
  (``SEEDS`` = 1024 .. 1033; 1024 is the seed of the main runs and of the public reproduction), or by PCA to the
  same d, or all 448.
* ``layers`` (Table I): layer1, layer2 or layer3 alone, the three layers as three separate Gaussians whose
  Mahalanobis distances are summed, and the concatenation of all 448 channels.
* ``sigma``: the blur of the anomaly map, sigma in {0 (none), 1, 2, 4, 8, 16}, with R18-Rd100 (seed 1024).
* ``protocol``: the paper's preprocessing (resize 256, center crop 224) against resize 256 without crop
  (anomalib's: resize 256, crop 256), with R18-Rd100 (seed 1024), sigma 4.

Results go to ``RESULTS/ablations/EXPERIMENT.csv`` (one row per category x variant x seed x sigma), with
``EXPERIMENT.json`` beside it (timings, provenance); a category whose rows were computed with the same data,
weights and parameters is not recomputed unless forced.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...config import resolve_device
from ...data import DataError, list_categories
from ...features import select_channels
from ...storage import write_json, write_text
from ..provenance import provenance
from ..runs import weights_record
from .cache import EmbeddingCache, Embeddings, content_hash, log
from .variants import (
    LINALG_THREADS,
    WORKERS,
    VariantRows,
    cached_distances,
    distances_path,
    position_gaussians,
    principal_axes,  # fmt: skip
    torch_threads,
    variant_distances,
)

EXPERIMENTS = ("n_features", "layers", "sigma", "protocol")
D_VALUES = (10, 25, 50, 100, 200, 300, 448)
#: Seeds of the random channel subsets: 1024 (the main runs' seed) and the nine after it.
SEEDS = tuple(range(1024, 1034))
SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Parameters of each experiment and their defaults (the paper's values where it gives them).
EXPERIMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "n_features": {"d_values": D_VALUES, "seeds": SEEDS, "sigma": 4.0, "epsilon": 0.01},
    "layers": {"sigma": 4.0, "epsilon": 0.01},
    "sigma": {"sigmas": SIGMAS, "d": 100, "seed": 1024, "epsilon": 0.01},
    "protocol": {"d": 100, "seed": 1024, "sigma": 4.0, "epsilon": 0.01},
}
ABLATIONS_DIR = "ablations"

COLUMNS = ["experiment", "category", "variant", "method", "d", "seed", "sigma", "protocol", "resize", "crop",
           "image_auroc", "pixel_auroc", "pro", "seconds", "seconds_linalg", "seconds_metrics", "n_train", "n_test",
           "embeddings_key", "weights_id", "run_key"]  # fmt: skip


def _channels_spec(channels: torch.Tensor) -> dict[str, Any]:
    return {"channels": [int(i) for i in channels]}


def n_features_category(
    emb: Embeddings,
    d_values: Sequence[int] = D_VALUES,
    seeds: Sequence[int] = SEEDS,
    sigma: float = 4.0,
    epsilon: float = 0.01,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Table II on one category: all channels, random subsets of each d (one row per seed), PCA to each d.

    d values >= the number of channels are the "all" variant (for PCA too: a full rotation leaves Mahalanobis
    distances unchanged), computed once. The full covariance (and PCA basis) is computed, once, only if some
    variant's distance maps are not cached yet; every variant then indexes or projects it.
    """
    n_ch = emb.n_channels
    subset_ds = sorted({int(d) for d in d_values if d < n_ch})
    variants: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"channels": torch.arange(n_ch)}, dict(variant=f"all{n_ch}", method="all", d=n_ch))
    ]
    variants += [({"channels": select_channels(n_ch, d, seed)}, dict(variant=f"Rd{d}", method="random", d=d,
                  seed=int(seed))) for d in subset_ds for seed in seeds]  # fmt: skip
    variants += [({"pca": d}, dict(variant=f"PCA{d}", method="pca", d=d)) for d in subset_ds]
    specs = [{"pca": v["pca"]} if "pca" in v else _channels_spec(v["channels"]) for v, _ in variants]
    missing = [not distances_path(emb, spec, epsilon).is_file() for spec in specs]
    g = position_gaussians(emb.train, device=device) if any(missing) else None
    axes = principal_axes(g) if g is not None and any(m for m, s in zip(missing, specs) if "pca" in s) else None

    def compute(v: dict[str, Any]) -> Callable[[], torch.Tensor]:
        if "pca" in v:
            return lambda: variant_distances(g, emb.test, projection=axes[:, : v["pca"]], epsilon=epsilon)
        return lambda: variant_distances(g, emb.test, v["channels"], epsilon=epsilon)

    with VariantRows("n_features", workers) as out:
        for (v, info), spec in zip(variants, specs):
            out.add(emb, lambda v=v, spec=spec: cached_distances(emb, spec, compute(v), epsilon), sigma, **info)
        rows = out.rows()
    del g, axes
    return rows


def layer_distances(emb: Embeddings, epsilon: float = 0.01,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:  # fmt: skip
    """Per layer, the distance maps (M, h, w) under that layer's own Gaussians (a diagonal block of the full
    covariance) on the first layer's grid. Summed, they give Table I's "three separate models" variant."""
    out = {}
    with torch_threads(LINALG_THREADS):
        for layer in emb.layers:
            out[layer] = _layer_distances(emb, layer, epsilon, device)
    return out


def _layer_distances(emb: Embeddings, layer: str, epsilon: float, device: torch.device | str) -> torch.Tensor:
    block = emb.layer_block(layer)
    return cached_distances(emb, _channels_spec(block), lambda: variant_distances(
        position_gaussians(emb.train, block, device), emb.test, block, epsilon=epsilon), epsilon)  # fmt: skip


def layers_category(emb: Embeddings, sigma: float = 4.0, epsilon: float = 0.01, device: torch.device | str = "cpu",
                    workers: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Table I on one category: each layer alone, the layers as separate Gaussians summed, all layers concatenated.

    Everything is on the first layer's grid: a coarser layer's embeddings there are its own nearest-upsampled,
    so each of its positions is repeated and gets the same Gaussian as on the layer's own grid; the distance map
    is then piecewise constant on the layer1 grid before the bilinear upsampling to the image. The summed variant
    adds the three layers' distance maps (each from its own Gaussian) on that grid, then upsamples and blurs.
    """
    everything = torch.arange(emb.n_channels)
    with VariantRows("layers", workers) as out:
        jobs = [out.add(emb, lambda layer=layer: _layer_distances(emb, layer, epsilon, device), sigma,
                        f"{layer} only", "layer", d=emb.layer_block(layer).numel())
                for layer in emb.layers]  # fmt: skip
        out.add(emb, lambda: cached_distances(emb, _channels_spec(everything), lambda: variant_distances(
            position_gaussians(emb.train, device=device), emb.test, epsilon=epsilon), epsilon), sigma,
            f"all{emb.n_channels} (concatenated)", "all", d=emb.n_channels)  # fmt: skip
        # Queued after the three layers' jobs: by the time a worker picks it up they have all started.
        out.add(emb, lambda: torch.stack([j.result()[0] for j in jobs]).sum(0), sigma, "separate Gaussians summed",
                "summed", d=emb.n_channels)  # fmt: skip
        rows = out.rows()
    order = ["layer", "summed", "all"]
    return sorted(rows, key=lambda r: order.index(r["method"]))


def _random_subset(emb: Embeddings, d: int, seed: int, epsilon: float, device: torch.device | str) -> torch.Tensor:
    idx = select_channels(emb.n_channels, d, seed)
    return cached_distances(emb, _channels_spec(idx), lambda: variant_distances(
        position_gaussians(emb.train, idx, device), emb.test, idx, epsilon=epsilon), epsilon)  # fmt: skip


def sigma_category(emb: Embeddings, sigmas: Sequence[float] = SIGMAS, d: int = 100, seed: int = 1024,
                   epsilon: float = 0.01, device: torch.device | str = "cpu",
                   workers: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """R18-Rd``d`` (one seed) with each blur sigma; the distance maps are computed once."""
    with torch_threads(LINALG_THREADS):
        dist = _random_subset(emb, d, seed, epsilon, device)
    with VariantRows("sigma", workers) as out:
        for s in sigmas:
            out.add(emb, dist, float(s), f"sigma {float(s):g}", "random", d=d, seed=seed)
        return out.rows()


def protocol_category(embs: dict[str, Embeddings], d: int = 100, seed: int = 1024, sigma: float = 4.0,
                      epsilon: float = 0.01, device: torch.device | str = "cpu",
                      workers: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """R18-Rd``d`` (one seed) under each preprocessing protocol (``embs``: protocol name -> embeddings)."""
    with VariantRows("protocol", workers) as out:
        for name, emb in embs.items():
            out.add(emb, lambda emb=emb: _random_subset(emb, d, seed, epsilon, device), sigma,
                    f"resize {emb.resize}, crop {emb.crop}", "random", d=d, seed=seed, protocol=name)  # fmt: skip
        return out.rows()


def results_path(results_root: str | Path, experiment: str) -> Path:
    return Path(results_root) / ABLATIONS_DIR / f"{experiment}.csv"


def load_results(results_root: str | Path, experiment: str) -> pd.DataFrame:
    """The rows of ``RESULTS/ablations/EXPERIMENT.csv`` (empty frame with the columns if absent)."""
    path = results_path(results_root, experiment)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path)


def protocols(resize: int = 256, crop: int = 224) -> dict[str, tuple[int, int]]:
    """The two preprocessing protocols compared: the paper's (resize, crop) and the same resize without crop."""
    return {"paper": (resize, crop), "no_crop": (resize, resize)}


def run_experiment(
    experiment: str,
    data_root: str | Path,
    weights: str,
    categories: Sequence[str] | None = None,
    results_root: str | Path = "results",
    cache_dir: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    resize: int = 256,
    crop: int = 224,
    batch_size: int = 32,
    **params: Any,
) -> pd.DataFrame:
    """Run ``experiment`` on ``categories`` (default: all present under ``data_root``); return their rows.

    ``params`` override :data:`EXPERIMENT_DEFAULTS` (e.g. ``d_values``, ``seeds``, ``sigmas``). A category whose
    rows in ``RESULTS/ablations/EXPERIMENT.csv`` were computed with the same data, weights and parameters (the
    ``run_key`` column) is read back unless ``force``; the CSV is rewritten atomically after each category.
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
    caches = {name: EmbeddingCache(data_root, weights, cache_dir, resize=r, crop=c, device=device,
                                   batch_size=batch_size) for name, (r, c) in sizes.items()}  # fmt: skip
    compute_device = resolve_device(device)
    csv_path = results_path(results_root, experiment)
    table = load_results(results_root, experiment)
    side_path = csv_path.with_suffix(".json")
    side = json.loads(side_path.read_text()) if side_path.is_file() else {}
    timings = side.get("categories", {})
    t_all = time.perf_counter()
    for category in categories:
        keys = {name: cache.key(category) for name, cache in caches.items()}
        run_key = content_hash({"experiment": experiment, "params": params, "embeddings": keys})
        done = table[(table.category == category) & (table.run_key == run_key)]
        if len(done) and not force:
            log(f"{experiment} {category}: reusing {len(done)} rows of {csv_path}")
            timings.setdefault(category, {})["reused"] = True
            continue
        t0 = time.perf_counter()
        embs = {name: cache.load(category) for name, cache in caches.items()}
        t_emb = time.perf_counter() - t0
        from_cache = {name: e.from_cache for name, e in embs.items()}
        main = embs["paper"]
        if experiment == "n_features":
            rows = n_features_category(main, device=compute_device, **params)
        elif experiment == "layers":
            rows = layers_category(main, device=compute_device, **params)
        elif experiment == "sigma":
            rows = sigma_category(main, device=compute_device, **params)
        else:
            rows = protocol_category(embs, device=compute_device, **params)
        del embs, main
        new = pd.DataFrame(rows, columns=COLUMNS[:-1]).assign(run_key=run_key)
        table = pd.concat([table[table.category != category], new], ignore_index=True) if len(table) else new
        write_text(csv_path, table.to_csv(index=False))
        seconds = time.perf_counter() - t0
        timings[category] = {"reused": False, "seconds": round(seconds, 1), "embeddings_seconds": round(t_emb, 1),
                             "embeddings_from_cache": from_cache}
        log(f"{experiment} {category}: {len(rows)} variants in {seconds:.1f} s "
             f"(embeddings {t_emb:.1f} s)")  # fmt: skip
    any_cache = next(iter(caches.values()))
    write_json(side_path, {
        "experiment": experiment,
        "params": params,
        "data_root": str(data_root),
        "weights": weights_record(any_cache.config, any_cache.weights_id),
        "protocols": {name: {"resize": r, "crop": c} for name, (r, c) in sizes.items()},
        "categories": timings,
        "last_invocation_seconds": round(time.perf_counter() - t_all, 1),
        "device": str(compute_device),
        "workers": WORKERS,
        "linalg_threads": LINALG_THREADS,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **provenance(),
    })  # fmt: skip
    return table[table.category.isin(categories)].reset_index(drop=True)
