"""Ablation variants from one category's embeddings, through the method's own Eq. 1 and Eq. 2.

From a category's :class:`~padim_repro.study.ablations.embeddings.Embeddings` (the per-position mean and covariance
of the training embeddings over some channels, estimated once by the method's accumulator), every variant that
keeps a subset of channels (random subsets, one layer, all 448) is a sub-block of that covariance, and a PCA's
covariance is W^T Sigma W (W shared by all positions, or one W per position), so each variant only indexes or
projects it, then turns it into precisions with :func:`padim_repro.gaussian.fill_precisions` and scores the test
embeddings with :func:`padim_repro.scoring.mahalanobis` (:func:`variant_distances`), exactly as
:class:`padim_repro.model.Padim` does. Variants run in :data:`WORKERS` worker threads with one torch thread each
(:class:`VariantRows`), so the linear algebra of one variant overlaps the metrics of another.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ...gaussian import fill_precisions, torch_threads
from ...metrics import PAPER_METRICS
from ...scoring import anomaly_maps, image_scores, mahalanobis
from ..uncertainty import bootstrap_values
from .embeddings import Embeddings, PositionGaussians

#: The paired bootstrap of every variant's metrics: as the main runs' (resamples, seed), so that every variant of a
#: category is resampled on the same draws of its test images.
BOOTSTRAP = {"n_resamples": 1000, "seed": 0}

#: Variants computed at once (threads), each with one torch thread: batched LAPACK on small matrices and the
#: metrics' sorts run on one core, so two variants at once use both cores of a 2-core machine.
WORKERS = min(2, os.cpu_count() or 1)


def principal_axes(g: PositionGaussians) -> torch.Tensor:
    """Principal axes (D, D) of the training embeddings of all positions pooled (N x P samples), by decreasing
    variance; the first d columns are the PCA to d dimensions (the paper's Table II PCA), the last d the
    directions of least variance.

    The pooled scatter is sum_p [(N-1) Sigma_p + N (mu_p - m)(mu_p - m)^T], m the grand mean: the scatter of the
    N x P vectors, without revisiting them.
    """
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
    workers: int = 1,
) -> torch.Tensor:
    """Mahalanobis distance maps (M, h, w) of ``test`` (M, D, h, w, over ``g.channels``) under one variant.

    The variant keeps ``channels`` (absolute indices; default: all of ``g``'s), i.e. the sub-block
    Sigma[channels, channels] of each position's covariance, or projects on the columns of ``projection``
    ((D, k) for all positions, or (P, D, k) one per position), i.e. W^T Sigma W and W^T mu, the test embeddings
    projected alike. Precisions by :func:`padim_repro.gaussian.fill_precisions` (``workers`` threads), distances by
    :func:`padim_repro.scoring.mahalanobis`, as :class:`padim_repro.model.Padim` computes them.
    """
    if channels is not None and projection is not None:
        raise ValueError("pass channels or projection, not both")
    m, c, h, w = test.shape
    p = h * w
    if g.mean.shape[0] != p or c != g.channels.numel():
        raise ValueError(f"test embeddings {tuple(test.shape)} do not match the Gaussians {tuple(g.cov.shape)}")
    device = g.cov.device
    x = test.reshape(m, c, p).to(device)
    block: Callable[[slice], torch.Tensor]
    if projection is not None:
        k = projection.shape[-1]
        if projection.ndim == 3:  # one projection per position, kept in its dtype (float64 chunk by chunk)
            wp = projection.to(device)
            mean = torch.einsum("pd,pdk->pk", g.mean, wp.to(torch.float64))
            emb = torch.einsum("mdp,pdk->mkp", x, wp.to(torch.float32))

            def block(sl: slice) -> torch.Tensor:
                w = wp[sl].to(torch.float64)
                return w.transpose(1, 2) @ g.cov[sl].to(torch.float64) @ w
        else:
            wt = projection.to(device, torch.float64)
            mean = g.mean @ wt
            emb = torch.einsum("mdp,dk->mkp", x, wt.to(torch.float32))

            def block(sl: slice) -> torch.Tensor:
                return wt.T @ g.cov[sl].to(torch.float64) @ wt
    else:
        local = _local_indices(g, channels) if channels is not None else None
        if local is None:
            k, mean, emb = c, g.mean, x

            def block(sl: slice) -> torch.Tensor:
                return g.cov[sl].clone()
        else:
            li = local.to(device)
            k, mean, emb = li.numel(), g.mean[:, li], x.index_select(1, li)

            def block(sl: slice) -> torch.Tensor:
                return g.cov[sl][:, li[:, None], li[None, :]]

    precision = torch.empty(p, k, k, dtype=torch.float32, device=device)
    fill_precisions(precision, block, epsilon, workers=workers)
    return mahalanobis(emb.reshape(m, k, h, w), mean.to(torch.float32), precision)


def evaluate_distances(dist: torch.Tensor, emb: Embeddings, sigma: float = 4.0,
                       upsample: str = "bilinear") -> tuple[dict[str, float], dict[str, np.ndarray]]:  # fmt: skip
    """The paper's three metrics of distance maps (M, h, w), upsampled to the crop (``upsample``: the method's
    bilinear, or bicubic) and blurred with ``sigma``, and their :data:`BOOTSTRAP` resamples (metric -> (B,)): every
    variant of a category is resampled with the same seed, hence the same draws of test images, so the difference
    of two variants' b-th values is their difference on one resampled test set (a paired bootstrap,
    :func:`~padim_repro.study.uncertainty.difference_values`)."""
    maps = anomaly_maps(dist.to(torch.float32), emb.crop, sigma, upsample)
    scores = image_scores(maps)
    estimate, values = bootstrap_values(maps.cpu().numpy(), emb.masks, scores.cpu().numpy(), emb.labels,
                                        **BOOTSTRAP)  # fmt: skip
    metrics = {k: None if not np.isfinite(estimate[k]) else estimate[k] for k in PAPER_METRICS}
    return metrics, {k: values[k].astype(np.float32) for k in PAPER_METRICS}


class VariantRows:
    """Result rows of one experiment on one category, computed by a small pool of worker threads.

    Each :meth:`add` queues one job: the variant's distance maps (a tensor, or a function computing them), then
    its metrics (upsampling, blur, AUROCs, PRO). ``workers`` jobs run at once, each with one torch thread, so the
    linear algebra of one variant overlaps the metrics (numpy, outside the GIL) of another. :meth:`rows` waits for
    all jobs and returns the rows in the order added, with the seconds each spent in ``seconds_linalg`` and
    ``seconds_metrics``; its ``bootstrap`` then holds each metric's resamples, one row per row (metric -> (rows, B)).
    The pool is for a CPU only: with the Gaussians on a GPU (known at the first :meth:`add`) the
    jobs run one after another on the calling thread, which keeps CUDA's lazily loaded linear-algebra library on one
    thread and the GPU busy with one variant at a time.
    """

    def __init__(self, experiment: str, workers: int | None = None):
        self.experiment = experiment
        self.workers = WORKERS if workers is None else workers
        self._pool: ThreadPoolExecutor | None = None
        self._started = False
        self._jobs: list[tuple[Future, dict[str, Any]]] = []
        self._threads: Any = None
        self.bootstrap: dict[str, np.ndarray] = {}

    def _start(self, device: torch.device) -> None:
        """Open the worker pool (and one torch thread per worker) when the Gaussians are on a CPU."""
        self._started = True
        if self.workers > 1 and device.type == "cpu":
            self._pool = ThreadPoolExecutor(max_workers=self.workers)
            self._threads = torch_threads(1)
            self._threads.__enter__()

    def add(self, emb: Embeddings, distances: torch.Tensor | Callable[[], torch.Tensor], sigma: float, variant: str,
            method: str, upsample: str = "bilinear", **extra: Any) -> Future:  # fmt: skip
        """Queue one variant; the returned future gives (distance maps, metrics, resamples) when done."""

        def job() -> tuple[torch.Tensor, dict[str, Any], dict[str, np.ndarray]]:
            t0 = time.perf_counter()
            dist = distances() if callable(distances) else distances
            t1 = time.perf_counter()
            metrics, values = evaluate_distances(dist, emb, sigma, upsample)
            t2 = time.perf_counter()
            return dist, {**metrics, "seconds_linalg": t1 - t0, "seconds_metrics": t2 - t1}, values

        if not self._started:
            self._start(emb.gaussians.cov.device)
        if self._pool is not None:
            fut = self._pool.submit(job)
        else:
            fut = Future()
            fut.set_result(job())
        self._jobs.append((fut, dict(emb=emb, variant=variant, method=method, sigma=float(sigma), **extra)))
        return fut

    def rows(self) -> list[dict[str, Any]]:
        """Wait for every job; the rows in the order the variants were added."""
        try:
            out, values = [], []
            for fut, info in self._jobs:
                _, metrics, resampled = fut.result()
                out.append(_row(self.experiment, info.pop("emb"), info.pop("variant"), info.pop("method"), metrics,
                                **info))  # fmt: skip
                values.append(resampled)
            self.bootstrap = {m: np.stack([v[m] for v in values]) for m in PAPER_METRICS} if values else {}
            return out
        finally:
            self.close()

    def close(self) -> None:
        """Stop the pool, if any (cancelling jobs not started), and restore the number of torch threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._threads is not None:
            self._threads.__exit__(None, None, None)
            self._threads = None

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
        **{m: metrics[m] for m in PAPER_METRICS}, "seconds": round(t_la + t_m, 3), "seconds_linalg": round(t_la, 3),
        "seconds_metrics": round(t_m, 3), "n_train": emb.n_train, "n_test": emb.test.shape[0],
        "embeddings_key": emb.key, "weights_id": emb.weights_id,
    }  # fmt: skip
