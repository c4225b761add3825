"""Tiling: PaDiM on images larger than the backbone's input, without shrinking them (anomalib's ``Tiler``).

The paper resizes every image to 256 and crops 224 (Sec. 4.1), so a 20 px defect on a 1,024 px image keeps 5 px.
With tiling, the whole image (at its own size, or a chosen one) is cut into square tiles of ``tile`` pixels every
``stride`` pixels, each tile is embedded by the backbone (Sec. 3.1), and the tiles' embeddings are stitched back
into one embedding grid of the whole image, overlapping positions averaged (anomalib's ``Tiler.untile``). The
Gaussians (Sec. 3.2) and the Mahalanobis distance (Sec. 3.3) are then those of that grid, one per position of the
whole image, and the anomaly map has the image's size.

Borders: when ``(size - tile)`` is not a multiple of ``stride`` the image is padded at its bottom and right, by
mirroring (``reflect``), up to the next size that the tiles cover exactly (anomalib's ``padding`` mode), and the
anomaly map is cropped back to the image. ``tile`` and ``stride`` must be multiples of the backbone's feature
stride (4 for ResNet's ``layer1``), so that every tile lands on whole grid positions.

Memory: the backbone sees one tile position of a batch at a time (``batch`` tiles), whatever the image's size; the
stitched grid itself grows with the image, as the Gaussians of the whole image do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureExtractor


def padded_size(size: int, tile: int, stride: int) -> int:
    """The side the tiles cover exactly: ``tile + ceil((size - tile) / stride) * stride`` (>= ``size``)."""
    if tile > size:
        raise ValueError(f"tile {tile} is larger than the image side {size}; pass a smaller --tile or a larger "
                         "--resize")  # fmt: skip
    return tile + math.ceil((size - tile) / stride) * stride


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """First pixel of each tile along one side of ``size`` pixels (after the padding of :func:`padded_size`)."""
    return list(range(0, padded_size(size, tile, stride) - tile + 1, stride))


class TiledExtractor(nn.Module):
    """A :class:`~padim_repro.features.FeatureExtractor` applied tile by tile: images (B, 3, H, W) -> the stitched
    embeddings (B, d, Hp / r, Wp / r) of the padded image (Hp x Wp, :func:`padded_size`), r the feature stride.

    Its interface is the extractor's (``channel_indices``, ``weights_id``, ``n_channels``, ``forward(images,
    out)``), so :class:`~padim_repro.model.Padim` fits and scores with it unchanged. ``image_size`` is the
    (height, width) of the images of one model, fixed by the first images seen (or by the model file): images of
    another size are refused, since their grid positions would not be the Gaussians' positions.
    """

    def __init__(self, extractor: FeatureExtractor, tile: int, stride: int):
        super().__init__()
        self.extractor, self.tile, self.stride = extractor, tile, stride
        self.image_size: tuple[int, int] | None = None

    @property
    def channel_indices(self) -> torch.Tensor:
        return self.extractor.channel_indices

    @property
    def weights_id(self) -> str:
        return self.extractor.weights_id

    @property
    def n_channels(self) -> int:
        return self.extractor.n_channels

    def check_size(self, height: int, width: int) -> None:
        """Refuse a tile larger than the image, or images of another size than this model's."""
        padded_size(min(height, width), self.tile, self.stride)
        if self.image_size is not None and (height, width) != self.image_size:
            h, w = self.image_size
            raise ValueError(f"images of {width}x{height} pixels (width x height) cannot be scored by a model of "
                             f"{w}x{h} images (tiling keeps the image's pixels); pass --resize {h}x{w}")  # fmt: skip

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Stitched embeddings (B, d, h, w), channels_last; written into ``out`` (B, h, w, d) when given."""
        b, _, height, width = images.shape
        self.check_size(height, width)
        self.image_size = (height, width)
        t, s = self.tile, self.stride
        hp, wp = padded_size(height, t, s), padded_size(width, t, s)
        if (hp, wp) != (height, width):
            images = F.pad(images, (0, wp - width, 0, hp - height), mode="reflect")
        total: torch.Tensor | None = None
        for y in tile_starts(height, t, s):
            for x in tile_starts(width, t, s):
                emb = self.extractor(images[:, :, y:y + t, x:x + t])  # (B, d, g, g), channels_last
                g = emb.shape[-1]
                if total is None:
                    r = t // g
                    if g * r != t or s % r or emb.shape[-2] != g:
                        raise ValueError(f"tile {t} and stride {s} must be multiples of the backbone's feature stride "
                                         f"({max(r, 1)} pixels; a {t}-pixel tile gives {g} positions)")  # fmt: skip
                    shape = (b, hp // r, wp // r, emb.shape[1])
                    total = out if out is not None else emb.new_empty(shape)
                    if tuple(total.shape) != shape:
                        raise ValueError(f"out has shape {tuple(total.shape)}; these images' embeddings have {shape}")
                    total.zero_()
                    count = torch.zeros(shape[1:3], dtype=emb.dtype, device=emb.device)
                total[:, y // r:y // r + g, x // r:x // r + g] += emb.permute(0, 2, 3, 1)
                count[y // r:y // r + g, x // r:x // r + g] += 1
        assert total is not None  # at least one tile: padded_size >= tile
        total /= count[None, :, :, None]
        return total.permute(0, 3, 1, 2)


def tiled_maps_size(image_size: tuple[int, int], tile: int, stride: int) -> tuple[int, int]:
    """(Hp, Wp): the size of the padded image, the anomaly map's size before it is cropped back to the image."""
    return padded_size(image_size[0], tile, stride), padded_size(image_size[1], tile, stride)
