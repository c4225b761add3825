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

Cost design. The backbone runs once per (category, backbone, layers, preprocessing, weights, data files): its
embeddings (all 448 channels on the layer1 grid, float32) are cached on disk (:class:`EmbeddingCache`). From them
the per-position mean and full covariance are computed once per category, in float64 (:func:`position_gaussians`).
Every variant that keeps a subset of channels (random subsets, one layer, all 448) is a sub-block of that
covariance, and PCA's covariance is W^T Sigma W, so each variant only indexes or projects, adds epsilon I and
inverts by batched Cholesky in float64 (:func:`padim_repro.gaussian.regularized_precision`), then scores with
:func:`padim_repro.scoring.mahalanobis` (:func:`variant_distances`), exactly as :class:`padim_repro.model.Padim`
does. The distance maps of a variant are cached beside its embeddings, keyed by the exact channel list (or PCA
dimension) and epsilon, so the sigma sweep, the protocol comparison and the layers table reuse those of the
n_features sweep; each variant's metrics are computed once per sigma. Variants run in two worker threads with one
torch thread each (:class:`VariantRows`). Results go to ``RESULTS/ablations/EXPERIMENT.csv`` (one row per
category x variant x seed x sigma), with ``EXPERIMENT.json`` beside it (timings, provenance); a category whose
rows were computed with the same data, weights and parameters is not recomputed unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import reference
from .artifacts import atomic_write, provenance, write_json, write_text
from .config import PadimConfig
from .data import DataError, MVTecDataset, Sample, batches, find_samples, list_categories
from .features import FeatureExtractor, resolve_device, select_channels
from .gaussian import _position_slices, regularized_precision
from .metrics import evaluate
from .notebooks import REPO_ROOT, execute
from .report import METRIC_LABEL, METRICS
from .runner import weights_record
from .scoring import anomaly_maps, image_scores, mahalanobis

EXPERIMENTS = ("n_features", "layers", "sigma", "protocol")
#: The notebooks that run the experiments, in the order :func:`run_ablations` executes them.
NOTEBOOKS = tuple(f"ablation_{name}" for name in EXPERIMENTS)
BACKBONE = "resnet18"
LAYERS = ("layer1", "layer2", "layer3")
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
DEFAULT_CACHE = REPO_ROOT / ".cache" / "embeddings"
ABLATIONS_DIR = "ablations"
BOOK_ABLATIONS = Path("book") / "ablations"
#: Bumped whenever the cached embeddings or distance maps change meaning (a new value never reads old files).
CACHE_FORMAT = 1

COLUMNS = ["experiment", "category", "variant", "method", "d", "seed", "sigma", "protocol", "resize", "crop",
           "image_auroc", "pixel_auroc", "pro", "seconds", "seconds_linalg", "seconds_metrics", "n_train", "n_test",
           "embeddings_key", "weights_id", "run_key"]  # fmt: skip


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _hash(data: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------------------------
# Embedding cache
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Embeddings:
    """All channels of the patch embeddings of one category's train and test images, and the test ground truth.

    ``train`` (N, C, h, w) and ``test`` (M, C, h, w) are float32 on the first layer's grid (coarser layers
    nearest-upsampled, as :class:`padim_repro.features.FeatureExtractor` builds them), C = 448 for ResNet-18.
    """

    category: str
    key: str
    folder: Path
    train: torch.Tensor
    test: torch.Tensor
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    layers: tuple[str, ...]
    layer_channels: tuple[int, ...]
    resize: int
    crop: int
    weights_id: str
    from_cache: bool
    seconds: float

    @property
    def n_channels(self) -> int:
        return sum(self.layer_channels)

    def layer_block(self, layer: str) -> torch.Tensor:
        """Indices of ``layer``'s channels among all channels."""
        i = self.layers.index(layer)
        start = sum(self.layer_channels[:i])
        return torch.arange(start, start + self.layer_channels[i])


class EmbeddingCache:
    """Backbone embeddings of whole categories, computed once and kept on disk under ``cache_dir``.

    An entry is keyed by a hash of everything that determines it: category, backbone, layers, resize, crop,
    interpolation, the content hash of the backbone weights and the list of data files (relative paths and sizes,
    masks included). Files are written atomically (``train.npy``, ``test.npy``, ``masks.npy``) and ``meta.json``
    last, so an entry without ``meta.json`` is incomplete and recomputed; an entry of another key is never read.
    """

    def __init__(
        self,
        data_root: str | Path,
        weights: str,
        cache_dir: str | Path | None = None,
        backbone: str = BACKBONE,
        layers: Sequence[str] = LAYERS,
        resize: int = 256,
        crop: int = 224,
        interpolation: str = "bicubic",
        seed: int = 1024,
        device: str = "auto",
        batch_size: int = 32,
    ):
        # Validates the preprocessing parameters the same way a PaDiM run does.
        self.config = PadimConfig(backbone=backbone, layers=tuple(layers), d=0, seed=seed, resize=resize, crop=crop,
                                  interpolation=interpolation, weights=weights, batch_size=batch_size,
                                  device=device)  # fmt: skip
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        self.device = resolve_device(device)
        self._extractor: FeatureExtractor | None = None

    @property
    def extractor(self) -> FeatureExtractor:
        """The backbone with every channel kept; built once (its weights hash is part of every key)."""
        if self._extractor is None:
            c = self.config
            self._extractor = FeatureExtractor(c.backbone, c.layers, c.weights, None, c.seed).to(self.device)
        return self._extractor

    @property
    def weights_id(self) -> str:
        return self.extractor.weights_id

    def _samples(self, category: str) -> tuple[list[Sample], list[Sample]]:
        return find_samples(self.data_root, category, "train"), find_samples(self.data_root, category, "test")

    def describe(self, category: str, samples: tuple[list[Sample], list[Sample]] | None = None) -> dict[str, Any]:
        """Everything the embeddings of ``category`` depend on (what the key hashes)."""
        train, test = samples or self._samples(category)
        cat_dir = self.data_root / category

        def files(ss: list[Sample]) -> list[list[Any]]:
            out = []
            for s in ss:
                for p in (s.image_path, s.mask_path):
                    if p is not None:
                        out.append([p.relative_to(cat_dir).as_posix(), p.stat().st_size])
            return out

        c = self.config
        return {
            "format": CACHE_FORMAT,
            "category": category,
            "backbone": c.backbone,
            "layers": list(c.layers),
            "resize": c.resize,
            "crop": c.crop,
            "interpolation": c.interpolation,
            "weights_id": self.weights_id,
            "train_files": files(train),
            "test_files": files(test),
        }

    def key(self, category: str) -> str:
        """The cache key of ``category``'s embeddings under this configuration."""
        return _hash(self.describe(category))

    def folder(self, category: str, key: str | None = None) -> Path:
        c = self.config
        return self.cache_dir / f"{category}-{c.backbone}-r{c.resize}-c{c.crop}-{key or self.key(category)}"

    def load(self, category: str, progress: bool = True) -> Embeddings:
        """The embeddings of ``category``: read from the cache, or computed by the backbone and cached."""
        t0 = time.perf_counter()
        samples = self._samples(category)
        desc = self.describe(category, samples)
        key = _hash(desc)
        folder = self.folder(category, key)
        meta_path = folder / "meta.json"
        from_cache = meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key
        if not from_cache:
            if progress:
                _log(f"  {category}: computing backbone embeddings (resize {self.config.resize}, crop "
                     f"{self.config.crop}) into {folder}")  # fmt: skip
            meta = self._compute(folder, key, desc, samples)
        else:
            meta = json.loads(meta_path.read_text())
        train = torch.from_numpy(np.load(folder / "train.npy"))
        test = torch.from_numpy(np.load(folder / "test.npy"))
        masks = np.load(folder / "masks.npy")
        return Embeddings(
            category=category, key=key, folder=folder, train=train, test=test, masks=masks,
            labels=np.asarray(meta["labels"], dtype=np.int64), defect_types=list(meta["defect_types"]),
            layers=tuple(meta["layers"]), layer_channels=tuple(meta["layer_channels"]), resize=self.config.resize,
            crop=self.config.crop, weights_id=self.weights_id, from_cache=from_cache,
            seconds=time.perf_counter() - t0,
        )  # fmt: skip

    def _compute(
        self, folder: Path, key: str, desc: dict[str, Any], samples: tuple[list[Sample], list[Sample]]
    ) -> dict[str, Any]:
        c = self.config
        train_ds, test_ds = (MVTecDataset(s, c.resize, c.crop, c.interpolation) for s in samples)
        t0 = time.perf_counter()
        train, _ = self._embed(train_ds)
        atomic_write(folder / "train.npy", lambda fh: np.save(fh, train))
        del train
        test, masks = self._embed(test_ds)
        atomic_write(folder / "test.npy", lambda fh: np.save(fh, test))
        atomic_write(folder / "masks.npy", lambda fh: np.save(fh, masks))
        meta = {
            **{k: v for k, v in desc.items() if not k.endswith("_files")},
            "key": key,
            "layer_channels": list(self.extractor.model.feature_info.channels()),
            "grid": list(test.shape[2:]),
            "n_train": len(train_ds),
            "n_test": len(test_ds),
            "labels": test_ds.labels.tolist(),
            "defect_types": test_ds.defect_types,
            "data_root": str(self.data_root),
            "weights_spec": c.weights,
            "device": str(self.device),
            "seconds": time.perf_counter() - t0,
            "files": {"train": desc["train_files"], "test": desc["test_files"]},
        }
        write_json(folder / "meta.json", meta)
        return meta

    def _embed(self, dataset: MVTecDataset) -> tuple[np.ndarray, np.ndarray]:
        out: np.ndarray | None = None
        masks = np.zeros((len(dataset), self.config.crop, self.config.crop), dtype=bool)
        i = 0
        for x, m in batches(dataset, self.config.batch_size):
            emb = self.extractor(x.to(self.device)).to("cpu", torch.float32).numpy()
            if out is None:
                out = np.empty((len(dataset), *emb.shape[1:]), dtype=np.float32)
            out[i : i + len(emb)] = emb
            masks[i : i + len(emb)] = m.numpy()
            i += len(emb)
        assert out is not None  # find_samples never returns an empty split
        return out, masks


# ---------------------------------------------------------------------------------------------------------------
# Gaussians and variants
# ---------------------------------------------------------------------------------------------------------------
#: Torch threads for the linear algebra of the variants. On the shared 2-core machine this was written on, batched
#: Cholesky / cholesky_inverse / bmm with 2 OpenMP threads ran 1.5 to 50 times slower than with one under load
#: from other processes (threads spinning at barriers while another process holds a core). Instead the variants
#: run in :data:`WORKERS` Python threads with one torch thread each (:class:`VariantRows`).
LINALG_THREADS = 1
#: Variants computed at once (threads); 2 uses the 2 cores of the machine, as torch's default would.
WORKERS = min(2, os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (unchanged if None), then restore the previous number."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class PositionGaussians:
    """Per-position mean (P, D) and covariance (P, D, D) of N training embeddings over some channels.

    ``cov`` is the unbiased estimate 1/(N-1) sum_k (x_k - mu)(x_k - mu)^T without the epsilon I of Eq. 1 (each
    variant adds it to its own sub-block), computed in float64 and stored in float32 (2.5 GB instead of 5.0 for
    R18 at 224 px), the precision at which :class:`padim_repro.gaussian.GaussianAccumulator` stores its co-moment;
    every sub-block is turned back into float64 before it is regularised and inverted. ``mean`` is float64.
    ``channels`` are the absolute indices of the D channels, ascending.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    n: int
    channels: torch.Tensor


def position_gaussians(
    train: torch.Tensor, channels: torch.Tensor | None = None, device: torch.device | str | None = None
) -> PositionGaussians:
    """Mean and covariance at every position of ``train`` (N, C, h, w), over ``channels`` (all by default).

    Computed directly in float64, chunk of positions by chunk (the mean, then the centred co-moment), on
    ``device`` (the embeddings' by default); see :class:`PositionGaussians` for the storage.
    """
    n, c = train.shape[:2]
    if n < 2:
        raise ValueError(f"need at least 2 training images to estimate a covariance, got {n}")
    device = torch.device(device) if device is not None else train.device
    x = train.reshape(n, c, -1)
    if channels is None:
        channels = torch.arange(c)
    else:
        channels = torch.as_tensor(channels, dtype=torch.long).cpu()
        x = x.index_select(1, channels)
    d, p = x.shape[1], x.shape[2]
    mean = torch.empty(p, d, dtype=torch.float64, device=device)
    cov = torch.empty(p, d, d, dtype=torch.float32, device=device)
    with torch_threads(LINALG_THREADS):
        for sl in _position_slices(p, d):
            xs = x[:, :, sl].to(device, torch.float64).permute(2, 0, 1)  # (p, N, d)
            mu = xs.mean(dim=1)
            xs = xs - mu[:, None, :]
            mean[sl] = mu
            cov[sl] = (torch.bmm(xs.transpose(1, 2), xs) / (n - 1)).to(torch.float32)
    return PositionGaussians(mean, cov, n, channels)


def principal_axes(g: PositionGaussians) -> torch.Tensor:
    """Principal axes (D, D) of the training embeddings of all positions pooled (N x P samples), by decreasing
    variance; the first d columns are the PCA to d dimensions.

    The pooled scatter is sum_p [(N-1) Sigma_p + N (mu_p - m)(mu_p - m)^T], m the grand mean: the scatter of the
    N x P vectors, without revisiting them.
    """
    with torch_threads(LINALG_THREADS):
        centred = g.mean - g.mean.mean(dim=0)
        scatter = (g.n - 1) * g.cov.sum(dim=0, dtype=torch.float64) + g.n * (centred.T @ centred)
        _, vectors = torch.linalg.eigh(scatter)
    return vectors.flip(-1)


def _local_indices(g: PositionGaussians, channels: torch.Tensor) -> torch.Tensor | None:
    """Positions of ``channels`` among ``g.channels`` (None when they are all of them, in order)."""
    channels = torch.as_tensor(channels, dtype=torch.long).cpu()
    if channels.numel() == g.channels.numel() and torch.equal(channels, g.channels):
        return None
    lookup = torch.full((int(max(g.channels.max(), channels.max())) + 1,), -1, dtype=torch.long)
    lookup[g.channels] = torch.arange(g.channels.numel())
    local = lookup[channels]
    if bool((local < 0).any()):
        raise ValueError(f"channels {channels[local < 0].tolist()[:10]} are not covered by these Gaussians")
    return local


def variant_distances(
    g: PositionGaussians,
    test: torch.Tensor,
    channels: torch.Tensor | None = None,
    projection: torch.Tensor | None = None,
    epsilon: float = 0.01,
) -> torch.Tensor:
    """Mahalanobis distance maps (M, h, w) of ``test`` (M, C, h, w) under one variant of ``g``'s Gaussians.

    The variant keeps ``channels`` (absolute indices; default: all of ``g``'s), i.e. the sub-block
    Sigma[channels, channels] of each position's covariance, or projects on the columns of ``projection``
    (D, k), i.e. W^T Sigma W and W^T mu (test embeddings projected alike). In both cases epsilon I is added,
    the precision is computed by Cholesky in float64 and the distances by :func:`padim_repro.scoring.mahalanobis`
    in float32, as :class:`padim_repro.model.Padim` does.
    """
    if channels is not None and projection is not None:
        raise ValueError("pass channels or projection, not both")
    m, c, h, w = test.shape
    p = h * w
    if g.mean.shape[0] != p:
        raise ValueError(f"test embeddings have {p} positions, the Gaussians {g.mean.shape[0]}")
    device = g.cov.device
    x = test.reshape(m, c, p)
    x_g = x if g.channels.numel() == c else x.index_select(1, g.channels.to(x.device))  # g's channel space
    if projection is not None:
        wt = projection.to(device, torch.float64)
        k = wt.shape[1]
        mean = g.mean @ wt

        def block(sl: slice) -> torch.Tensor:
            return wt.T @ g.cov[sl].to(torch.float64) @ wt

        emb = torch.einsum("mcp,ck->mkp", x_g.to(device), wt.to(torch.float32))
    else:
        local = _local_indices(g, channels) if channels is not None else None
        if local is None:
            k, mean, emb = g.channels.numel(), g.mean, x_g

            def block(sl: slice) -> torch.Tensor:
                return g.cov[sl].to(torch.float64)
        else:
            li = local.to(device)
            k, mean, emb = li.numel(), g.mean[:, li], x_g.index_select(1, local.to(x.device))

            def block(sl: slice) -> torch.Tensor:
                return g.cov[sl][:, li[:, None], li[None, :]].to(torch.float64)

    # Chunks of positions sized by the largest float64 matrix a chunk handles (D x D when projecting).
    chunk_dim = g.channels.numel() if projection is not None else k
    with torch_threads(LINALG_THREADS):
        precision = torch.empty(p, k, k, dtype=torch.float32, device=device)
        for sl in _position_slices(p, chunk_dim):
            precision[sl] = regularized_precision(block(sl), epsilon).to(torch.float32)
        return mahalanobis(emb.reshape(m, k, h, w).to(device), mean.to(torch.float32), precision)


def distances_path(emb: Embeddings, spec: dict[str, Any], epsilon: float) -> Path:
    """Where :func:`cached_distances` keeps the distance maps of variant ``spec`` of ``emb``."""
    name = _hash({"embeddings": emb.key, **spec, "epsilon": epsilon, "format": CACHE_FORMAT})
    return emb.folder / "distances" / f"{name}.npy"


def cached_distances(
    emb: Embeddings, spec: dict[str, Any], compute: Callable[[], torch.Tensor], epsilon: float
) -> torch.Tensor:
    """Distance maps of the variant ``spec`` (the channel list, or the PCA dimension) with ``epsilon``.

    Kept beside the embeddings (``FOLDER/distances/HASH.npy``), so every experiment on the same embeddings
    reuses them; the hash covers the embeddings key, the exact variant, epsilon and the cache format.
    """
    path = distances_path(emb, spec, epsilon)
    if path.is_file():
        return torch.from_numpy(np.load(path))
    dist = compute().to("cpu", torch.float32).contiguous()
    atomic_write(path, lambda fh: np.save(fh, dist.numpy()))
    return dist


def evaluate_distances(dist: torch.Tensor, emb: Embeddings, sigma: float = 4.0) -> dict[str, float]:
    """Image AUROC, pixel AUROC and PRO of distance maps (M, h, w): upsampled to the crop, blurred with sigma."""
    maps = anomaly_maps(dist.to(torch.float32), emb.crop, sigma)
    scores = image_scores(maps)
    result = evaluate(maps.cpu().numpy(), emb.masks, scores.cpu().numpy(), emb.labels, emb.defect_types)
    return {k: result[k] for k in METRICS}


# ---------------------------------------------------------------------------------------------------------------
# The four experiments on one category
# ---------------------------------------------------------------------------------------------------------------
class VariantRows:
    """Result rows of one experiment on one category, computed by a small pool of worker threads.

    Each :meth:`add` queues one job: the variant's distance maps (a tensor, or a function computing them), then
    its metrics (upsampling, blur, AUROCs, PRO). ``workers`` jobs run at once, each with one torch thread (see
    :data:`LINALG_THREADS`), so the linear algebra of one variant overlaps the metrics (numpy / scikit-learn,
    mostly outside the GIL) of another. :meth:`rows` waits for all jobs and returns the rows in the order added,
    with the seconds each spent in ``seconds_linalg`` and ``seconds_metrics``.
    """

    def __init__(self, experiment: str, workers: int | None = None):
        self.experiment = experiment
        self.workers = WORKERS if workers is None else workers
        self._pool = ThreadPoolExecutor(max_workers=self.workers) if self.workers > 1 else None
        self._jobs: list[tuple[Future, dict[str, Any]]] = []

    def add(self, emb: Embeddings, distances: torch.Tensor | Callable[[], torch.Tensor], sigma: float, variant: str,
            method: str, **extra: Any) -> Future:  # fmt: skip
        """Queue one variant; the returned future gives (distance maps, metrics) when done."""

        def job() -> tuple[torch.Tensor, dict[str, Any]]:
            with torch_threads(LINALG_THREADS):
                t0 = time.perf_counter()
                dist = distances() if callable(distances) else distances
                t1 = time.perf_counter()
                metrics = evaluate_distances(dist, emb, sigma)
                t2 = time.perf_counter()
            return dist, {**metrics, "seconds_linalg": t1 - t0, "seconds_metrics": t2 - t1}

        if self._pool is not None:
            fut = self._pool.submit(job)
        else:
            fut = Future()
            fut.set_result(job())
        self._jobs.append((fut, dict(emb=emb, variant=variant, method=method, sigma=float(sigma), **extra)))
        return fut

    def rows(self) -> list[dict[str, Any]]:
        try:
            out = []
            for fut, info in self._jobs:
                _, metrics = fut.result()
                out.append(_row(self.experiment, info.pop("emb"), info.pop("variant"), info.pop("method"), metrics,
                                **info))  # fmt: skip
            return out
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> VariantRows:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _row(experiment: str, emb: Embeddings, variant: str, method: str, metrics: dict[str, float],
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    t_la, t_m = metrics["seconds_linalg"], metrics["seconds_metrics"]
    return {
        "experiment": experiment, "category": emb.category, "variant": variant, "method": method, "d": None,
        "seed": None, "sigma": None, "protocol": None, "resize": emb.resize, "crop": emb.crop, **extra,
        **{m: metrics[m] for m in METRICS}, "seconds": round(t_la + t_m, 3), "seconds_linalg": round(t_la, 3),
        "seconds_metrics": round(t_m, 3), "n_train": emb.train.shape[0], "n_test": emb.test.shape[0],
        "embeddings_key": emb.key, "weights_id": emb.weights_id,
    }  # fmt: skip


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


# ---------------------------------------------------------------------------------------------------------------
# Running an experiment over categories, with resumable CSV outputs
# ---------------------------------------------------------------------------------------------------------------
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
        run_key = _hash({"experiment": experiment, "params": params, "embeddings": keys})
        done = table[(table.category == category) & (table.run_key == run_key)]
        if len(done) and not force:
            _log(f"{experiment} {category}: reusing {len(done)} rows of {csv_path}")
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
        _log(f"{experiment} {category}: {len(rows)} variants in {seconds:.1f} s "
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


# ---------------------------------------------------------------------------------------------------------------
# Tables and figures for the notebooks
# ---------------------------------------------------------------------------------------------------------------
#: Rows of the paper's Tables I and II: (our label, the paper's model name, how to select our rows).
PAPER_ROWS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "n_features": [
        ("Rd100 (mean of 10 seeds)", "PaDiM-R18-Rd100 (mean of 10 seeds)", {"method": "random", "d": 100}),
        ("Rd200", "PaDiM-R18-Rd200", {"method": "random", "d": 200}),
        ("PCA100", "PaDiM-R18-PCA100", {"method": "pca", "d": 100}),
        ("all 448", "PaDiM-R18 all 448 dims", {"method": "all"}),
    ],
    "layers": [
        ("layer1 only", "PaDiM-R18 layer1 only", {"variant": "layer1 only"}),
        ("layer2 only", "PaDiM-R18 layer2 only", {"variant": "layer2 only"}),
        ("layer3 only", "PaDiM-R18 layer3 only", {"variant": "layer3 only"}),
        ("layers 1+2+3, separate Gaussians summed", "PaDiM-R18 layers 1+2+3 as three separate models summed",
         {"method": "summed"}),
        ("all 448 (concatenated)", "PaDiM-R18 all 448 dims", {"method": "all"}),
    ],
}  # fmt: skip


def _select(df: pd.DataFrame, selector: dict[str, Any]) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in selector.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def seed_spread(rows: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the mean over categories for each seed, then mean and std (ddof 1) over seeds, in %.

    Returns one row per metric with ``mean``, ``std`` (NaN for a single seed), ``n_seeds``, ``n_categories``.
    """
    per_seed = rows.assign(seed=rows.seed.fillna(-1)).groupby("seed")[list(METRICS)].mean() * 100
    out = pd.DataFrame({"mean": per_seed.mean(), "std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan})
    return out.assign(n_seeds=len(per_seed), n_categories=rows.category.nunique())


def _fmt(mean: float, std: float = np.nan) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.2f}" if np.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _paper_cell(model: str, category: str, metric: str, paper: pd.DataFrame | None = None) -> str:
    cell = reference.paper_value(reference.paper() if paper is None else paper, model, category, metric)
    return f"{cell[0]:.1f} ({cell[1]})" if cell else "not published"


def comparison_table(experiment: str, df: pd.DataFrame) -> pd.DataFrame:
    """Our rows of the paper's Table I (``layers``) or II (``n_features``) next to the paper's, in %.

    Ours: the mean over the categories run (listed in ``over``), and for random subsets the mean ± std over the
    seeds of that category mean. The paper's: the mean over all 15 MVTec AD categories, with its source mark;
    the paper reports no image AUROC for these rows.
    """
    paper = reference.paper()
    rows = []
    for label, model, selector in PAPER_ROWS[experiment]:
        sub = _select(df, selector)
        spread = seed_spread(sub) if len(sub) else None
        row: dict[str, Any] = {"variant": label}
        for metric in METRICS:
            ours = _fmt(*spread.loc[metric, ["mean", "std"]]) if spread is not None else "not run"
            row[f"{METRIC_LABEL[metric]} ours"] = ours
            if metric != "image_auroc":
                row[f"{METRIC_LABEL[metric]} paper"] = _paper_cell(model, "all", metric, paper)
        row["seeds"] = int(spread.n_seeds.iloc[0]) if spread is not None else 0
        row["over (ours)"] = ", ".join(sorted(sub.category.unique())) or "none"
        row["paper over"] = "15 categories"
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def n_features_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Every (method, d) of the n_features sweep: mean ± std over seeds of the mean over categories, in %."""
    rows = []
    for (method, d), sub in df.groupby(["method", "d"], sort=True):
        spread = seed_spread(sub)
        rows.append({"method": method, "d": int(d), "seeds": int(spread.n_seeds.iloc[0]),
                     **{METRIC_LABEL[m]: _fmt(*spread.loc[m, ["mean", "std"]]) for m in METRICS}})  # fmt: skip
    order = {"random": 0, "pca": 1, "all": 2}
    return pd.DataFrame(rows).sort_values(["method", "d"], key=lambda s: s.map(order) if s.name == "method" else s)


def per_category_table(df: pd.DataFrame, index: str | list[str] = "variant") -> pd.DataFrame:
    """Mean over seeds of each metric, in %, one column per (metric, category)."""
    table = df.groupby([*([index] if isinstance(index, str) else index), "category"], sort=False)[list(METRICS)]
    wide = (table.mean() * 100).unstack("category")
    wide.columns = [f"{METRIC_LABEL[m]} {c}" for m, c in wide.columns]
    return wide.round(2)


def sigma_table(df: pd.DataFrame) -> pd.DataFrame:
    """Metrics (in %) for each sigma: the mean over the categories run, then each category."""
    mean = (df.groupby("sigma")[list(METRICS)].mean() * 100).round(2)
    mean.columns = [f"{METRIC_LABEL[m]} mean" for m in METRICS]
    return mean.join(per_category_table(df, "sigma"))


def paper_rd100_reference(categories: Sequence[str]) -> pd.DataFrame:
    """The paper's R18-Rd100 values (Table III, sigma 4, resize 256 + crop 224) for the categories and all 15."""
    paper = reference.paper()
    model = reference.PAPER_MODEL[BACKBONE]
    rows = []
    for cat in [*categories, "all"]:
        rows.append({"category": cat if cat != "all" else "all (mean of 15)",
                     **{METRIC_LABEL[m]: _paper_cell(model, cat, m, paper) for m in METRICS}})  # fmt: skip
    return pd.DataFrame(rows).set_index("category")


def protocol_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per category and protocol: our metrics (%), and those of the public reproduction that used the same
    protocol (%): xiahaifeng1995's used the paper's resize 256 + crop 224, anomalib's resize 256 without crop
    (and its own channel subset, seed 42)."""
    repro = reference.reproductions()
    which = {"paper": "xiahaifeng1995", "no_crop": "anomalib"}
    rows = []
    for _, r in df.iterrows():
        row: dict[str, Any] = {"category": r.category, "protocol": r.variant}
        row.update({f"{METRIC_LABEL[m]} ours": round(100 * r[m], 2) for m in METRICS})
        short = which.get(r.protocol, "")
        row["reproduction (same protocol)"] = short or "—"
        for m in ("image_auroc", "pixel_auroc"):
            q = repro[(repro.short == short) & (repro.backbone == reference.REPRO_BACKBONE[BACKBONE])
                      & (repro.category == r.category) & (repro.metric == m)]  # fmt: skip
            row[f"{METRIC_LABEL[m]} reproduction"] = f"{100 * q.value.iloc[0]:.1f}" if len(q) else "—"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["category", "protocol"])


def timing_summary(results_root: str | Path, experiment: str, categories: Sequence[str] | None = None) -> str:
    """Markdown lines: per category, whether this invocation computed or reused it, and the seconds it took."""
    path = results_path(results_root, experiment).with_suffix(".json")
    if not path.is_file():
        return f"No timings recorded for {experiment} yet."
    side = json.loads(path.read_text())
    lines = []
    for cat, t in side.get("categories", {}).items():
        if categories and cat not in categories:
            continue
        if t.get("reused"):
            earlier = f", computed earlier in {t['seconds']:.0f} s" if "seconds" in t else ""
            lines.append(f"- **{cat}**: read back from `{results_path(results_root, experiment)}` (same data, "
                         f"weights and parameters{earlier}; `force=True` recomputes)")  # fmt: skip
        else:
            cached = ", ".join(f"{k}: {'cache' if v else 'backbone'}" for k, v in t["embeddings_from_cache"].items())
            lines.append(f"- **{cat}**: computed in {t['seconds']:.0f} s, of which {t['embeddings_seconds']:.0f} s "
                         f"for the embeddings ({cached})")  # fmt: skip
    lines.append(f"- this invocation: {side['last_invocation_seconds']:.0f} s on {side['device']} "
                 f"({side.get('workers', '?')} worker threads with {side.get('linalg_threads', '?')} torch thread "
                 f"each; load average {side.get('load_average', '?')} at the end)")  # fmt: skip
    return "\n".join(lines)


def _paper_points(experiment: str) -> dict[str, dict[str, float]]:
    paper = reference.paper()
    out: dict[str, dict[str, float]] = {}
    for label, model, _ in PAPER_ROWS[experiment]:
        for m in METRICS:
            cell = reference.paper_value(paper, model, "all", m)
            if cell:
                out.setdefault(label, {})[m] = cell[0]
    return out


def plot_n_features(df: pd.DataFrame):
    """Metric vs d: random subsets (mean over categories, band = ± std over seeds), PCA, all channels; the
    paper's Table I/II points (means over 15 categories) as black markers."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    all_rows = df[df.method == "all"]
    paper = _paper_points("n_features")
    for ax, metric in zip(axes, METRICS):
        for method, style in (("random", "-o"), ("pca", "--s")):
            sub = pd.concat([df[df.method == method], all_rows])
            stats = pd.DataFrame({d: seed_spread(s).loc[metric] for d, s in sub.groupby("d")}).T.sort_index()
            ax.plot(stats.index, stats["mean"], style, label=f"{method} (mean of {sub.category.nunique()} cat.)")
            if method == "random":
                ax.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), alpha=0.25)  # fmt: skip
                for cat, cs in sub.groupby("category"):
                    per = cs.groupby("d")[metric].mean() * 100
                    ax.plot(per.index, per.values, ":", lw=0.9, label=f"random, {cat}")
        first = True
        for label, values in paper.items():
            if metric in values:
                d = 448 if "448" in label else int("".join(ch for ch in label.split()[0] if ch.isdigit()))
                ax.plot(d, values[metric], "kx", ms=8, label="paper (mean of 15 categories)" if first else None)
                first = False
                ax.annotate(f"paper {label.split()[0]}", (d, values[metric]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        ax.set(xscale="log", xlabel="d (kept dimensions)", ylabel=f"{METRIC_LABEL[metric]} (%)",
               title=METRIC_LABEL[metric])  # fmt: skip
        ax.set_xticks(sorted(df.d.unique()), [str(int(d)) for d in sorted(df.d.unique())])
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[1])  # the pixel AUROC panel also has the paper's points


def _legend_below(fig, ax):
    """One legend for the figure, below its panels."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = min(len(labels), 6)
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * rows + 0.01, 1, 1))
    return fig


def _grouped_bars(df: pd.DataFrame, by: str, order: Sequence[str], paper: dict[str, dict[str, float]] | None = None):
    import matplotlib.pyplot as plt

    cats = sorted(df.category.unique())
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / (len(cats) + 1)
    x = np.arange(len(order))
    for ax, metric in zip(axes, METRICS):
        vals = df.groupby([by, "category"])[metric].mean().mul(100)
        for i, cat in enumerate(cats):
            ax.bar(x + i * width, [vals.get((o, cat), np.nan) for o in order], width, label=cat)
        mean = df.groupby(by)[metric].mean().mul(100)
        ax.bar(x + len(cats) * width, [mean.get(o, np.nan) for o in order], width, label="mean", color="gray")
        if paper:
            px = [i for i, o in enumerate(order) if metric in paper.get(o, {})]
            ax.plot(x[px] + len(cats) * width, [paper[order[i]][metric] for i in px], "kx", ms=9, mew=2,
                    label="paper (mean of 15)")  # on our mean's bar  # fmt: skip
        lo = np.nanmin(vals.to_numpy()) if len(vals) else 0
        ax.set(ylim=(max(0, lo - 5), 100.5), title=METRIC_LABEL[metric], ylabel="%")
        ax.set_xticks(x + 0.4 - width / 2, order, rotation=20, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _legend_below(fig, axes[0])


def plot_layers(df: pd.DataFrame):
    """Each Table I variant: bars per category and their mean; the paper's means over 15 categories as crosses."""
    labels = {sel.get("variant") or sel["method"]: label for label, _, sel in PAPER_ROWS["layers"]}
    df = df.assign(row=[labels.get(v, labels.get(m, v)) for v, m in zip(df.variant, df.method)])
    order = [label for label, _, _ in PAPER_ROWS["layers"]]
    return _grouped_bars(df, "row", order, _paper_points("layers"))


def plot_sigma(df: pd.DataFrame):
    """Metric vs blur sigma, per category and mean; the paper's sigma = 4 marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric in zip(axes, METRICS):
        for cat, sub in df.groupby("category"):
            s = sub.groupby("sigma")[metric].mean() * 100
            ax.plot(s.index, s.values, "o:", lw=1, label=cat)
        mean = df.groupby("sigma")[metric].mean() * 100
        ax.plot(mean.index, mean.values, "k-o", label="mean")
        ax.axvline(4, color="r", ls="--", lw=0.8, label="paper: sigma = 4")
        ax.set(xlabel="sigma of the Gaussian blur (px, 0 = none)", ylabel="%", title=METRIC_LABEL[metric])
        ax.grid(alpha=0.3)
    return _legend_below(fig, axes[0])


def plot_protocol(df: pd.DataFrame):
    """Our metrics per category under the two preprocessing protocols."""
    order = list(dict.fromkeys(df.sort_values("crop").variant))
    fig = _grouped_bars(df.rename(columns={"variant": "proto"}), "proto", order)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# The four notebooks
# ---------------------------------------------------------------------------------------------------------------
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
    from .features import build_backbone
    from .reproduce import _from_repo

    present = list_categories(data_root)  # DataError naming the folder when it is missing
    missing = [c for c in categories or [] if c not in present]
    if missing:
        raise DataError(f"categories {missing} not found under {data_root} (present: {', '.join(present) or 'none'})")
    build_backbone(BACKBONE, LAYERS, weights, seed=1024)  # WeightsError with the reason before any notebook runs
    spec = _from_repo(weights) if Path(weights).is_file() else weights
    params = {
        "categories": list(categories) if categories else None,
        "data_root": _from_repo(data_root),
        "weights": spec,
        "results_root": _from_repo(results_root),
        "cache_dir": _from_repo(cache_dir if cache_dir is not None else DEFAULT_CACHE),
        "device": device,
        "force": bool(force),
        **(extra_parameters or {}),
    }
    out = []
    t_all = time.perf_counter()
    for name in NOTEBOOKS:
        t0 = time.perf_counter()
        out.append(execute(name, Path(book_dir) / ABLATIONS_DIR / f"{name}.ipynb", params))
        _log(f"{name}: executed in {time.perf_counter() - t0:.0f} s -> {out[-1]}")
    _log(f"ablations: {len(out)} notebooks in {(time.perf_counter() - t_all) / 60:.1f} min")
    return out
