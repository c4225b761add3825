"""Every parameter of a PaDiM run in one place (scikit-learn style: no hidden state).

The defaults are the paper's protocol (Defard et al., 2020, Sec. 4.1 "Implementation details"): ResNet-18 with
d = 100 or Wide-ResNet-50-2 with d = 550 randomly selected channels of layer1..layer3, Gaussian regularisation
epsilon = 0.01, images resized to 256 and center-cropped to 224, and the anomaly map blurred with sigma = 4.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

#: The paper's number of randomly kept channels per backbone (Sec. 4.1: "Rd100" and "Rd550").
PAPER_D: dict[str, int] = {"resnet18": 100, "wide_resnet50_2": 550}

#: Interpolation names accepted for the first resize.
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")


@dataclass(frozen=True)
class PadimConfig:
    """Configuration of one PaDiM model.

    Attributes:
        backbone: timm model name of an ImageNet CNN (``resnet18``, ``wide_resnet50_2``, any timm CNN that supports
            ``features_only``).
        layers: feature levels whose maps are concatenated (Sec. 3.1), timm module names such as ``layer1``.
        d: number of channels kept by random selection (Sec. 3.1 / Table II); ``None`` means the paper's value for
            the backbone (100 / 550) or every channel for other backbones; ``0`` keeps every channel.
        seed: seed of the random channel selection and of random weights (``weights="none"``).
        epsilon: regularisation added to each covariance, Sigma + epsilon * I (Sec. 3.2, Eq. 1).
        sigma: standard deviation of the Gaussian blur of the anomaly map in pixels (Sec. 4.1); 0 disables it.
        resize: side of the first resize (Sec. 4.1: 256).
        crop: side of the center crop (Sec. 4.1: 224).
        interpolation: interpolation of the first resize of the images (masks always use nearest).
        weights: ``tv_in1k`` (torchvision ImageNet weights via timm's hub), a path to a local checkpoint, or
            ``none`` (random init, only meaningful for tests).
        batch_size: images per forward pass; affects speed and memory only.
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``; affects speed only.
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
    batch_size: int = 32
    device: str = "auto"
    #: Fields that change speed but never results; left out of :meth:`key`.
    runtime_fields: tuple[str, ...] = field(default=("batch_size", "device"), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("layers: at least one layer is needed")
        if self.d is not None and self.d < 0:
            raise ValueError(f"d must be >= 0 (0 keeps every channel), got {self.d}")
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def resolved_d(self) -> int | None:
        """The number of kept channels, ``None`` meaning all of them."""
        if self.d is None:
            return PAPER_D.get(self.backbone)
        return self.d or None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (runtime ones included)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "runtime_fields"}
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PadimConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)} - {"runtime_fields"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PadimConfig fields: {unknown}")
        return cls(**data)

    def key(self) -> str:
        """Short stable hash of everything that determines results (not batch size or device).

        The weights enter by their spec (hub tag or path); the content hash of the weights is recorded beside it.
        """
        fields = {k: v for k, v in self.to_dict().items() if k not in self.runtime_fields}
        fields["d"] = self.resolved_d
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` gives CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
