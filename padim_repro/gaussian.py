"""Learning of the normality (PaDiM Sec. 3.2): one multivariate Gaussian per patch position.

For position (i, j) with training embeddings x_k, k = 1..N, the paper estimates
mu_ij = mean_k x_k and Sigma_ij = 1/(N-1) sum_k (x_k - mu_ij)(x_k - mu_ij)^T + epsilon I (Eq. 1).

The statistics are accumulated in a stream over batches, so memory does not grow with N: the running mean is kept
in float64; each batch's centred co-moment is computed in float64 (chunk of positions by chunk) and merged with
Chan et al.'s pairwise update ("Updating formulae and a pairwise algorithm for computing sample variances", 1979)
into a running co-moment stored in float32. Storing that one (P, d, d) buffer in float32 (3.5 GiB for WR50-Rd550)
and turning it into the precision in place is what keeps a WR50-scale fit under 8 GB; centring each batch keeps
float32 storage accurate (no large-mean cancellation).
"""

from __future__ import annotations

import torch

#: Bytes of float64 work space per chunk of positions (bounds the transient memory of update and finalize).
_CHUNK_BYTES = 256 * 2**20


def position_slices(n_positions: int, dim: int) -> list[slice]:
    """Slices of positions whose float64 (d, d) matrices fit in the chunk budget."""
    step = max(1, _CHUNK_BYTES // (8 * dim * dim))
    return [slice(start, start + step) for start in range(0, n_positions, step)]


def regularized_precision(cov: torch.Tensor, epsilon: float = 0.01) -> torch.Tensor:
    """(Sigma + epsilon I)^-1 of a stack of covariances (..., d, d) by Cholesky factorisation, in cov's dtype.

    Pass float64 covariances (as :meth:`GaussianAccumulator.finalize` does) for an accurate inverse.
    """
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov + epsilon * eye)
    if int(info.max()) > 0:
        raise ValueError("a covariance is not positive definite; use epsilon > 0")
    return torch.cholesky_inverse(chol)


class GaussianAccumulator:
    """Streaming per-position mean and covariance of embeddings of shape (B, d, P) or (B, d, H, W).

    ``dtype`` is the storage of the running co-moment: float32 (the default, what :class:`~padim_repro.model.Padim`
    uses) or float64.
    """

    def __init__(self, dim: int, n_positions: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):  # fmt: skip
        self.dim, self.n_positions = dim, n_positions
        self.n = 0
        self.mean = torch.zeros(n_positions, dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_positions, dim, dim, dtype=dtype, device=device)

    def update(self, embeddings: torch.Tensor) -> None:
        """Add a batch of embeddings (B, d, P) or (B, d, H, W)."""
        x = embeddings.reshape(embeddings.shape[0], self.dim, -1)
        if x.shape[2] != self.n_positions:
            raise ValueError(f"embeddings have {x.shape[2]} positions, the accumulator {self.n_positions}")
        x = x.permute(2, 0, 1).to(self.mean.device, torch.float64).contiguous()  # (P, B, d)
        nb = x.shape[1]
        n = self.n + nb
        batch_mean = x.mean(dim=1)  # (P, d)
        delta = batch_mean - self.mean
        for sl in position_slices(self.n_positions, self.dim):
            xc = x[sl] - batch_mean[sl, None, :]
            m2b = xc.transpose(1, 2) @ xc  # (p, d, d) batch co-moment about the batch mean
            if self.n:
                m2b += delta[sl, :, None] * delta[sl, None, :] * (self.n * nb / n)
            self.m2[sl] += m2b.to(self.m2.dtype)
        self.mean += delta * (nb / n)
        self.n = n

    def _check_count(self) -> None:
        if self.n < 2:
            raise ValueError(f"need at least 2 training images to estimate a covariance, got {self.n}")

    def covariance(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P, d) float64 and the unbiased covariance 1/(N-1) sum_k (x_k - mu)(x_k - mu)^T (P, d, d) in
        ``dtype``, without the epsilon I of Eq. 1 (for statistics of sub-blocks or projections of the embedding,
        which :func:`regularized_precision` then turns into precisions). Computed chunk of positions by chunk."""
        self._check_count()
        cov = torch.empty(self.m2.shape, dtype=dtype, device=self.m2.device)
        for sl in position_slices(self.n_positions, self.dim):
            cov[sl] = (self.m2[sl].to(torch.float64) / (self.n - 1)).to(dtype)
        return self.mean, cov

    def finalize(self, epsilon: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P, d) and precision (Sigma + epsilon I)^-1 (P, d, d), both float32.

        The precision is computed by Cholesky factorisation (float64, chunk by chunk) and written over the
        co-moment buffer, so the accumulator cannot be updated afterwards.
        """
        self._check_count()
        for sl in position_slices(self.n_positions, self.dim):
            cov = self.m2[sl].to(torch.float64) / (self.n - 1)
            self.m2[sl] = regularized_precision(cov, epsilon).to(torch.float32)
        precision, self.m2 = self.m2, None  # type: ignore[assignment]
        return self.mean.to(torch.float32), precision
