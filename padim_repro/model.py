"""The PaDiM estimator: ``fit`` on normal images, ``predict`` anomaly maps and image scores (PaDiM Sec. 3).

It wires the three parts of the method together (features -> Gaussian -> scoring), in the style of a
scikit-learn estimator: every parameter lives in a :class:`~padim_repro.config.PadimConfig`, learned state ends
in ``_``, and one file holds everything needed to score new images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .config import PadimConfig, resolve_device
from .features import FeatureExtractor
from .gaussian import GaussianAccumulator
from .memory import reuse_freed_memory
from .scoring import anomaly_maps, image_scores, mahalanobis
from .storage import atomic_write, package_versions
from .tiling import TiledExtractor, tiled_maps_size

#: Version of the saved-model format; bumped whenever its content changes meaning.
FORMAT_VERSION = 1

ImageSource = torch.Tensor | Iterable[torch.Tensor | tuple | list]
#: Embeds a batch of images: ``embed(images, out=None)`` -> (B, d, h, w), written into ``out`` (B, h, w, d) if given.
Embed = Callable[..., torch.Tensor]

#: Images scored together: every scoring step reads all positions' precisions (125 MB for R18-Rd100, 3.5 GiB for
#: WR50-Rd550), so scoring several backbone batches at once divides that memory traffic (half the Mahalanobis time
#: of R18-Rd100 with batches of 8). Each image's scores do not depend on it. The batches' embeddings are written into
#: one buffer of this many images (``_embedding_groups``).
SCORE_GROUP = 32


class Padim:
    """PaDiM anomaly detector.

    Args:
        config: every parameter of the model (defaults: the paper's R18-Rd100 protocol).
        progress: show tqdm progress bars (``None``: only on a terminal).
    """

    def __init__(self, config: PadimConfig | None = None, progress: bool | None = None):
        self.config = config or PadimConfig()
        self.progress = progress
        self.device = resolve_device(self.config.device)
        self._extractor: FeatureExtractor | None = None
        self.timings_: dict[str, float] = {}

    # -- features -------------------------------------------------------------------------------------------
    @property
    def extractor(self) -> FeatureExtractor | TiledExtractor:
        """The backbone and channel selection, built on first use (applied tile by tile when ``config.tile``)."""
        if self._extractor is None:
            c = self.config
            self._extractor = FeatureExtractor(c.backbone, c.layers, c.weights, c.resolved_d, c.seed).to(self.device)
            if c.tile is not None:
                self._extractor = TiledExtractor(self._extractor, c.tile, c.tile_stride)  # type: ignore[assignment]
        return self._extractor

    @property
    def image_size_(self) -> tuple[int, int] | None:
        """With tiling, the (height, width) of the model's images (fixed by ``fit`` or the model file), else None."""
        return self._extractor.image_size if isinstance(self._extractor, TiledExtractor) else None

    def _batches(self, images: ImageSource) -> Iterator[torch.Tensor]:
        if isinstance(images, torch.Tensor):
            yield from images.split(self.config.batch_size)
            return
        for item in images:
            yield item[0] if isinstance(item, (tuple, list)) else item

    def _embed(self, images: ImageSource, desc: str) -> Iterator[tuple[torch.Tensor, Embed]]:
        """Each batch with the function that embeds it ((B, d, h, w), into ``out`` (B, h, w, d) if given), timing
        the backbone and counting the images on a progress bar."""
        total = len(images) if isinstance(images, torch.Tensor) else None
        bar = tqdm(desc=desc, total=total, unit="img", disable=self._bar_disabled)

        def embed(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            t0 = time.perf_counter()
            emb = self.extractor(x.to(self.device), out)
            self._tick("backbone_s", t0)
            bar.update(len(x))
            return emb

        for x in self._batches(images):
            yield x, embed
        bar.close()

    @property
    def _bar_disabled(self) -> bool | None:
        return None if self.progress is None else not self.progress

    def _tick(self, name: str, t0: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings_[name] = self.timings_.get(name, 0.0) + time.perf_counter() - t0

    # -- estimator --------------------------------------------------------------------------------------------
    def fit(self, images: ImageSource) -> Padim:
        """Learn one Gaussian per position from normal images (a tensor (N, 3, H, W) or an iterable of batches).

        Like :meth:`predict`, it runs under :func:`~padim_repro.memory.reuse_freed_memory` (freed memory reused from
        batch to batch): faster, with the same results.
        """
        self.timings_ = {}
        acc: GaussianAccumulator | None = None
        if isinstance(self.extractor, TiledExtractor):
            self.extractor.image_size = None  # set by the first images
        with reuse_freed_memory():
            for x, embed in self._embed(images, "fit"):
                emb = embed(x)
                t0 = time.perf_counter()
                if acc is None:
                    acc = GaussianAccumulator(emb.shape[1], emb.shape[2] * emb.shape[3], self.device)
                    self.grid_size_ = (emb.shape[2], emb.shape[3])
                acc.update(emb)
                self._tick("gaussian_s", t0)
            if acc is None:
                raise ValueError("fit: no training images were given")
            t0 = time.perf_counter()
            self.n_train_ = acc.n
            self.mean_, self.precision_ = acc.finalize(self.config.epsilon)
            self._tick("gaussian_s", t0)
        self.channel_indices_ = self.extractor.channel_indices.cpu()
        self.weights_id_ = self.extractor.weights_id
        return self

    def predict(self, images: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly maps (N, crop, crop) float32 and image scores (N,) for a tensor or an iterable of batches."""
        if not hasattr(self, "mean_"):
            raise RuntimeError("predict: the model is not fitted; call fit() or Padim.load() first")
        self.timings_ = {}
        maps, scores = [], []
        with reuse_freed_memory():
            for emb in _embedding_groups(self._embed(images, "predict"), SCORE_GROUP):
                self._check_grid(tuple(emb.shape[2:]))
                t0 = time.perf_counter()
                dist = mahalanobis(emb, self.mean_, self.precision_)
                self._tick("mahalanobis_s", t0)
                t0 = time.perf_counter()
                amap = self._anomaly_maps(dist)
                self._tick("upsample_blur_s", t0)
                maps.append(amap.cpu())
                scores.append(image_scores(amap).cpu())
        return torch.cat(maps).numpy(), torch.cat(scores).numpy()

    def _check_grid(self, grid: tuple[int, ...]) -> None:
        """Refuse embeddings whose grid is not the fitted one: each position has its own Gaussian (Sec. 3.2), so a
        grid of another shape, even with as many positions, would be matched to the wrong Gaussians."""
        if grid != tuple(self.grid_size_):
            (h, w), (fh, fw) = grid, self.grid_size_
            raise ValueError(f"predict: these images give a {h}x{w} feature grid, but the model was fitted on a "
                             f"{fh}x{fw} grid ({self.config.crop}x{self.config.crop} images); preprocess them as "
                             "for the fit (same resize and crop)")  # fmt: skip

    def _anomaly_maps(self, dist: torch.Tensor) -> torch.Tensor:
        """The maps of Sec. 3.3 at the network input's size (``crop``), or with tiling the padded image's, cropped
        back to the image."""
        c = self.config
        if c.tile is None:
            return anomaly_maps(dist, c.crop, c.sigma)
        h, w = self.image_size_  # type: ignore[misc]
        return anomaly_maps(dist, tiled_maps_size((h, w), c.tile, c.tile_stride), c.sigma)[:, :h, :w]

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write config, versions, channel indices, mean and precision to one file (atomically)."""
        state = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "versions": package_versions(),
            "weights_id": self.weights_id_,
            "n_train": self.n_train_,
            "grid_size": list(self.grid_size_),
            "channel_indices": self.channel_indices_,
            "mean": self.mean_.cpu(),
            "precision": self.precision_.cpu(),
        }
        if self.image_size_ is not None:
            state["image_size"] = list(self.image_size_)
        # Streamed into the temporary file: an in-memory copy would double the peak (3.5 GiB for WR50-Rd550).
        return atomic_write(path, lambda fh: torch.save(state, fh))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, progress: bool | None = None) -> Padim:
        """Read a file written by :meth:`save`, checking every field (types, shapes, finite values) and that the
        backbone weights are the same (by content hash); a ValueError naming the file and the field otherwise."""
        path = Path(path)
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign files raise several types
            raise ValueError(f"cannot read model file {path}: not a model file written by Padim.save "
                             f"({type(exc).__name__})") from None  # fmt: skip
        version = state.get("format_version") if isinstance(state, dict) else None
        if version != FORMAT_VERSION:
            raise ValueError(
                f"model file {path} has format version {version!r}; this padim_repro reads version {FORMAT_VERSION}"
            )
        _check_state(path, state)
        config = PadimConfig.from_dict(state["config"])
        if device is not None:
            config = PadimConfig.from_dict({**config.to_dict(), "device": device})
        model = cls(config, progress=progress)
        if model.extractor.weights_id != state["weights_id"]:
            raise ValueError(
                f"model file {path} was fitted with backbone weights {state['weights_id']}, "
                f"but {config.weights!r} now gives {model.extractor.weights_id}"
            )
        if not torch.equal(model.extractor.channel_indices.cpu(), state["channel_indices"]):
            raise ValueError(f"model file {path}: channel indices differ from those its config selects")
        model.n_train_ = state["n_train"]
        model.grid_size_ = tuple(state["grid_size"])
        model.weights_id_ = state["weights_id"]
        model.channel_indices_ = state["channel_indices"]
        model.mean_ = state["mean"].to(model.device)
        model.precision_ = state["precision"].to(model.device)
        if config.tile is not None:
            size = state.get("image_size")
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
                raise ValueError(f"model file {path}: a tiled model needs field 'image_size' (height, width)")
            model.extractor.image_size = (size[0], size[1])  # type: ignore[union-attr]
        return model


def _embedding_groups(batches: Iterable[tuple[torch.Tensor, Embed]], size: int) -> Iterator[torch.Tensor]:
    """Embeddings (n, d, h, w) of consecutive batches in groups of up to ``size`` images (more if one batch is
    larger), in order, none lost.

    Each batch is embedded straight into its slice of one group buffer (no concatenation copy, no new buffer per
    group); a group is yielded when the next batch would not fit, and the buffer is reused once the caller asks for
    the next group, so the caller must be done with a group by then.
    """
    buffer: torch.Tensor | None = None  # (capacity, h, w, d): the embeddings' channels_last layout
    n = 0
    for x, embed in batches:
        b = len(x)
        if buffer is not None and n + b > len(buffer):
            yield buffer[:n].permute(0, 3, 1, 2)
            n = 0
        if buffer is None or b > len(buffer):  # the grid is known once a batch is embedded
            emb = embed(x)
            buffer = emb.new_empty((max(size, b), *emb.shape[2:], emb.shape[1]))
            buffer[:b] = emb.permute(0, 2, 3, 1)
        else:
            embed(x, buffer[n:n + b])
        n += b
    if n:
        yield buffer[:n].permute(0, 3, 1, 2)


#: The fields of a model file and their types (:meth:`Padim.save`).
_FIELDS = {"config": dict, "versions": dict, "weights_id": str, "n_train": int, "grid_size": list,
           "channel_indices": torch.Tensor, "mean": torch.Tensor, "precision": torch.Tensor}  # fmt: skip


def _check_state(path: Path, state: dict[str, Any]) -> None:
    """Every field of a model file present, of its type, of consistent shapes and finite; else a ValueError."""
    for name, kind in _FIELDS.items():
        if not isinstance(state.get(name), kind):
            raise ValueError(f"model file {path}: field {name!r} is missing or not a {kind.__name__}")
    mean, precision, idx = state["mean"], state["precision"], state["channel_indices"]
    grid = state["grid_size"]
    if len(grid) != 2 or not all(isinstance(g, int) and g > 0 for g in grid) or state["n_train"] < 2:
        raise ValueError(f"model file {path}: grid_size {grid} or n_train {state['n_train']} is not valid")
    p, d = grid[0] * grid[1], idx.numel()
    if mean.shape != (p, d) or precision.shape != (p, d, d):
        raise ValueError(f"model file {path}: mean {tuple(mean.shape)} and precision {tuple(precision.shape)} do not "
                         f"match grid {grid} and {d} channels")  # fmt: skip
    for name in ("mean", "precision"):
        if not bool(torch.isfinite(state[name]).all()):
            raise ValueError(f"model file {path}: field {name!r} holds NaN or infinite values")
