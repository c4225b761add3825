"""The ablations' starting point: one category through the backbone, once per experiment, in memory.

Every ablation variant of a category starts from the same statistics: the per-position mean and covariance of the
training embeddings over a set of channels (all 448 channels of ResNet-18's layer1..layer3 on the layer1 grid, or a
subset), estimated by the method's own :class:`padim_repro.gaussian.GaussianAccumulator` as the images stream through
the backbone, and the test embeddings over the same channels. Nothing is written to disk: the ResNet-18 forward
over a category takes seconds, a disk cache of its embeddings would take 1.6 GB per category.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import PadimConfig, resolve_device
from ...data import MVTecDataset, batches, find_samples
from ...features import FeatureExtractor
from ...gaussian import GaussianAccumulator
from ...memory import reuse_freed_memory

#: The ablations' backbone and layers (the paper's R18 protocol).
BACKBONE = "resnet18"
LAYERS = ("layer1", "layer2", "layer3")


def log(message: str) -> None:
    """A progress line on stderr (the notebooks' stderr is not shown in the book)."""
    print(message, file=sys.stderr, flush=True)


def content_hash(data: Any, n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of ``data`` as sorted JSON: the key of a result row."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass
class PositionGaussians:
    """Per-position mean (P, D) float64 and covariance (P, D, D) float32 of N training embeddings over ``channels``.

    ``cov`` is the unbiased estimate 1/(N-1) sum_k (x_k - mu)(x_k - mu)^T without the epsilon I of Eq. 1 (each
    variant adds it to its own sub-block), from :meth:`padim_repro.gaussian.GaussianAccumulator.covariance`;
    projections of it are computed in float64, and :func:`padim_repro.gaussian.fill_precisions` regularises and
    inverts every block in float32, as the model does. ``channels`` are the absolute indices of the D channels,
    ascending.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    n: int
    channels: torch.Tensor


@dataclass
class Embeddings:
    """One category seen by the backbone: training statistics, test embeddings and the test ground truth.

    ``test`` (M, D, h, w) float32 holds the channels of ``gaussians.channels``; ``layer_channels`` counts every
    channel of each layer of the backbone (448 = 64 + 128 + 256 for ResNet-18).
    """

    category: str
    key: str
    gaussians: PositionGaussians
    test: torch.Tensor
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    layers: tuple[str, ...]
    layer_channels: tuple[int, ...]
    resize: int
    crop: int
    weights_id: str
    seconds: float

    @property
    def n_channels(self) -> int:
        """Channels of the whole embedding (all layers)."""
        return sum(self.layer_channels)

    @property
    def n_train(self) -> int:
        return self.gaussians.n

    def layer_block(self, layer: str) -> torch.Tensor:
        """Indices of ``layer``'s channels among all channels."""
        i = self.layers.index(layer)
        start = sum(self.layer_channels[:i])
        return torch.arange(start, start + self.layer_channels[i])


class CategoryEmbedder:
    """Computes :class:`Embeddings` of categories under one preprocessing, with the backbone built once.

    ``key(category)`` hashes everything the embeddings depend on (category, backbone, layers, preprocessing, the
    weights' fingerprint, every data file's relative path and size) without running the backbone.
    """

    def __init__(self, data_root: str | Path, weights: str, resize: int = 256, crop: int = 224,
                 interpolation: str = "bicubic", device: str = "auto", batch_size: int = 8,
                 backbone: str = BACKBONE, layers: Sequence[str] = LAYERS):  # fmt: skip
        # Validates the preprocessing parameters the same way a PaDiM run does.
        self.config = PadimConfig(backbone=backbone, layers=tuple(layers), d=0, resize=resize, crop=crop,
                                  interpolation=interpolation, weights=weights, batch_size=batch_size,
                                  device=device)  # fmt: skip
        self.data_root = Path(data_root)
        self.device = resolve_device(device)
        self._extractor: FeatureExtractor | None = None

    @property
    def extractor(self) -> FeatureExtractor:
        """The backbone with every channel kept; built once."""
        if self._extractor is None:
            c = self.config
            self._extractor = FeatureExtractor(c.backbone, c.layers, c.weights, None, c.seed).to(self.device)
        return self._extractor

    @property
    def weights_id(self) -> str:
        return self.extractor.weights_id

    def describe(self, category: str) -> dict[str, Any]:
        """Everything the embeddings of ``category`` depend on (what :meth:`key` hashes)."""
        cat_dir = self.data_root / category
        files = []
        for split in ("train", "test"):
            for s in find_samples(self.data_root, category, split):
                files += [[p.relative_to(cat_dir).as_posix(), p.stat().st_size]
                          for p in (s.image_path, s.mask_path) if p is not None]  # fmt: skip
        c = self.config
        return {"category": category, "backbone": c.backbone, "layers": list(c.layers), "resize": c.resize,
                "crop": c.crop, "interpolation": c.interpolation, "weights_id": self.weights_id, "files": files}

    def key(self, category: str) -> str:
        """The identity of ``category``'s embeddings under this configuration."""
        return content_hash(self.describe(category))

    def embed(self, category: str, channels: torch.Tensor | None = None, progress: bool = True) -> Embeddings:
        """Stream ``category``'s training images into the Gaussians of ``channels`` (all by default) and keep its
        test embeddings over them."""
        t0 = time.perf_counter()
        c = self.config
        key = self.key(category)
        train, test = (MVTecDataset(find_samples(self.data_root, category, s), c.resize, c.crop, c.interpolation)
                       for s in ("train", "test"))  # fmt: skip
        n_all = self.extractor.n_channels
        channels = torch.arange(n_all) if channels is None else torch.as_tensor(channels, dtype=torch.long).cpu()
        pick = None if channels.numel() == n_all else channels.to(self.device)
        if progress:
            log(f"  {category}: backbone over {len(train)} training and {len(test)} test images "
                f"(resize {c.resize}, crop {c.crop}, {channels.numel()} channels)")  # fmt: skip
        acc: GaussianAccumulator | None = None
        tests, masks = [], []
        with reuse_freed_memory():  # as Padim.fit and predict
            for x, _ in batches(train, c.batch_size):
                emb = self.extractor(x.to(self.device))
                emb = emb if pick is None else emb.index_select(1, pick)
                if acc is None:
                    acc = GaussianAccumulator(emb.shape[1], emb.shape[2] * emb.shape[3], self.device)
                acc.update(emb)
            assert acc is not None  # find_samples never returns an empty split
            mean, cov = acc.covariance()
            for x, m in batches(test, c.batch_size):
                emb = self.extractor(x.to(self.device))
                tests.append((emb if pick is None else emb.index_select(1, pick)).cpu())
                masks.append(m.numpy())
        return Embeddings(
            category=category, key=key, gaussians=PositionGaussians(mean, cov, len(train), channels),
            test=torch.cat(tests), masks=np.concatenate(masks), labels=test.labels,
            defect_types=test.defect_types, layers=c.layers,
            layer_channels=tuple(self.extractor.model.feature_info.channels()), resize=c.resize, crop=c.crop,
            weights_id=self.weights_id, seconds=time.perf_counter() - t0,
        )  # fmt: skip
