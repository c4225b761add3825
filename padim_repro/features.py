"""Patch embedding (PaDiM Sec. 3.1): pretrained CNN activations of several levels, concatenated per patch.

Each training or test image gives, at every position (i, j) of the first chosen layer's grid, the vector of all
chosen layers' activations there: coarser maps are upsampled with nearest neighbour to that grid (the paper's
"patch embedding"). A seeded random subset of ``d`` channels is kept (Sec. 3.1 and Table II). The backbone itself
comes from :mod:`padim_repro.backbones`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from .backbones import build_backbone


def select_channels(n_channels: int, d: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of the ``d`` kept channels out of ``n_channels`` (all of them if ``d`` is None).

    The subset is ``random.Random(seed).sample(range(n_channels), d)``, the same subset as the widely used public
    reproduction (``random.seed(1024); random.sample(range(448), 100)``); sorting it changes nothing in the
    Gaussian model (a permutation of the coordinates) and lets each layer's channels be picked separately.
    """
    if d is None or d == n_channels:
        return torch.arange(n_channels)
    if not 0 < d <= n_channels:
        raise ValueError(f"d must be in 1..{n_channels} for this backbone and layers, got {d}")
    return torch.tensor(sorted(random.Random(seed).sample(range(n_channels), d)))


def nearest_indices(size_in: int, size_out: int) -> torch.Tensor:
    """Source rows of nearest-neighbour upsampling from ``size_in`` to ``size_out``, as ``F.interpolate(mode=
    "nearest")`` picks them: ``min(floor(i * size_in / size_out), size_in - 1)`` with the scale in float32."""
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    return (torch.arange(size_out, dtype=torch.float32) * scale).floor().long().clamp_(max=size_in - 1)


def upsample_nearest_into(out: torch.Tensor, part: torch.Tensor) -> None:
    """Write into ``out`` (B, h, w, c) the nearest-neighbour upsampling of ``part`` (B, h_l, w_l, c), channels last.

    For integer factors (the 2x and 4x of layer2 and layer3 at 224 px) each source value fills a k x k block, so one
    copy from an expanded view writes ``out`` with no temporary; otherwise rows and columns are gathered
    (:func:`nearest_indices`). Both equal ``F.interpolate(mode="nearest")``.
    """
    (b, h, w, c), (hl, wl) = out.shape, part.shape[1:3]
    if h % hl == 0 and w % wl == 0:
        kh, kw = h // hl, w // wl
        out.view(b, hl, kh, wl, kw, c).copy_(part[:, :, None, :, None, :].expand(b, hl, kh, wl, kw, c))
    else:
        rows, cols = nearest_indices(hl, h).to(part.device), nearest_indices(wl, w).to(part.device)
        out.copy_(part.index_select(1, rows).index_select(2, cols))


class FeatureExtractor(nn.Module):
    """Backbone + patch embedding: images (B, 3, H, W) -> embeddings (B, d, h, w) on the first layer's grid.

    The embeddings are returned in ``channels_last`` memory format: each position's d values are contiguous, which
    is the layout the Gaussian accumulation and the Mahalanobis distance read (as (positions, images, d) matrices)
    without a transposing copy.
    """

    def __init__(self, backbone: str, layers: Sequence[str], weights: str, d: int | None, seed: int):
        super().__init__()
        self.model, self.weights_id = build_backbone(backbone, layers, weights, seed)
        self.model = self.model.to(memory_format=torch.channels_last)
        channels = list(self.model.feature_info.channels())
        self.n_channels = sum(channels)
        self.register_buffer("channel_indices", select_channels(self.n_channels, d, seed), persistent=False)
        # Split the (sorted) global indices into per-layer local indices, so each layer is reduced before upsampling.
        offsets = torch.tensor([0] + channels).cumsum(0)
        self._per_layer = [
            self.channel_indices[(self.channel_indices >= lo) & (self.channel_indices < hi)] - lo
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())
        ]

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (B, d, h, w) of ``images``; written into ``out`` (B, h, w, d) when given (e.g. a slice of a
        buffer that gathers several batches, which then needs no concatenation), else into a new tensor."""
        # channels_last runs the convolutions about 1.5x faster on CPU (oneDNN) with the same results.
        feats = self.model(images.contiguous(memory_format=torch.channels_last))
        b, (h, w) = images.shape[0], feats[0].shape[-2:]
        shape = (b, h, w, int(self.channel_indices.numel()))
        if out is None:
            out = torch.empty(shape, dtype=feats[0].dtype, device=feats[0].device)
        elif tuple(out.shape) != shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; these images' embeddings have {shape}")
        start = 0
        for f, idx in zip(feats, self._per_layer):
            if idx.numel() == 0:
                continue
            part = f.permute(0, 2, 3, 1)[..., idx.to(f.device)]  # (B, h_l, w_l, d_l)
            upsample_nearest_into(out[..., start:start + idx.numel()], part)
            start += idx.numel()
        return out.permute(0, 3, 1, 2)
