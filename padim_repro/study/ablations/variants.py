"""Ablation variants from cached embeddings, through the method's own Eq. 1 and Eq. 2.

From one category's embeddings (:mod:`.cache`) the per-position mean and full covariance are estimated once by the
method's :class:`padim_repro.gaussian.GaussianAccumulator` (:func:`position_gaussians`). Every variant that keeps a
subset of channels (random subsets, one layer, all 448) is a sub-block of that covariance, and PCA's covariance is
W^T Sigma W, so each variant only indexes or projects it, then turns it into a precision with
:func:`padim_repro.gaussian.regularized_precision` and scores with :func:`padim_repro.scoring.mahalanobis`
(:func:`variant_distances`), exactly as :class:`padim_repro.model.Padim` does. Distance maps are cached beside the
embeddings, keyed by the exact channel list (or PCA dimension) and epsilon. Variants run in two worker threads with
one torch thread each (:class:`VariantRows`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...gaussian import GaussianAccumulator, position_slices, regularized_precision
from ...metrics import evaluate
from ...scoring import anomaly_maps, image_scores, mahalanobis
from ...storage import atomic_write
from ..report import METRICS
from .cache import CACHE_FORMAT, Embeddings, content_hash

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
    variant adds it to its own sub-block), from :meth:`padim_repro.gaussian.GaussianAccumulator.covariance`,
    stored in float32 (2.5 GB for all 448 channels of R18 at 224 px); every sub-block is turned back into float64
    before it is regularised and inverted by :func:`padim_repro.gaussian.regularized_precision`. ``mean`` is
    float64.
    ``channels`` are the absolute indices of the D channels, ascending.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    n: int
    channels: torch.Tensor


def position_gaussians(
    train: torch.Tensor, channels: torch.Tensor | None = None, device: torch.device | str | None = None,
    batch_size: int = 32,
) -> PositionGaussians:
    """Mean and covariance at every position of ``train`` (N, C, h, w), over ``channels`` (all by default).

    Estimated by the method's own :class:`padim_repro.gaussian.GaussianAccumulator` (Eq. 1 without epsilon I),
    fed ``batch_size`` images at a time, with a float64 co-moment; see :class:`PositionGaussians` for the storage.
    """
    n, c = train.shape[:2]
    device = torch.device(device) if device is not None else train.device
    if channels is None:
        channels = torch.arange(c)
    else:
        channels = torch.as_tensor(channels, dtype=torch.long).cpu()
    d, p = channels.numel(), train.shape[2] * train.shape[3]
    acc = GaussianAccumulator(d, p, device, dtype=torch.float64)
    with torch_threads(LINALG_THREADS):
        for batch in train.split(batch_size):
            acc.update(batch if d == c else batch.index_select(1, channels))
        mean, cov = acc.covariance(torch.float32)
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
        for sl in position_slices(p, chunk_dim):
            precision[sl] = regularized_precision(block(sl), epsilon).to(torch.float32)
        return mahalanobis(emb.reshape(m, k, h, w).to(device), mean.to(torch.float32), precision)


def distances_path(emb: Embeddings, spec: dict[str, Any], epsilon: float) -> Path:
    """Where :func:`cached_distances` keeps the distance maps of variant ``spec`` of ``emb``."""
    name = content_hash({"embeddings": emb.key, **spec, "epsilon": epsilon, "format": CACHE_FORMAT})
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
