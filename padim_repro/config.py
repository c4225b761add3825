r"""Every parameter of a PaDiM run in one place (scikit-learn style: no hidden state).

The defaults are the paper's protocol (Defard et al., 2020, Sec. 4.1 "Implementation details"): ResNet-18 with
d = 100 or Wide-ResNet-50-2 with d = 550 randomly selected channels of layer1..layer3, Gaussian regularisation
:math:`\epsilon = 0.01`, images resized to 256 and center-cropped to 224, and the anomaly map blurred with
:math:`\sigma = 4`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

#: The paper's number of randomly kept channels per backbone (Sec. 4.1: "Rd100" and "Rd550").
PAPER_D: dict[str, int] = {"resnet18": 100, "wide_resnet50_2": 550}

#: Interpolation names accepted for the first resize.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")

#: Accepted ``device`` spellings: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _flag(name: str) -> str:
    """The command-line option of field ``name`` (``batch_size`` -> ``--batch-size``), for the hints of messages."""
    return "--" + name.replace("_", "-")


def _is_int(value: object) -> bool:
    """An integer (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A real number (ints, floats, numpy scalars), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    """A real number that is finite as a float: not NaN, not +-inf, not an int too large for a float, not a bool."""
    if not _is_real(value):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:
        return False


def _check_int(name: str, value: object, low: int) -> None:
    """``value`` must be an integer >= ``low``; else a one-line ValueError naming the field and its option."""
    if not _is_int(value) or value < low:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}; pass {_flag(name)} N with N >= {low}")


def _check_name(name: str, value: object, example: str) -> None:
    """``value`` must be a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}; pass e.g. {_flag(name)} {example}")


def _checked_layers(layers: object) -> tuple[str, ...]:
    """``layers`` as a tuple of non-empty names (a list or tuple of them; a bare string is refused)."""
    hint = "pass e.g. --layers layer1,layer2,layer3"
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise ValueError(f"layers must be a list of layer names, got {layers!r}; {hint}")
    out = tuple(layers)
    if not out:
        raise ValueError(f"layers: at least one layer is needed; {hint}")
    if not all(isinstance(x, str) and x for x in out):
        raise ValueError(f"layers must be non-empty layer names, got {list(out)!r}; {hint}")
    return out


@dataclass(frozen=True)
class PadimConfig:
    r"""Configuration of one PaDiM model.

    Attributes:
        backbone: timm model name of an ImageNet CNN (``resnet18``, ``wide_resnet50_2``, any timm CNN that supports
            ``features_only``).
        layers: feature levels whose maps are concatenated (Sec. 3.1), timm module names such as ``layer1``.
        d: number of channels kept by random selection (Sec. 3.1 / Table II); ``None`` means the paper's value for
            the backbone (100 / 550) or every channel for other backbones; ``0`` keeps every channel.
        seed: seed of the random channel selection and of random weights (``weights="none"``); an integer >= 0.
        epsilon: regularisation added to each covariance, :math:`\Sigma + \epsilon I` (Sec. 3.2, Eq. 1); finite and > 0
            (with 0 a rank-deficient covariance, e.g. fewer images than channels, cannot be inverted).
        sigma: standard deviation of the Gaussian blur of the anomaly map in pixels (Sec. 4.1); 0 disables it.
            Finite, with the blur radius int(4 * sigma + 0.5) smaller than the map (``crop``): sigma < (crop - 0.5) / 4.
        resize: side of the first resize (Sec. 4.1: 256), >= 1.
        crop: side of the center crop (Sec. 4.1: 224), 1 to ``resize``; also the side of the anomaly map.
        interpolation: interpolation of the first resize of the images (masks always use nearest).
        weights: ``tv_in1k`` (torchvision ImageNet weights via timm's hub), a path to a local checkpoint, or
            ``none`` (random init, only meaningful for tests).
        batch_size: images per forward pass, >= 1. It changes speed and memory (small batches keep the backbone's
            activations small; 8 is as fast per image as 32 on two CPU cores) and, through the rounding of the
            batched matrix products of the Mahalanobis distance, the maps in their last float32 bits, so it is part
            of a run's identity. The Gaussian does not depend on it (it adds images in fixed blocks).
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``; affects speed only.
        tile: tiling (:mod:`padim_repro.tiling`): side in pixels of the square tiles each image is cut into, each
            embedded by the backbone and the embeddings stitched into one grid of the whole image; ``None`` (the
            default, the paper's protocol): no tiling. When tiling, ``resize`` and ``crop`` are not used: the image
            keeps its own size, or ``image_size``, and the anomaly map has that size.
        stride: step between tiles in pixels, 1 to ``tile`` (overlaps are averaged); ``None``: ``tile`` (no overlap).
        image_size: when tiling, the (height, width) every image is resized to first; ``None``: each image's own
            size (the images of one model must then all have the same size).
    """

    backbone: str = "resnet18"
    layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    d: int | None = None
    seed: int = 1024
    epsilon: float = 0.01
    sigma: float = 4.0
    resize: int = 256
    crop: int = 224
    interpolation: str = "bicubic"
    weights: str = "tv_in1k"
    batch_size: int = 8
    device: str = "auto"
    tile: int | None = None
    stride: int | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """Refuse, with a one-line message naming the field (as the command line spells it) and what to do, any
        value that would fail later or silently give wrong numbers: wrong types (e.g. from :meth:`from_dict`),
        non-finite or non-positive ``epsilon``, non-finite ``sigma`` or one whose blur radius does not fit the
        anomaly map, sizes below 1, an unknown ``device`` spelling."""
        object.__setattr__(self, "layers", _checked_layers(self.layers))
        _check_name("backbone", self.backbone, "resnet18")
        _check_name("weights", self.weights, "tv_in1k")
        if self.d is not None and (not _is_int(self.d) or self.d < 0):
            raise ValueError(f"d must be an integer >= 0 (0 keeps every channel), got {self.d!r}; "
                             "pass --d N or leave it out for the paper's value")  # fmt: skip
        _check_int("seed", self.seed, 0)
        if not _finite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(f"epsilon must be a finite number > 0, got {self.epsilon!r}; pass e.g. --epsilon 0.01")
        _check_int("resize", self.resize, 1)
        _check_int("crop", self.crop, 1)
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize}); pass --crop <= --resize")
        self._check_sigma()
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        _check_int("batch_size", self.batch_size, 1)
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}; "
                             "pass --device auto, cpu or cuda")  # fmt: skip
        self._check_tiling()

    def _check_tiling(self) -> None:
        """``tile`` >= 1, ``stride`` in 1..tile and ``image_size`` a pair of sides >= 1, all only when tiling."""
        if self.tile is None:
            if self.stride is not None or self.image_size is not None:
                raise ValueError("stride and image_size apply only with tiling; pass --tile N as well")
            return
        _check_int("tile", self.tile, 1)
        if self.stride is not None and (not _is_int(self.stride) or not 1 <= self.stride <= self.tile):
            raise ValueError(f"stride must be an integer in 1..tile ({self.tile}) (a larger step would leave pixels "
                             f"unseen), got {self.stride!r}; pass --stride S with S <= --tile")  # fmt: skip
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, str) or not isinstance(size, Iterable) or len(tuple(size)) != 2 \
                    or not all(_is_int(v) and v >= 1 for v in size):  # fmt: skip
                raise ValueError(f"image_size must be (height, width), two integers >= 1, got {size!r}; "
                                 "pass --resize HxW")  # fmt: skip
            object.__setattr__(self, "image_size", tuple(int(v) for v in size))

    @property
    def geometry(self) -> tuple[int | tuple[int, int] | None, int | None]:
        """(resize, crop) of :func:`~padim_repro.data.preprocess_image`: the paper's (``resize``, ``crop``), or
        with tiling (``image_size``, None): the whole image, at its own size or resized to ``image_size``."""
        return (self.resize, self.crop) if self.tile is None else (self.image_size, None)

    @property
    def tile_stride(self) -> int | None:
        """The step between tiles (``stride``, or ``tile`` when not given); ``None`` without tiling."""
        return None if self.tile is None else self.stride or self.tile

    def _check_sigma(self) -> None:
        """``sigma`` finite, >= 0, and its blur radius int(4 * sigma + 0.5) smaller than the anomaly map (the crop),
        which the blur's symmetric padding needs (:mod:`padim_repro.scoring`)."""
        if not _finite(self.sigma) or self.sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0 (0 disables the blur), got {self.sigma!r}; "
                             "pass e.g. --sigma 4")  # fmt: skip
        # int(x) < crop <=> x < crop for x >= 0 and an integer crop; written so that a huge sigma cannot overflow
        if not 4 * float(self.sigma) + 0.5 < self.crop:
            raise ValueError(f"sigma must be < {(self.crop - 0.5) / 4} for crop {self.crop} (the blur radius "
                             f"int(4 * sigma + 0.5) must be smaller than the {self.crop}-pixel anomaly map), got "
                             f"{self.sigma!r}; pass a smaller --sigma or a larger --crop")  # fmt: skip

    @property
    def resolved_d(self) -> int | None:
        """The number of kept channels, ``None`` meaning all of them."""
        if self.d is None:
            return PAPER_D.get(self.backbone)
        return self.d or None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layers"] = list(self.layers)
        if self.tile is None:  # the paper's protocol: the same fields (and run identities) as before tiling existed
            del out["tile"], out["stride"], out["image_size"]
        elif self.image_size is not None:
            out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PadimConfig:
        """Inverse of :meth:`to_dict`; unknown keys, and values of the wrong type or out of range (validated as in
        the checks of ``__post_init__``), are a ValueError naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a PadimConfig is read from a dict of its fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PadimConfig fields: {unknown}")
        return cls(**data)


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of a ``device`` option: ``auto`` gives CUDA when available, else CPU.

    A ValueError with a one-line message naming the option, rather than a failure deep inside torch, when the
    spelling is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, when CUDA is asked for but unavailable, or when
    ``cuda:N`` is beyond the devices present.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}; use --device cpu or auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA device is available; use --device cpu or auto")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {device!r} was asked for but only {count} CUDA device(s) are present "
                         f"(cuda:0 to cuda:{count - 1}); use --device cuda:0, cpu or auto")  # fmt: skip
    return torch.device(device)
