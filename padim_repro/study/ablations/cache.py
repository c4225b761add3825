"""The ablations' embedding cache: backbone embeddings of whole categories, computed once and kept on disk.

Every ablation variant of a category starts from the same embeddings (all 448 channels of ResNet-18's layer1..3 on
the layer1 grid, float32), so the backbone runs once per (category, backbone, layers, preprocessing, weights, data
files) and :class:`EmbeddingCache` keeps them under ``.cache/embeddings``.
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
from ...data import MVTecDataset, Sample, batches, find_samples
from ...features import FeatureExtractor
from ...storage import atomic_write, write_json
from ..notebooks import REPO_ROOT

#: The ablations' backbone and layers (the paper's R18 protocol).
BACKBONE = "resnet18"
LAYERS = ("layer1", "layer2", "layer3")
DEFAULT_CACHE = REPO_ROOT / ".cache" / "embeddings"
#: Bumped whenever the cached embeddings or distance maps change meaning (a new value never reads old files).
CACHE_FORMAT = 1


def log(message: str) -> None:
    """A progress line on stderr (the notebooks' stderr is not shown in the book)."""
    print(message, file=sys.stderr, flush=True)


def content_hash(data: Any, n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of ``data`` as sorted JSON: the key of a cache entry or a result row."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n]


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
        return content_hash(self.describe(category))

    def folder(self, category: str, key: str | None = None) -> Path:
        c = self.config
        return self.cache_dir / f"{category}-{c.backbone}-r{c.resize}-c{c.crop}-{key or self.key(category)}"

    def load(self, category: str, progress: bool = True) -> Embeddings:
        """The embeddings of ``category``: read from the cache, or computed by the backbone and cached."""
        t0 = time.perf_counter()
        samples = self._samples(category)
        desc = self.describe(category, samples)
        key = content_hash(desc)
        folder = self.folder(category, key)
        meta_path = folder / "meta.json"
        from_cache = meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key
        if not from_cache:
            if progress:
                log(f"  {category}: computing backbone embeddings (resize {self.config.resize}, crop "
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
