r"""Learning of the normality (PaDiM Sec. 3.2): one multivariate Gaussian per patch position.

For position :math:`(i, j)` with training embeddings :math:`x_k`, :math:`k = 1, \dots, N`, the paper estimates
:math:`\mu_{ij} = \frac{1}{N} \sum_k x_k` and
:math:`\Sigma_{ij} = \frac{1}{N-1} \sum_k (x_k - \mu_{ij})(x_k - \mu_{ij})^T + \epsilon I` (Eq. 1); scoring
(:mod:`padim_repro.scoring`, Eq. 2) needs the precision :math:`(\Sigma_{ij} + \epsilon I)^{-1}`.

How it is computed, and why:

* **Streaming, in place.** :class:`GaussianAccumulator` keeps, per position, the sum of the shifted embeddings
  (float64) and their co-moment :math:`S_2 = \sum_k (x_k - c)(x_k - c)^T` in one float32 (P, d, d) buffer, added
  to by a batched matrix product that writes into it (``baddbmm_``): no per-batch temporary of the buffer's size,
  memory flat in N, and the speed of a float32 GEMM. The shift :math:`c` is the mean of the first batch at each
  position, so the shifted values are centred and float32 accumulation keeps its accuracy (no large-mean
  cancellation); at the end :math:`\Sigma = (S_2 - N m m^T) / (N - 1)`, with :math:`m` the mean of the shifted
  values.
* **Batch-size independent.** Embeddings are copied into one buffer of :func:`block_size` images and added a full
  buffer at a time, whatever the caller's batch size, so the float32 sums, hence the results, depend only on the
  images and their order; the buffer is the only temporary of the update (20 MB for R18 at 224 px).
* **Precision by Cholesky, sized for the device.** :func:`fill_precisions` inverts :math:`\Sigma + \epsilon I` by
  Cholesky factorisation and the inverse of the factor in the precision's float32 (``_precision_``), chunk of
  positions by chunk, writing each chunk's precision over the co-moment buffer: the one (P, d, d) buffer becomes the
  precision in place (3.5 GiB for WR50-Rd550 at 224 px), which keeps a WR50-scale fit under 8 GB. On a CPU the
  chunks are sized to the cache and handed to one worker thread per core, each with one torch thread (batched LAPACK
  on small matrices runs on one core); on a GPU they are sized from its free memory (a WR50-Rd550 fit in a few
  chunks, not 1,046) and run in order, without threads (CUDA's linear-algebra library is loaded lazily, and not from
  several threads at once). Either way the factorisations' status is read once, after the last chunk: one host
  synchronisation, not one per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

#: Work space per chunk of positions on a CPU, counted at 8 bytes per matrix entry: a chunk's float32 covariance and its
#: float32 Cholesky factor (bounds the transient memory of :func:`fill_precisions`), sized to a core's cache.
_CHUNK_BYTES = 8 * 2**20
#: On a GPU: this share of its free memory per chunk, at most ``_GPU_CHUNK_MAX`` (a chunk's covariance, factor, inverse
#: factor and precision: 16 bytes per entry). Larger chunks gain little (WR50-Rd550 on an H200: 0.31 s with 512 MiB
#: chunks, 0.21 s in one chunk of 22.8 GiB peak), and the cap keeps a WR50-Rd550 fit's GPU peak near 6 GiB.
_GPU_CHUNK_SHARE, _GPU_CHUNK_MAX = 8, 2**30
#: Images added to the co-moment at a time when it fits in a large CPU cache (R18: 125 MB), and when it does not (all
#: 448 channels: 2.5 GB): each block reads and writes the whole co-moment once, so a large one needs large blocks to
#: stay compute-bound, while a small block keeps the buffer (and the peak memory) small. A function of the shape only,
#: so results never depend on the caller's batch size.
BLOCK, LARGE_BLOCK, LARGE_CO_MOMENT = 16, 64, 256 * 2**20


def block_size(dim: int, n_positions: int) -> int:
    """Images per block for a co-moment of ``n_positions`` x ``dim`` x ``dim`` float32 values."""
    return BLOCK if 4 * n_positions * dim * dim <= LARGE_CO_MOMENT else LARGE_BLOCK


def chunk_bytes(device: torch.device | str = "cpu") -> int:
    """The work space of one chunk of positions on ``device``: ``_CHUNK_BYTES`` on a CPU; on a GPU a share of its
    free memory (``_GPU_CHUNK_SHARE``), capped at ``_GPU_CHUNK_MAX`` and never below the CPU's budget."""
    device = torch.device(device)
    if device.type != "cuda":
        return _CHUNK_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return max(_CHUNK_BYTES, min(free // _GPU_CHUNK_SHARE, _GPU_CHUNK_MAX))


def position_slices(n_positions: int, dim: int, device: torch.device | str = "cpu") -> list[slice]:
    """Slices of positions whose (d, d) matrices, at 8 bytes per entry, fit in ``device``'s budget
    (:func:`chunk_bytes`)."""
    step = max(1, chunk_bytes(device) // (8 * dim * dim))
    return [slice(start, start + step) for start in range(0, n_positions, step)]


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


def _precision_(cov: torch.Tensor, epsilon: float, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(:math:`(\Sigma + \epsilon I)^{-1}`, status) of a stack of covariances (..., d, d), computed in ``dtype``
    (default: cov's), adding :math:`\epsilon I` to ``cov`` itself when it is already of that dtype (a temporary the
    caller owns). ``status`` is the factorisation's ``info`` (0 where it succeeded), left on the device: the caller
    reads it once for all chunks (:func:`check_status`).

    Cholesky factor :math:`L`, then :math:`L^{-T} L^{-1}`, both in ``dtype``, by the exact inverse that is fastest on
    the device (:data:`CHOLESKY_INVERSE`). The rounding error grows with :math:`\mathrm{cond}(\Sigma + \epsilon I)`,
    so ``tests/test_gaussian.py`` holds float32 on a synthetic covariance of condition 1e4 (fewer images than channels,
    as WR50-Rd550) within 5e-6 relative (Frobenius, per position) of the float64 inverse, each inverse, and
    ``make bench`` reports the error on real embeddings against a float64 two-pass reference. A float64 factor cuts
    that error (15x on the synthetic case, 1.3x on bottle's R18-Rd100 embeddings) and makes
    :meth:`GaussianAccumulator.finalize` of a WR50-Rd550 fit about 1.4x slower on a CPU.
    """
    cov = cov if dtype is None else cov.to(dtype)
    cov.diagonal(dim1=-2, dim2=-1).add_(epsilon)
    chol, info = torch.linalg.cholesky_ex(cov)
    return CHOLESKY_INVERSE[cov.device.type == "cuda"](chol), info


def _potri(chol: torch.Tensor) -> torch.Tensor:
    """:math:`L^{-T} L^{-1}` by LAPACK's potri (``torch.cholesky_inverse``)."""
    return torch.cholesky_inverse(chol)


def _trsm_gemm(chol: torch.Tensor) -> torch.Tensor:
    """:math:`L^{-T} L^{-1}` as :math:`L^{-1}` by a triangular solve against the identity, then one batched GEMM."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)
    return inv.mT @ inv


#: The exact inverse of a Cholesky factor, by device (False: CPU, True: CUDA), the faster one as ``make bench``
#: measures them (``inverse_s``): on 2 EPYC cores, one thread, potri takes 0.86x (R18-Rd100 chunk) to 0.34x
#: (WR50-Rd550) the time of solve + GEMM; on an H200, for all 3,136 matrices of d = 550, solve + GEMM 0.081 s against
#: potri 0.21 s.
CHOLESKY_INVERSE: dict[bool, Callable[[torch.Tensor], torch.Tensor]] = {False: _potri, True: _trsm_gemm}


def check_status(statuses: list[torch.Tensor]) -> None:
    """Raise if any factorisation failed (one host synchronisation for all chunks): the covariance was not positive
    definite, which a finite covariance plus epsilon I always is, so the embeddings held NaN or inf, or epsilon is 0
    with fewer images than channels."""
    if statuses and int(torch.stack([s.max() for s in statuses]).max()) > 0:
        raise ValueError("a covariance is not positive definite: use epsilon > 0, or check the embeddings for NaN "
                         "or inf (the backbone weights)")


def over_positions(fn: Callable[[slice], None], n_positions: int, dim: int, device: torch.device | str = "cpu",
                   workers: int | None = None) -> None:  # fmt: skip
    """Call ``fn(sl)`` for every chunk ``sl`` of :func:`position_slices`; on CPU in ``workers`` threads (default:
    one per core) with one torch thread each, since batched LAPACK on small matrices runs on one core."""
    slices = position_slices(n_positions, dim, device)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if torch.device(device).type != "cpu" or workers <= 1 or len(slices) == 1:
        for sl in slices:
            fn(sl)
        return
    inference = torch.is_inference_mode_enabled()  # thread-local: the workers run in the caller's mode

    def run(sl: slice) -> None:
        with torch.inference_mode(inference):
            fn(sl)

    with torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(run, sl) for sl in slices]:
            future.result()


def fill_precisions(out: torch.Tensor, covariance: Callable[[slice], torch.Tensor], epsilon: float,
                    workers: int | None = None) -> torch.Tensor:  # fmt: skip
    r"""Eq. 1 turned into what Eq. 2 needs: ``out[sl]`` :math:`= (\mathrm{covariance}(sl) + \epsilon I)^{-1}` for
    every chunk ``sl``.

    ``out`` is (P, k, k); ``covariance(sl)`` returns the covariances of the positions ``sl`` (a chunk of the
    accumulator's, a sub-block of it, or a projection :math:`W^T \Sigma W`, in any float dtype) as a new tensor, which
    is rounded to ``out``'s dtype and regularised in place.
    ``covariance`` may read ``out[sl]`` itself (it is called before ``out[sl]`` is written), so a buffer can become its
    own precision. On a CPU chunks run in parallel (:func:`over_positions`); the factorisations' status is checked once,
    at the end (:func:`check_status`).
    """
    statuses: list[torch.Tensor] = []

    def one(sl: slice) -> None:
        out[sl], status = _precision_(covariance(sl), epsilon, out.dtype)
        statuses.append(status)  # list.append is atomic: safe from the worker threads

    over_positions(one, out.shape[0], out.shape[-1], out.device, workers)
    check_status(statuses)
    return out


class GaussianAccumulator:
    """Streaming per-position mean and covariance of embeddings of shape (B, d, P) or (B, d, H, W)."""

    def __init__(self, dim: int, n_positions: int, device: torch.device | str = "cpu"):
        self.dim, self.n_positions = dim, n_positions
        self.device = torch.device(device)
        self._n = 0  # images added to the co-moment (the others are pending, see BLOCK)
        self.shift: torch.Tensor | None = None  # (P, d) float32: the first block's mean
        self.s1 = torch.zeros(n_positions, dim, dtype=torch.float64, device=self.device)
        # Not zeroed: the first block's product overwrites it (beta = 0), which saves writing the whole buffer once
        # (3.5 GiB for WR50-Rd550, seconds of page faults and memset before the first image counts).
        self.s2: torch.Tensor | None = torch.empty(n_positions, dim, dim, dtype=torch.float32, device=self.device)
        self._block: torch.Tensor | None = None  # (BLOCK, P, d) float32: images waiting to be added
        self._n_pending = 0

    def update(self, embeddings: torch.Tensor) -> None:
        """Add a batch of embeddings (B, d, P) or (B, d, H, W) (any memory format; channels_last is read in place)."""
        if self.s2 is None:
            raise RuntimeError("the accumulator was finalized; it cannot be updated")
        x = embeddings.movedim(1, -1).reshape(embeddings.shape[0], -1, self.dim)  # (B, P, d): a view if channels_last
        if x.shape[1] != self.n_positions:
            raise ValueError(f"embeddings have {x.shape[1]} positions, the accumulator {self.n_positions}")
        size = block_size(self.dim, self.n_positions)
        if self._block is None:
            self._block = torch.empty(size, self.n_positions, self.dim, dtype=torch.float32, device=self.device)
        start = 0
        while start < x.shape[0]:  # copy into the block buffer; add it whenever it is full
            take = min(size - self._n_pending, x.shape[0] - start)
            self._block[self._n_pending:self._n_pending + take] = x[start:start + take]
            self._n_pending += take
            start += take
            if self._n_pending == size:
                self._add_block()

    def _add_block(self) -> None:
        """Add the buffered images: shift them in place, then one in-place batched product into the co-moment."""
        x = self._block[: self._n_pending]  # (size, P, d)
        if self.shift is None:
            self.shift = x.mean(dim=0)
        x.sub_(self.shift)
        self.s1 += x.sum(dim=0)  # a float32 sum of one block's shifted values, accumulated in float64
        xt = x.permute(1, 0, 2)  # (P, size, d), every position's matrix with unit column stride: no copy
        self.s2.baddbmm_(xt.transpose(1, 2), xt, beta=1 if self._n else 0)  # beta 0: ignore the unset buffer
        self._n += self._n_pending
        self._n_pending = 0

    @property
    def n(self) -> int:
        """Number of images given so far."""
        return self._n + self._n_pending

    def _flush(self) -> None:
        if self._n_pending:
            self._add_block()
        self._block = None
        if self.s2 is None:
            raise RuntimeError("the accumulator was finalized")
        if self._n < 2:
            raise ValueError(f"need at least 2 training images to estimate a covariance, got {self._n}")

    def mean(self) -> torch.Tensor:
        """Mean (P, d) float64 of the embeddings added so far; a ValueError if it is not finite (NaN or inf in the
        embeddings, which would make every covariance not finite)."""
        self._flush()
        mean = self.shift.to(torch.float64) + self.s1 / self._n
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("the embeddings hold NaN or inf (check the backbone weights)")
        return mean

    def _covariance(self, sl: slice) -> torch.Tensor:
        """The unbiased covariance (p, d, d) float32 of the positions ``sl`` (Eq. 1 without epsilon I).

        In float32 like the co-moment: the shift centres the values, so :math:`N m m^T` is small against
        :math:`S_2` and the subtraction cancels nothing.
        """
        m = (self.s1[sl] / self._n).to(torch.float32)
        cov = self.s2[sl].clone()  # a new tensor, so the in-place steps below leave s2 alone
        return cov.baddbmm_(m[:, :, None], m[:, None, :], alpha=-self._n).div_(self._n - 1)

    def covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean (P, d) float64 and the unbiased covariance (P, d, d) float32, without the :math:`\epsilon I` of Eq. 1.

        For statistics of sub-blocks or projections of the embedding (the ablations), which
        :func:`fill_precisions` then turns into precisions. The covariance is written over the co-moment buffer
        (no second buffer of its size), so the accumulator cannot be used afterwards.
        """
        mean = self.mean()
        for sl in position_slices(self.n_positions, self.dim, self.device):
            self.s2[sl] = self._covariance(sl)
        cov, self.s2 = self.s2, None
        return mean, cov

    def finalize(self, epsilon: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean (P, d) and precision :math:`(\Sigma + \epsilon I)^{-1}` (P, d, d), both float32.

        The precision is written over the co-moment buffer (:func:`fill_precisions`), so the accumulator cannot be
        updated afterwards.
        """
        mean = self.mean()
        precision = fill_precisions(self.s2, self._covariance, epsilon)
        self.s2 = None
        return mean.to(torch.float32), precision
