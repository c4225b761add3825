"""MVTec AD data (Bergmann et al., CVPR 2019) and the paper's preprocessing (PaDiM Sec. 4.1).

Layout: ``ROOT/CATEGORY/train/good/*.png``, ``ROOT/CATEGORY/test/{good,DEFECT}/*.png`` and
``ROOT/CATEGORY/ground_truth/DEFECT/NNN_mask.png``. Images are resized to 256 (bicubic by default), center-cropped to
224 and normalised with the ImageNet statistics; masks are resized with nearest neighbour and cropped identically.
Every error names the file or folder at fault.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

#: The 15 MVTec AD categories, split as in the paper's Table III.
TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper")
MVTEC_CATEGORIES = TEXTURES + OBJECTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
    "lanczos": InterpolationMode.LANCZOS,
}


class DataError(ValueError):
    """A problem with the input data; the message names the path at fault."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: its path, label (0 good, 1 defective), defect type and mask path (None if good)."""

    image_path: Path
    label: int
    defect_type: str
    mask_path: Path | None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def category_group(category: str) -> str:
    """``texture``, ``object`` or ``other`` (for categories outside MVTec AD)."""
    return "texture" if category in TEXTURES else "object" if category in OBJECTS else "other"


def list_categories(root: str | Path) -> list[str]:
    """Names of the categories under ``root`` that have a ``train/good`` folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def _check_readable(path: Path) -> tuple[int, int]:
    """Size of the image at ``path`` from its header; a clear error if it cannot be opened."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def checked_sample(image: Path, defect_type: str, mask: Path | None) -> Sample:
    """The :class:`Sample` of ``image`` (label 0 iff ``defect_type`` is ``good``), after checking that the image is
    readable and, for a defect image, that ``mask`` exists, is readable and has the image's size (a
    :class:`DataError` naming the path otherwise)."""
    size = _check_readable(image)
    if defect_type == "good":
        return Sample(image, 0, defect_type, None)
    if mask is None or not mask.is_file():
        raise DataError(f"defect image {image} has no mask (expected {mask})")
    msize = _check_readable(mask)
    if msize != size:
        raise DataError(f"mask {mask} is {msize[0]}x{msize[1]} but its image {image} is {size[0]}x{size[1]}")
    return Sample(image, 1, defect_type, mask)


def find_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """List the samples of ``split`` (``train`` or ``test``) of ``category``, checking the layout.

    Raises :class:`DataError` naming the path for: a missing root or category (listing those present), a split
    without images, a defect image without its mask, a mask whose size differs from its image, an unreadable file.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    present = list_categories(root)
    cat_dir = root / category
    if category not in present:
        raise DataError(f"category {category!r} not found under {root} (present: {', '.join(present) or 'none'})")
    split_dir = cat_dir / split
    if split == "train":
        folders = [split_dir / "good"]
    else:
        if not split_dir.is_dir():
            raise DataError(f"test folder {split_dir} is missing")
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples: list[Sample] = []
    for folder in folders:
        defect = folder.name
        for img in _images_in(folder):
            mask = cat_dir / "ground_truth" / defect / f"{img.stem}_mask.png" if defect != "good" else None
            samples.append(checked_sample(img, defect, mask))
    if not samples:
        where = split_dir / "good" if split == "train" else split_dir
        raise DataError(f"no {split} images found in {where}")
    return samples


def resize_image(image: Image.Image, resize: int | tuple[int, int], interpolation: str = "bicubic") -> Image.Image:
    """The first resize (Sec. 4.1): shorter side to ``resize`` (an (h, w) pair: exactly that size); RGB output."""
    return TF.resize(image.convert("RGB"), resize, interpolation=_INTERPOLATION[interpolation], antialias=True)


def resize_mask(mask: Image.Image, resize: int | tuple[int, int]) -> Image.Image:
    """Mask counterpart of :func:`resize_image`: nearest neighbour, grayscale output."""
    return TF.resize(mask.convert("L"), resize, interpolation=InterpolationMode.NEAREST)


def normalize_image(image: Image.Image) -> torch.Tensor:
    """An RGB image as the network input: ImageNet normalisation; float32 (3, H, W)."""
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def binarize_mask(mask: Image.Image) -> torch.Tensor:
    """A grayscale mask as bool (H, W): pixels above 127 are defective."""
    return torch.from_numpy(np.asarray(mask) > 127)


def resize_crop(image: Image.Image, resize: int, crop: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize the shorter side to ``resize``, then center-crop ``crop`` (Sec. 4.1); RGB output."""
    return TF.center_crop(resize_image(image, resize, interpolation), crop)


def preprocess_image(image: Image.Image, resize: int, crop: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Paper preprocessing: :func:`resize_crop`, then ImageNet normalisation; float32 (3, crop, crop).

    Grayscale (or palette / RGBA) images become 3-channel RGB.
    """
    return normalize_image(resize_crop(image, resize, crop, interpolation))


def display_image(path: str | Path, resize: int, crop: int, interpolation: str = "bicubic") -> np.ndarray:
    """The image at ``path`` as the model saw it, before normalisation: uint8 (crop, crop, 3), for figures."""
    return np.asarray(resize_crop(_open(Path(path)), resize, crop, interpolation))


def preprocess_mask(mask: Image.Image, resize: int, crop: int) -> torch.Tensor:
    """Mask counterpart of :func:`preprocess_image`: nearest resize, same crop; returns bool (crop, crop)."""
    return binarize_mask(TF.center_crop(resize_mask(mask, resize), crop))


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


class MVTecDataset(torch.utils.data.Dataset):
    """Preprocessed images and masks of one split; item = (image (3,H,W) float32, mask (H,W) bool, label)."""

    def __init__(self, samples: Sequence[Sample], resize: int = 256, crop: int = 224, interpolation: str = "bicubic"):
        self.samples = list(samples)
        self.resize, self.crop, self.interpolation = resize, crop, interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def open_sample(self, i: int) -> tuple[Image.Image, Image.Image | None]:
        """The raw image and mask (None for a good image) of sample ``i``; a mask of another size is an error."""
        s = self.samples[i]
        image = _open(s.image_path)
        if s.mask_path is None:
            return image, None
        mask = _open(s.mask_path)
        if mask.size != image.size:
            raise DataError(f"mask {s.mask_path} is {mask.size} but its image {s.image_path} is {image.size}")
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.open_sample(i)
        x = preprocess_image(image, self.resize, self.crop, self.interpolation)
        if mask is None:
            m = torch.zeros(self.crop, self.crop, dtype=torch.bool)
        else:
            m = preprocess_mask(mask, self.resize, self.crop)
        return x, m, self.samples[i].label

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        return [s.defect_type for s in self.samples]


def batches(dataset: MVTecDataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, masks) batches in order (a DataLoader without workers: the backbone uses both cores)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for x, m, _ in loader:
        yield x, m


def load_category(
    root: str | Path, category: str, resize: int = 256, crop: int = 224, interpolation: str = "bicubic"
) -> tuple[MVTecDataset, MVTecDataset]:
    """The (train, test) datasets of one category, validated."""
    train = MVTecDataset(find_samples(root, category, "train"), resize, crop, interpolation)
    test = MVTecDataset(find_samples(root, category, "test"), resize, crop, interpolation)
    return train, test
