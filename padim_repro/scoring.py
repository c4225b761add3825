r"""Inference: anomaly map computation (PaDiM Sec. 3.3).

The anomaly score of patch :math:`(i, j)` is the Mahalanobis distance (Eq. 2)
:math:`M(x_{ij}) = \sqrt{(x_{ij} - \mu_{ij})^T \Sigma_{ij}^{-1} (x_{ij} - \mu_{ij})}`, computed for every position
at once. The map of distances is upsampled bilinearly to the input (crop) size and smoothed with a Gaussian filter
of :math:`\sigma = 4` (Sec. 4.1); the image score is the maximum of the map. Bilinear is what every public
reproduction uses; the one translation of the paper read offline says bicubic, which ``upsample="bicubic"`` gives
(the protocol ablation compares the two).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: Positions per batched matrix product: bounds the (positions, batch, d) work tensors.
_POSITIONS_PER_STEP = 512

def mahalanobis(embeddings: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Eq. 2 for all positions: embeddings (B, d, H, W), mean (H*W, d), precision (H*W, d, d) -> (B, H, W)."""
    b, d, h, w = embeddings.shape
    # (P, B, d): a view of channels_last embeddings (what FeatureExtractor returns); each chunk's delta is the copy.
    x = embeddings.movedim(1, -1).reshape(b, h * w, d).transpose(0, 1).to(precision.dtype)
    out = torch.empty(h * w, b, dtype=precision.dtype, device=precision.device)
    for start in range(0, h * w, _POSITIONS_PER_STEP):
        sl = slice(start, start + _POSITIONS_PER_STEP)
        delta = x[sl] - mean[sl, None, :]
        out[sl] = torch.bmm(delta, precision[sl]).mul_(delta).sum(-1)
    return out.clamp_min_(0).sqrt_().T.reshape(b, h, w)

def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius int(truncate * sigma + 0.5), as scipy.ndimage.gaussian_filter uses."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()

def _symmetric_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Pad by mirroring with the edge repeated (d c b a | a b c d), scipy's ``mode='reflect'``."""
    n = x.shape[dim]
    if r > n:
        raise ValueError(f"blur radius {r} exceeds the map size {n}; use a smaller sigma")
    left = x.narrow(dim, 0, r).flip(dim)
    right = x.narrow(dim, n - r, r).flip(dim)
    return torch.cat([left, x, right], dim=dim)

def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps, truncated at 4 sigma, symmetric borders (= scipy's default)."""
    if sigma == 0:
        return maps
    k = gaussian_kernel1d(sigma).to(maps.dtype).to(maps.device)
    r = (k.numel() - 1) // 2
    x = maps[:, None]
    x = F.conv2d(_symmetric_pad(x, r, 3), k.view(1, 1, 1, -1))
    x = F.conv2d(_symmetric_pad(x, r, 2), k.view(1, 1, -1, 1))
    return x[:, 0]

#: Map upsampling modes of :func:`anomaly_maps` (``F.interpolate``'s names); both are separable.
UPSAMPLING = ("bilinear", "bicubic")


@functools.lru_cache(maxsize=16)
def _axis_operator(n_in: int, n_out: int, sigma: float, dtype: torch.dtype, device: torch.device,
                   mode: str = "bilinear") -> torch.Tensor:  # fmt: skip
    """(n_out, n_in) matrix of 1-D upsampling (``mode``'s 1-D kernel, align_corners=False) followed by the 1-D
    Gaussian blur.

    Both steps are linear and separable, so on a (h, w) map the 2-D bilinear (or bicubic) upsampling followed by
    the separable blur equals ``A_h @ map @ A_w.T``: two small matrix products instead of a 33-tap convolution over
    every pixel. The 1-D kernel is ``F.interpolate``'s own, applied to unit impulses on a grid of height 1.
    """
    if mode not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {UPSAMPLING}, got {mode!r}")
    basis = torch.eye(n_in, dtype=torch.float64)[:, None, None, :]  # (n_in, 1, 1, n_in): one unit impulse per row
    rows = F.interpolate(basis, size=(1, n_out), mode=mode, align_corners=False)[:, 0, 0]  # (n_in, n_out)
    if sigma:
        k = gaussian_kernel1d(sigma)
        r = (k.numel() - 1) // 2
        rows = F.conv1d(_symmetric_pad(rows[:, None], r, 2), k.view(1, 1, -1))[:, 0]
    return rows.T.to(dtype=dtype, device=device).contiguous()


def anomaly_maps(distances: torch.Tensor, size: int | tuple[int, int], sigma: float,
                 upsample: str = "bilinear") -> torch.Tensor:  # fmt: skip
    """Bilinear (or bicubic) upsampling of (B, h, w) distances to (B, size, size), or to (B, height, width) for a
    ``size`` of (height, width), then the Gaussian blur (Sec. 3.3, 4.1).

    Computed exactly as ``gaussian_blur(F.interpolate(..., mode=upsample), sigma)`` would, through the separable
    linear operators of ``_axis_operator``.
    """
    _, h, w = distances.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    a_h = _axis_operator(h, out_h, float(sigma), distances.dtype, distances.device, upsample)
    same = (w, out_w) == (h, out_h)
    a_w = a_h if same else _axis_operator(w, out_w, float(sigma), distances.dtype, distances.device, upsample)
    return a_h @ distances @ a_w.T


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image-level anomaly score: the maximum of each anomaly map (Sec. 4.1)."""
    return maps.flatten(1).amax(dim=1)

__all__ = ["mahalanobis", "gaussian_kernel1d", "gaussian_blur", "anomaly_maps", "image_scores"]
