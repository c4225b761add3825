"""Patch embedding (PaDiM Sec. 3.1): pretrained CNN activations of several levels, concatenated per patch.

Each training or test image gives, at every position (i, j) of the first chosen layer's grid, the vector of all
chosen layers' activations there: coarser maps are upsampled with nearest neighbour to that grid (the paper's
"patch embedding"). A seeded random subset of ``d`` channels is kept (Sec. 3.1 and Table II).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn


class WeightsError(RuntimeError):
    """The backbone weights could not be obtained or do not fit the backbone."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` gives CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def layer_indices(backbone: str, layers: Sequence[str]) -> tuple[int, ...]:
    """timm ``out_indices`` of the named feature levels of ``backbone`` (errors list the valid names)."""
    try:
        with torch.device("meta"):
            probe = timm.create_model(backbone, features_only=True, pretrained=False)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown model names
        raise ValueError(f"backbone {backbone!r} is not a timm model with features_only support: {exc}") from exc
    names = list(probe.feature_info.module_name())
    missing = [name for name in layers if name not in names]
    if missing:
        raise ValueError(f"layers {missing} not in backbone {backbone!r}; its feature levels are {names}")
    indices = tuple(names.index(name) for name in layers)
    if list(indices) != sorted(set(indices)):
        raise ValueError(f"layers must be distinct and in network order, got {list(layers)}")
    return indices


def select_channels(n_channels: int, d: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of the ``d`` kept channels out of ``n_channels`` (all of them if ``d`` is None).

    The subset is ``random.Random(seed).sample(range(n_channels), d)``, the same subset as the widely used public
    reproduction (``random.seed(1024); random.sample(range(448), 100)``); sorting it changes nothing in the
    Gaussian model (a permutation of the coordinates) and lets each layer's channels be picked separately.
    """
    if d is None or d == n_channels:
        return torch.arange(n_channels)
    if not 0 < d <= n_channels:
        raise ValueError(f"d must be in 1..{n_channels} for this backbone and layers, got {d}")
    return torch.tensor(sorted(random.Random(seed).sample(range(n_channels), d)))


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-tensor files
        raise WeightsError(f"cannot load weights file {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state


def build_backbone(backbone: str, layers: Sequence[str], weights: str, seed: int) -> tuple[nn.Module, str]:
    """The timm feature extractor for ``layers`` and a content hash identifying its weights.

    ``weights``: ``tv_in1k`` fetches torchvision's ImageNet weights through timm's hub (what the paper used);
    a file path loads a local checkpoint in torchvision/timm key layout, which may hold more layers than needed
    (e.g. a conv1..layer3 checkpoint for layer1..layer3) but must hold every tensor of the layers in use;
    ``none`` keeps a seeded random init (for tests only).
    """
    from .efficientnet import build_efficientnet_features, is_efficientnet  # it builds on this module

    if is_efficientnet(backbone):  # their own weights layouts and input normalisation
        model = build_efficientnet_features(backbone, layers, weights, seed)
        return model.eval(), weights_fingerprint(model)
    indices = layer_indices(backbone, layers)
    kwargs = dict(features_only=True, out_indices=indices)
    if weights == "tv_in1k":
        try:
            model = timm.create_model(f"{backbone}.tv_in1k", pretrained=True, **kwargs)
        except Exception as exc:  # network errors surface as many exception types
            raise WeightsError(
                f"could not fetch {backbone}.tv_in1k weights from the hub ({type(exc).__name__}: {exc}). "
                "Offline? Pass a local checkpoint instead: --weights /path/to/checkpoint.pth "
                "(e.g. ../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth for resnet18)."
            ) from exc
    else:
        with torch.random.fork_rng():  # seeded init without touching the caller's random state
            torch.manual_seed(seed)
            model = timm.create_model(backbone, pretrained=False, **kwargs)
        if weights != "none":
            state = _load_checkpoint(Path(weights))
            own = model.state_dict()
            needed = [k for k in own if not k.endswith("num_batches_tracked")]
            missing = [k for k in needed if k not in state]
            if missing:
                raise WeightsError(
                    f"weights file {weights} lacks {len(missing)} tensors of the layers in use "
                    f"({backbone}, up to {layers[-1]}): {missing[:20]}{' ...' if len(missing) > 20 else ''}"
                )
            wrong = [k for k in needed if state[k].shape != own[k].shape]
            if wrong:
                raise WeightsError(
                    f"weights file {weights} has tensors of the wrong shape for {backbone}: "
                    + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:10])
                )
            model.load_state_dict({k: state[k] for k in needed}, strict=False)
    return model.eval(), weights_fingerprint(model)


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the model's parameters and buffers, in key order: the weights' identity."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureExtractor(nn.Module):
    """Backbone + patch embedding: images (B, 3, H, W) -> embeddings (B, d, h, w) on the first layer's grid."""

    def __init__(self, backbone: str, layers: Sequence[str], weights: str, d: int | None, seed: int):
        super().__init__()
        self.model, self.weights_id = build_backbone(backbone, layers, weights, seed)
        self.model = self.model.to(memory_format=torch.channels_last)
        channels = list(self.model.feature_info.channels())
        self.n_channels = sum(channels)
        self.register_buffer("channel_indices", select_channels(self.n_channels, d, seed), persistent=False)
        # Split the (sorted) global indices into per-layer local indices, so each layer is reduced before upsampling.
        offsets = torch.tensor([0] + channels).cumsum(0)
        self._per_layer = [
            self.channel_indices[(self.channel_indices >= lo) & (self.channel_indices < hi)] - lo
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())
        ]

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last runs the convolutions about 1.5x faster on CPU (oneDNN) with the same results.
        feats = self.model(images.contiguous(memory_format=torch.channels_last))
        size = feats[0].shape[-2:]
        parts = []
        for f, idx in zip(feats, self._per_layer):
            if idx.numel() == 0:
                continue
            f = f.index_select(1, idx.to(f.device))
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="nearest")
            parts.append(f)
        return torch.cat(parts, dim=1).contiguous()
