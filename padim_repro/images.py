"""PaDiM on a folder of your own images: listing and checking them, streaming them through the model, and each
anomaly map brought back to its image's own size (the inference flow of PaDiM Sec. 3.3 on files).

The preprocessing is the method's (:func:`~padim_repro.data.preprocess_image` with the config's
:attr:`~padim_repro.config.PadimConfig.geometry`): the paper's resize and crop, or with tiling the whole image. Images
are read one batch at a time (memory flat in their number), decoded by a ``DataLoader`` (in worker processes when
``workers`` > 0, beside the backbone). Any mode the MVTec AD path accepts is accepted here (grayscale, palette,
RGBA, ...); 16-bit images are refused as there (:func:`~padim_repro.data.check_image_mode`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import PadimConfig
from .data import IMAGE_SUFFIXES, DataError, open_image, preprocess_image
from .data import image_size as header_size
from .memory import reuse_freed_memory
from .model import SCORE_GROUP, Padim


def list_images(paths: Sequence[str | Path], what: str = "images") -> list[Path]:
    """The image files (by suffix: PNG, JPEG, BMP, TIFF) of ``paths``: files as given, folders searched
    recursively (hidden entries skipped), sorted per folder; a :class:`~padim_repro.data.DataError` naming the path
    for a missing path, a file that is not an image, or no image at all."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))  # fmt: skip
            if not found:
                raise DataError(f"no image ({', '.join(IMAGE_SUFFIXES)}) found in folder {p}")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
            out.append(p)
        else:
            raise DataError(f"{what}: {p} does not exist")
    if not out:
        raise DataError(f"no {what} given")
    return out


def check_images(files: Sequence[Path], config: PadimConfig, model_size: tuple[int, int] | None = None
                 ) -> list[tuple[int, int]]:  # fmt: skip
    """Each file's (width, height) from its header, after the checks that need no pixel: readable and 8-bit
    (:func:`~padim_repro.data.image_size`) and, with tiling, one size for all (their own, unless ``image_size``),
    that size the model's (``model_size`` (height, width)) and no smaller than a tile. A
    :class:`~padim_repro.data.DataError` naming the file(s) otherwise, before anything is computed."""
    sizes = [header_size(f) for f in files]
    if config.tile is None:
        return sizes
    if config.image_size is None:
        first = sizes[0]
        for f, s in zip(files, sizes):
            if s != first:
                raise DataError(f"images of different sizes: {files[0]} is {first[0]}x{first[1]} but {f} is "
                                f"{s[0]}x{s[1]}; with --tile pass --resize HxW to give them one size")  # fmt: skip
        height, width = first[1], first[0]
    else:
        height, width = config.image_size
    if model_size is not None and (height, width) != model_size:
        raise DataError(f"{files[0]} gives a {width}x{height} input but the model was fitted on {model_size[1]}x"
                        f"{model_size[0]} images; pass images of that size")  # fmt: skip
    if config.tile > min(height, width):
        raise DataError(f"tile {config.tile} is larger than the {width}x{height} images (e.g. {files[0]}); pass a "
                        "smaller --tile or a larger --resize")  # fmt: skip
    return sizes


class ImageFiles(torch.utils.data.Dataset):
    """The network inputs of ``files``: item i = float32 (3, H, W), preprocessed by the config's geometry."""

    def __init__(self, files: Sequence[Path], config: PadimConfig):
        self.files, self.config = list(files), config

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        resize, crop = self.config.geometry
        return preprocess_image(open_image(self.files[i]), resize, crop, self.config.interpolation)


def image_batches(files: Sequence[Path], config: PadimConfig, workers: int = 0,
                  bar: tqdm | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """Batches (B, 3, H, W) of ``config.batch_size`` images in order, decoded by ``workers`` processes (0: here),
    counted on ``bar``."""
    loader = torch.utils.data.DataLoader(ImageFiles(files, config), batch_size=config.batch_size, shuffle=False,
                                         num_workers=workers)  # fmt: skip
    for x in loader:
        yield x
        if bar is not None:
            bar.update(len(x))


def predict_files(model: Padim, files: Sequence[Path], workers: int = 0, progress: bool | None = None,
                  desc: str = "predict") -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Anomaly maps (n, h, w) float32 and scores (n,) of ``files``, in order, a group of up to
    :data:`~padim_repro.model.SCORE_GROUP` images at a time (so memory does not grow with their number), each group
    scored by :meth:`~padim_repro.model.Padim.predict`."""
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=None if progress is None else not progress)
    group: list[torch.Tensor] = []
    with reuse_freed_memory():  # across the groups too, not only within each predict (see padim_repro.memory)
        for x in image_batches(files, model.config, workers, bar):
            group.append(x)
            if sum(len(g) for g in group) >= SCORE_GROUP:
                yield model.predict(group)
                group = []
        if group:
            yield model.predict(group)
    bar.close()


def fit_files(model: Padim, files: Sequence[Path], workers: int = 0, progress: bool | None = None) -> Padim:
    """Fit ``model`` on the images ``files`` (normal ones), streamed batch by batch; at least 2 are needed."""
    if len(files) < 2:
        raise DataError(f"fit needs at least 2 normal images to estimate a covariance, got {len(files)}")
    bar = tqdm(total=len(files), desc="fit", unit="img", disable=None if progress is None else not progress)
    model.fit(image_batches(files, model.config, workers, bar))
    bar.close()
    return model


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after the shorter side is resized to ``resize`` (torchvision's rule for an int size)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def map_at_image_size(amap: np.ndarray, width: int, height: int, config: PadimConfig) -> np.ndarray:
    """An anomaly map (h, w) brought back to its image's own size (height, width), float32.

    The paper's protocol saw only the center crop of the resized image: the map is resized (bilinear) onto the
    region of the original image that the crop covers, and the pixels outside it, which the model never saw, are
    NaN. With tiling the map covers the whole image and is only resized (when ``image_size`` changed it).
    """
    t = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    if config.tile is not None:
        if t.shape[-2:] == (height, width):
            return amap.astype(np.float32)
        return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    rw, rh = resized_size(width, height, config.resize)
    top, left = int(round((rh - config.crop) / 2.0)), int(round((rw - config.crop) / 2.0))
    y0, y1 = round(top * height / rh), round((top + config.crop) * height / rh)
    x0, x1 = round(left * width / rw), round((left + config.crop) * width / rw)
    out = np.full((height, width), np.nan, dtype=np.float32)
    out[y0:y1, x0:x1] = F.interpolate(t, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0].numpy()
    return out


def threshold_at_fpr(scores: np.ndarray, fpr: float, where: str = "--good") -> float:
    """The score above which at most ``fpr`` of ``scores`` (of normal images) lie: the (k+1)-th largest, k =
    floor(fpr * n). A :class:`~padim_repro.data.DataError` when there are too few scores to resolve that rate
    (n * fpr < 1)."""
    if not 0 < fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {fpr}")
    n = len(scores)
    if n * fpr < 1:
        raise DataError(f"{where} holds {n} images, too few for a false-positive rate of {fpr} (at least "
                        f"{int(np.ceil(1 / fpr - 1e-9))} are needed); add normal images or raise --fpr")  # fmt: skip
    return float(np.sort(scores)[::-1][int(np.floor(fpr * n))])
