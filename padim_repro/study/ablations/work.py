"""One category's shared work for every ablation: variant distance maps computed once, whichever experiment asks.

The experiments overlap: Rd100 with seed 1024 is a row of Table II, the whole sigma sweep and the PCA probe's
reference; all 448 channels are a row of Tables I and II. :class:`CategoryWork` memoises each variant's distance
maps (thread-safe: the variants run in worker threads, :class:`~padim_repro.study.ablations.variants.VariantRows`), so
one pass over a category computes each variant once, and computes the expensive shared pieces lazily and once: the
covariance rotated into the pooled principal axes (every pooled-PCA variant is then a sub-block of it, like a random
subset) and the per-position eigendecompositions (for the per-position PCA).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future

import torch

from ...features import select_channels
from ...gaussian import over_positions
from .embeddings import Embeddings, PositionGaussians
from .variants import principal_axes, variant_distances


class CategoryWork:
    """Memoised variant distances (M, h, w) of one category's :class:`~.embeddings.Embeddings` with ``epsilon``."""

    def __init__(self, emb: Embeddings, epsilon: float = 0.01):
        self.emb, self.epsilon = emb, epsilon
        self._lock = threading.Lock()
        self._futures: dict[Hashable, Future] = {}

    def _memo(self, key: Hashable, compute: Callable[[], object]) -> object:
        with self._lock:
            future, owner = self._futures.get(key), False
            if future is None:
                future, owner = Future(), True
                self._futures[key] = future
        if owner:
            try:
                future.set_result(compute())
            except BaseException as exc:
                future.set_exception(exc)
                raise
        return future.result()

    # -- variants -------------------------------------------------------------------------------------------------
    def channels(self, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Distances under the Gaussians of a channel subset (absolute indices; all of the embeddings' by default)."""
        idx = self.emb.gaussians.channels if channels is None else torch.as_tensor(channels, dtype=torch.long)
        key = ("channels", tuple(int(i) for i in idx))
        return self._memo(key, lambda: variant_distances(self.emb.gaussians, self.emb.test, idx,
                                                         epsilon=self.epsilon))  # fmt: skip

    def random(self, d: int, seed: int) -> torch.Tensor:
        """Rd``d``: the paper's seeded random channel subset."""
        return self.channels(select_channels(self.emb.n_channels, d, seed))

    def pooled_pca(self, d: int, largest: bool = True) -> torch.Tensor:
        """The ``d`` principal components of all positions pooled with the largest (or smallest) variance: a
        leading (or trailing) sub-block of the covariance rotated into the principal axes."""
        rotated, test = self._rotated()
        n = rotated.mean.shape[1]
        idx = torch.arange(d) if largest else torch.arange(n - d, n)
        return self._memo(("pooled_pca", d, largest), lambda: variant_distances(rotated, test, idx,
                                                                                 epsilon=self.epsilon))  # fmt: skip

    def position_pca(self, d: int, largest: bool = True) -> torch.Tensor:
        """One PCA per position: the ``d`` eigenvectors of each position's covariance with the largest (or
        smallest) eigenvalues."""
        vectors = self._position_axes(d)
        axes = vectors[..., :d] if largest else vectors[..., d:]
        return self._memo(("position_pca", d, largest), lambda: variant_distances(
            self.emb.gaussians, self.emb.test, projection=axes, epsilon=self.epsilon))  # fmt: skip

    # -- shared pieces ------------------------------------------------------------------------------------------
    def _rotated(self) -> tuple[PositionGaussians, torch.Tensor]:
        """The Gaussians and test embeddings in the pooled principal axes (computed once)."""

        def compute() -> tuple[PositionGaussians, torch.Tensor]:
            g = self.emb.gaussians
            w = principal_axes(g)
            w32 = w.to(torch.float32)
            cov = torch.empty_like(g.cov)

            def one(sl: slice) -> None:
                cov[sl] = w32.T @ g.cov[sl] @ w32

            over_positions(one, cov.shape[0], cov.shape[1], cov.device)  # both cores, even from a worker thread
            mean = g.mean @ w
            m, c, h, wd = self.emb.test.shape
            test = self.emb.test.reshape(m, c, h * wd).to(w32.device)  # the test embeddings are kept on the CPU
            test = torch.einsum("mcp,ck->mkp", test, w32).reshape(m, c, h, wd)
            return PositionGaussians(mean, cov, g.n, torch.arange(c)), test

        return self._memo("rotated", compute)

    def _position_axes(self, d: int) -> torch.Tensor:
        """(P, D, 2d): per position, the ``d`` eigenvectors of largest eigenvalue (decreasing), then the ``d`` of
        smallest (decreasing), from one float64 eigendecomposition per position (computed once per ``d``): with
        fewer training images than channels the covariance is singular, with hundreds of repeated eigenvalues, on
        which float32 ``eigh`` fails to converge."""

        def compute() -> torch.Tensor:
            g = self.emb.gaussians
            p, dim = g.mean.shape
            out = torch.empty(p, dim, 2 * d, dtype=torch.float32, device=g.cov.device)

            def one(sl: slice) -> None:
                vectors = torch.linalg.eigh(g.cov[sl].to(torch.float64))[1].to(torch.float32)  # ascending eigenvalues
                out[sl, :, :d] = vectors[..., -d:].flip(-1)
                out[sl, :, d:] = vectors[..., :d].flip(-1)

            over_positions(one, p, dim, g.cov.device)
            return out

        return self._memo(("position_axes", d), compute)
