"""MVTec AD data (Bergmann et al., CVPR 2019) and the paper's preprocessing (PaDiM Sec. 4.1).

Layout: ``ROOT/CATEGORY/train/good/*.png``, ``ROOT/CATEGORY/test/{good,DEFECT}/*.png`` and
``ROOT/CATEGORY/ground_truth/DEFECT/NNN_mask.png``. Images are resized to 256 (bicubic by default), center-cropped to
224 and normalised with the ImageNet statistics; masks are resized with nearest neighbour and cropped identically.

Images: any mode that converts to 8-bit RGB exactly is accepted (``1``, ``L``, ``LA``, ``P``, ``RGB``, ``RGBA``,
``CMYK``, ...). Modes of a higher bit depth (``I;16*`` 16-bit grayscale, ``I`` 32-bit integer, ``F`` 32-bit float)
are refused with a :class:`DataError` when the samples are listed and again when an image is opened, since PIL's
``convert("RGB")`` clips them to 255 (a 16-bit photo becomes all white) rather than failing.

Masks: **any non-zero mask pixel is a defect pixel** (MVTec AD's masks are 0/255; masks stored as 0/1, or in
16-bit, mean the same). A soft mask can be binarised with an explicit threshold instead (pixels above it are
defective; ``mask_threshold`` of :class:`MVTecDataset`). Values are compared as stored (16/32-bit masks are resized
in their own mode, never clipped to 8 bits); a colour mask pixel's value is its largest channel. A defect image
whose mask has no defect pixel is refused when the mask is loaded: it would silently count as defective without a
single defect pixel (nothing to localise, and a NaN pixel AUROC if every mask is so). A defect that lies only in the
border the crop removes is a warning naming the mask: the image is still defective (image metrics), without pixels.

Every error names the file or folder at fault.
"""

from __future__ import annotations

import warnings
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


#: Single-channel modes of a higher bit depth than 8: their values are kept as stored (masks) or refused (images).
_WIDE_MODES = {"I": "a 32-bit integer image", "F": "a 32-bit float image"}


def _wide_kind(mode: str) -> str | None:
    """What a mode of more than 8 bits is (for messages), or None for modes that convert to 8-bit RGB exactly."""
    return "a 16-bit grayscale image" if mode.startswith("I;16") else _WIDE_MODES.get(mode)


def check_image_mode(mode: str, path: object) -> None:
    """Refuse an image whose PIL ``mode`` cannot become 8-bit RGB exactly (16-bit, 32-bit integer or float).

    ``convert("RGB")`` would clip such values to 255 instead of failing: wrong inputs without a message.
    """
    kind = _wide_kind(mode)
    if kind is not None:
        raise DataError(f"image {path} is {kind} (PIL mode {mode!r}), which cannot be converted to 8-bit RGB "
                        "without changing its values; convert it to an 8-bit grayscale or RGB image (values "
                        "scaled to 0..255) and retry")  # fmt: skip


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


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """Size and mode of the image at ``path`` from its header (no pixel is decoded); a clear error if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image at ``path`` from its header, after checking that it is readable and of an 8-bit
    mode (a :class:`DataError` naming it otherwise)."""
    size, mode = _header(path)
    check_image_mode(mode, path)
    return size


def checked_sample(image: Path, defect_type: str, mask: Path | None) -> Sample:
    """The :class:`Sample` of ``image`` (label 0 iff ``defect_type`` is ``good``), after checking from the headers
    that the image is readable and of an 8-bit mode (:func:`check_image_mode`) and, for a defect image, that
    ``mask`` exists, is readable and has the image's size (a :class:`DataError` naming the path otherwise).

    Masks may be of any mode, 16-bit included. Their pixels are not read here: an empty mask is refused when loaded
    (:meth:`MVTecDataset.open_sample`).
    """
    size, mode = _header(image)
    check_image_mode(mode, image)
    if defect_type == "good":
        return Sample(image, 0, defect_type, None)
    if mask is None or not mask.is_file():
        raise DataError(f"defect image {image} has no mask (expected {mask})")
    msize, _ = _header(mask)
    if msize != size:
        raise DataError(f"mask {mask} is {msize[0]}x{msize[1]} but its image {image} is {size[0]}x{size[1]}")
    return Sample(image, 1, defect_type, mask)


def find_samples(root: str | Path, category: str, split: str) -> list[Sample]:
    """List the samples of ``split`` (``train`` or ``test``) of ``category``, checking the layout.

    Raises :class:`DataError` naming the path for: a missing root or category (listing those present), a split
    without images, a defect image without its mask, a mask whose size differs from its image, an unreadable file,
    an image of more than 8 bits per channel (:func:`check_image_mode`).
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
    """The first resize (Sec. 4.1): shorter side to ``resize`` (an (h, w) pair: exactly that size); RGB output.

    An image of more than 8 bits per channel is a :class:`DataError` (:func:`check_image_mode`).
    """
    check_image_mode(image.mode, getattr(image, "filename", "") or "(in memory)")
    return TF.resize(image.convert("RGB"), resize, interpolation=_INTERPOLATION[interpolation], antialias=True)


def mask_levels(mask: Image.Image) -> Image.Image:
    """A mask as a single-channel image of its values, none lost: ``L`` and 16/32-bit masks as stored, ``1`` as
    0/255, colour masks (``P``, ``RGB``, ...) as their largest channel (alpha ignored), so that a non-zero pixel
    stays non-zero (``convert("L")`` would round a dark colour to 0 and clip a float mask's 0.5 to 0)."""
    if mask.mode == "L" or _wide_kind(mask.mode) is not None:
        return mask
    if mask.mode == "1":
        return mask.convert("L")
    return Image.fromarray(np.asarray(mask.convert("RGB")).max(axis=2), "L")


def resize_mask(mask: Image.Image, resize: int | tuple[int, int]) -> Image.Image:
    """Mask counterpart of :func:`resize_image`: nearest neighbour on :func:`mask_levels` (16/32-bit masks stay in
    their mode: nothing is clipped), so binarising before or after the resize gives the same result."""
    return TF.resize(mask_levels(mask), resize, interpolation=InterpolationMode.NEAREST)


def normalize_image(image: Image.Image) -> torch.Tensor:
    """An RGB image as the network input: ImageNet normalisation; float32 (3, H, W)."""
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def mask_defects(mask: Image.Image, threshold: int = 0) -> np.ndarray:
    """Bool (H, W) array of the defect pixels of ``mask``: values (:func:`mask_levels`) above ``threshold``.

    The default 0 is the rule "any non-zero pixel is a defect": MVTec AD's 0/255 masks and 0/1 or 16-bit masks
    alike. A higher ``threshold`` (in the mask's own units) is for datasets with soft masks.
    """
    if threshold < 0:
        raise ValueError(f"mask threshold must be >= 0 (pixels above it are defective), got {threshold}")
    return np.asarray(mask_levels(mask)) > threshold


def binarize_mask(mask: Image.Image, threshold: int = 0) -> torch.Tensor:
    """A mask as bool (H, W): pixels above ``threshold`` are defective; the default 0 means any non-zero pixel is
    (see :func:`mask_defects`)."""
    return torch.from_numpy(mask_defects(mask, threshold))


def resize_crop(image: Image.Image, resize: int | tuple[int, int] | None, crop: int | None,
                interpolation: str = "bicubic") -> Image.Image:  # fmt: skip
    """Resize the shorter side to ``resize``, then center-crop ``crop`` (Sec. 4.1); RGB output.

    Tiling (:mod:`padim_repro.tiling`) keeps the whole image: ``crop`` None (no crop) and ``resize`` None (its own
    size) or an exact (height, width).
    """
    if resize is None:
        check_image_mode(image.mode, getattr(image, "filename", "") or "(in memory)")
        image = image.convert("RGB")
    else:
        image = resize_image(image, resize, interpolation)
    return image if crop is None else TF.center_crop(image, crop)


def preprocess_image(image: Image.Image, resize: int | tuple[int, int] | None, crop: int | None,
                     interpolation: str = "bicubic") -> torch.Tensor:  # fmt: skip
    """Paper preprocessing: :func:`resize_crop`, then ImageNet normalisation; float32 (3, crop, crop).

    Grayscale (or palette / RGBA) images become 3-channel RGB.
    """
    return normalize_image(resize_crop(image, resize, crop, interpolation))


def display_image(path: str | Path, resize: int, crop: int, interpolation: str = "bicubic") -> np.ndarray:
    """The image at ``path`` as the model saw it, before normalisation: uint8 (crop, crop, 3), for figures."""
    return np.asarray(resize_crop(open_image(Path(path)), resize, crop, interpolation))


def preprocess_mask(mask: Image.Image, resize: int | tuple[int, int] | None, crop: int | None,
                    threshold: int = 0) -> torch.Tensor:  # fmt: skip
    """Mask counterpart of :func:`preprocess_image`: nearest resize, same crop (None: none, as with tiling), then
    pixels above ``threshold`` (by default any non-zero pixel) are defective; returns bool (crop, crop)."""
    mask = mask if resize is None else resize_mask(mask, resize)
    return binarize_mask(mask if crop is None else TF.center_crop(mask, crop), threshold)


def open_image(path: Path, mask: bool = False) -> Image.Image:
    """The decoded image at ``path``; a :class:`DataError` naming it if unreadable or, unless ``mask``, of a mode
    that cannot become 8-bit RGB (a file replaced after the listing is caught here)."""
    try:
        with Image.open(path) as im:
            im.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if not mask:
        check_image_mode(im.mode, path)
    return im


class MVTecDataset(torch.utils.data.Dataset):
    """Preprocessed images and masks of one split; item = (image (3,H,W) float32, mask (H,W) bool, label).

    ``mask_threshold``: mask pixels above it are defective (default 0: any non-zero pixel; 127 for soft masks).
    ``allow_empty_masks``: accept a defect image whose mask has no defect pixel (by default a :class:`DataError`
    naming the mask, since such an image adds no defect pixel; for datasets that ship a few such masks on purpose).
    """

    def __init__(self, samples: Sequence[Sample], resize: int = 256, crop: int = 224, interpolation: str = "bicubic",
                 mask_threshold: int = 0, allow_empty_masks: bool = False):  # fmt: skip
        self.samples = list(samples)
        self.resize, self.crop, self.interpolation = resize, crop, interpolation
        self.mask_threshold, self.allow_empty_masks = mask_threshold, allow_empty_masks

    def __len__(self) -> int:
        return len(self.samples)

    def open_sample(self, i: int) -> tuple[Image.Image, Image.Image | None]:
        """The raw image and mask (None for a good image) of sample ``i``, checked again (the files may have changed
        since the listing): an image of more than 8 bits, a mask of another size, or a mask without any defect
        pixel (unless ``allow_empty_masks``) is a :class:`DataError` naming the file."""
        s = self.samples[i]
        image = open_image(s.image_path)
        if s.mask_path is None:
            return image, None
        mask = open_image(s.mask_path, mask=True)
        if mask.size != image.size:
            raise DataError(f"mask {s.mask_path} is {mask.size} but its image {s.image_path} is {image.size}")
        if not self.allow_empty_masks and not mask_defects(mask, self.mask_threshold).any():
            raise DataError(f"mask {s.mask_path} of defect image {s.image_path} has no defect pixel (no value above "
                            f"{self.mask_threshold}), so the defect would be silently dropped; fix the mask, or move "
                            "the image to a good folder if it shows no defect")  # fmt: skip
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.open_sample(i)
        x = preprocess_image(image, self.resize, self.crop, self.interpolation)
        if mask is None:
            m = torch.zeros(x.shape[-2:], dtype=torch.bool)
        else:
            m = preprocess_mask(mask, self.resize, self.crop, self.mask_threshold)
            if not m.any() and not self.allow_empty_masks:
                s = self.samples[i]
                warnings.warn(f"mask {s.mask_path}: the defect of {s.image_path} lies only in the border that the "
                              f"resize to {self.resize} and center crop to {self.crop} remove; the image counts as "
                              "defective for the image metrics but adds no defect pixel", stacklevel=2)  # fmt: skip
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
