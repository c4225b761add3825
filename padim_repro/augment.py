"""Non-aligned MVTec AD (PaDiM Sec. 4.4, Table VI): random rotations and random crops of train and test images.

The paper tests how PaDiM, whose Gaussians are tied to patch positions, copes with objects that are not aligned:
every training and test image is rotated by a random angle in (-10, +10) degrees and a random 224 x 224 crop is
taken from the 256 x 256 resized image (instead of the center crop); the paper builds several such versions of the
dataset and reports the mean.

:class:`NonAlignedDataset` is that transform over the samples of :mod:`padim_repro.data`, reusing its pieces:

1. the first resize (:func:`~padim_repro.data.resize_image`, shorter side to 256, bicubic by default; masks with
   :func:`~padim_repro.data.resize_mask`, nearest neighbour);
2. rotation by ``angle`` degrees (counter-clockwise) about the image center, same size, with bilinear
   interpolation for the image and nearest neighbour for the mask; the corners that come from outside the image
   are black (image) and defect-free (mask);
3. the crop box ``(top, left, 224, 224)``, the same for image and mask;
4. :func:`~padim_repro.data.normalize_image` / :func:`~padim_repro.data.binarize_mask`.

Image and mask go through the same PIL geometry (same rotation center, same box), so they stay aligned.

Determinism: the angle and the box of image ``i`` of ``split`` in dataset version ``seed`` come from
``numpy.random.default_rng([seed, SPLIT_CODE[split], i])``: they depend on (seed, i, split) only, not on the
order in which items are read, on other images or on any global random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .data import MVTecDataset, Sample, binarize_mask, find_samples, normalize_image, resize_image, resize_mask

#: The paper's rotation range, in degrees (an angle is drawn uniformly in (-MAX_ANGLE, +MAX_ANGLE)).
MAX_ANGLE = 10.0
#: Codes of the splits in the seed of each image's random draws.
SPLIT_CODE = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Placement:
    """Where one image lands: rotation angle in degrees (counter-clockwise) and the crop box's top-left corner."""

    angle: float
    top: int
    left: int


def draw_placement(seed: int, split: str, index: int, height: int, width: int, crop: int,
                   max_angle: float = MAX_ANGLE) -> Placement:  # fmt: skip
    """The placement of image ``index`` of ``split`` in dataset version ``seed``, for a resized image of
    ``height`` x ``width``: angle uniform in (-max_angle, max_angle), box uniform over every position that fits."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got {split!r}")
    if crop > min(height, width):
        raise ValueError(f"crop {crop} does not fit in a {height}x{width} image")
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    angle = float(rng.uniform(-max_angle, max_angle))
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    return Placement(angle, top, left)


class NonAlignedDataset(MVTecDataset):
    """An :class:`~padim_repro.data.MVTecDataset` whose items are randomly rotated and cropped (see module doc).

    Args:
        samples: the samples of one split (``find_samples``).
        split: ``train`` or ``test`` (enters the random draws).
        seed: the dataset version.
        resize, crop, interpolation: as in the aligned protocol (256, 224, bicubic).
        max_angle: half-width of the rotation range in degrees (the paper: 10).
    """

    def __init__(self, samples: Sequence[Sample], split: str, seed: int, resize: int = 256, crop: int = 224,
                 interpolation: str = "bicubic", max_angle: float = MAX_ANGLE):  # fmt: skip
        super().__init__(samples, resize, crop, interpolation)
        if split not in SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got {split!r}")
        self.split, self.seed, self.max_angle = split, seed, max_angle

    def placement(self, i: int, height: int, width: int) -> Placement:
        """The placement of item ``i`` given its resized size."""
        return draw_placement(self.seed, self.split, i, height, width, self.crop, self.max_angle)

    def placed(self, i: int) -> tuple[Image.Image, Image.Image | None]:
        """Item ``i`` resized, rotated and cropped: the RGB image and the grayscale mask (None for a good image)."""
        image, mask = self.open_sample(i)
        image = resize_image(image, self.resize, self.interpolation)
        p = self.placement(i, image.height, image.width)
        image = TF.rotate(image, p.angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        image = TF.crop(image, p.top, p.left, self.crop, self.crop)
        if mask is not None:
            mask = TF.rotate(resize_mask(mask, self.resize), p.angle, interpolation=InterpolationMode.NEAREST, fill=0)
            mask = TF.crop(mask, p.top, p.left, self.crop, self.crop)
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.placed(i)
        m = torch.zeros(self.crop, self.crop, dtype=torch.bool) if mask is None else binarize_mask(mask)
        return normalize_image(image), m, self.samples[i].label

    def display(self, i: int) -> np.ndarray:
        """Item ``i`` as the model saw it, before normalisation: uint8 (crop, crop, 3), for figures."""
        return np.asarray(self.placed(i)[0])


def load_nonaligned(root, category: str, seed: int, resize: int = 256, crop: int = 224,
                    interpolation: str = "bicubic", max_angle: float = MAX_ANGLE
                    ) -> tuple[NonAlignedDataset, NonAlignedDataset]:  # fmt: skip
    """The (train, test) datasets of ``category`` in non-aligned version ``seed`` (validated like the aligned ones)."""
    return tuple(
        NonAlignedDataset(find_samples(root, category, split), split, seed, resize, crop, interpolation, max_angle)
        for split in ("train", "test")
    )  # type: ignore[return-value]
