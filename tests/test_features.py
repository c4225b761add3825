"""padim_repro.features: seeded channel selection, patch embedding (paper Sec. 3.1) and weights loading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
try:
    from conftest import SHARED_WEIGHTS, requires_shared_weights
except ImportError:  # tests/ made a package
    from .conftest import SHARED_WEIGHTS, requires_shared_weights

from padim_repro.config import PadimConfig
from padim_repro.features import (
    FeatureExtractor,
    WeightsError,
    build_backbone,
    layer_indices,
    select_channels,
    weights_fingerprint,
)

R18_LAYERS = ("layer1", "layer2", "layer3")


# -- helpers --------------------------------------------------------------------------------------------------
def _full_resnet18_state(seed: int = 123) -> dict[str, torch.Tensor]:
    """State dict of a complete random timm resnet18 (with layer4 and fc)."""
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", pretrained=False)
    # give the batch norms non-trivial statistics so that a mix-up of buffers would show
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _partial(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}


def _save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


def _reference_embedding(
    state: dict[str, torch.Tensor], images: torch.Tensor, indices: torch.Tensor, layers=R18_LAYERS
) -> torch.Tensor:
    """Brute force: timm features, every layer upsampled (nearest) to the first one's size, all channels, then pick."""
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    model = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=[names.index(n) for n in layers])
    own = model.state_dict()
    model.load_state_dict({k: state[k] for k in own})
    model.eval()
    with torch.no_grad():
        feats = model(images)
    size = feats[0].shape[-2:]
    full = torch.cat([F.interpolate(f, size=size, mode="nearest") for f in feats], dim=1)
    return full.index_select(1, indices)


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    return _full_resnet18_state()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


# -- channel selection ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "d", "seed"), [(448, 100, 1024), (448, 100, 0), (1792, 550, 1024), (10, 3, 5)])
def test_select_channels_matches_random_sample(n: int, d: int, seed: int) -> None:
    got = select_channels(n, d, seed)
    assert got.tolist() == sorted(random.Random(seed).sample(range(n), d))
    assert torch.equal(got, select_channels(n, d, seed))  # reproducible
    assert got.unique().numel() == d and int(got.min()) >= 0 and int(got.max()) < n


def test_select_channels_depends_on_seed() -> None:
    assert not torch.equal(select_channels(448, 100, 1024), select_channels(448, 100, 1025))


def test_select_channels_all_and_invalid() -> None:
    assert torch.equal(select_channels(448, None, 1), torch.arange(448))
    assert torch.equal(select_channels(448, 448, 1), torch.arange(448))
    for bad in (449, -1):
        with pytest.raises(ValueError, match="448"):
            select_channels(448, bad, 1)


def test_default_r18_selection_is_the_public_reproductions_subset() -> None:
    """The widely used PaDiM reproduction: ``random.seed(1024); idx = random.sample(range(448), 100)``."""
    saved = random.getstate()
    try:
        random.seed(1024)
        public = random.sample(range(448), 100)
    finally:
        random.setstate(saved)
    c = PadimConfig()
    assert (c.backbone, c.layers, c.resolved_d, c.seed) == ("resnet18", R18_LAYERS, 100, 1024)
    assert select_channels(448, c.resolved_d, c.seed).tolist() == sorted(public)
    ex = FeatureExtractor(c.backbone, c.layers, "none", c.resolved_d, c.seed)
    assert ex.n_channels == 448
    assert ex.channel_indices.tolist() == sorted(public)


# -- patch embedding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("d", "seed"), [(100, 1024), (100, 3), (None, 0), (1, 0), (1, 1), (7, 11)])
def test_extractor_equals_brute_force(
    tmp_path: Path, source_state: dict, images: torch.Tensor, d: int | None, seed: int
) -> None:
    ckpt = _save(_partial(source_state), tmp_path / "r18.pth")
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(ckpt), d, seed)
    got = ex(images)
    expected = _reference_embedding(source_state, images, select_channels(448, d, seed))
    assert got.shape == (2, d or 448, 16, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_extractor_other_layers_use_first_layer_grid(tmp_path: Path, source_state: dict, images: torch.Tensor) -> None:
    layers = ("layer2", "layer3")
    ckpt = _save(_partial(source_state), tmp_path / "r18.pth")
    ex = FeatureExtractor("resnet18", layers, str(ckpt), 50, 2)
    assert ex.n_channels == 128 + 256
    expected = _reference_embedding(source_state, images, select_channels(384, 50, 2), layers)
    got = ex(images)
    assert got.shape == (2, 50, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_random_weights_are_seeded(images: torch.Tensor) -> None:
    a = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 5)
    b = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 5)
    c = FeatureExtractor("resnet18", R18_LAYERS, "none", 20, 6)
    assert a.weights_id == b.weights_id != c.weights_id
    assert torch.equal(a(images), b(images))


def test_wide_resnet50_path() -> None:
    ex = FeatureExtractor("wide_resnet50_2", R18_LAYERS, "none", 550, 1024)
    assert ex.n_channels == 256 + 512 + 1024 == 1792
    assert ex.channel_indices.tolist() == sorted(random.Random(1024).sample(range(1792), 550))
    out = ex(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 550, 16, 16)
    assert torch.isfinite(out).all()
    assert PadimConfig(backbone="wide_resnet50_2").resolved_d == 550


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
def test_partial_checkpoint_accepted_same_fingerprint(tmp_path: Path, source_state: dict) -> None:
    full = _save(source_state, tmp_path / "full.pth")
    part = _save(_partial(source_state), tmp_path / "part.pth")
    wrapped = _save({"state_dict": _partial(source_state), "epoch": 3}, tmp_path / "wrapped.pth")
    ex_full = FeatureExtractor("resnet18", R18_LAYERS, str(full), 100, 1024)
    ex_part = FeatureExtractor("resnet18", R18_LAYERS, str(part), 100, 1024)
    ex_wrap = FeatureExtractor("resnet18", R18_LAYERS, str(wrapped), 100, 1024)

    # the fingerprint of the source network's conv1..layer3, computed independently
    ref = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    ref.load_state_dict({k: source_state[k] for k in ref.state_dict()})
    expected = weights_fingerprint(ref)
    assert ex_full.weights_id == ex_part.weights_id == ex_wrap.weights_id == expected
    assert expected != FeatureExtractor("resnet18", R18_LAYERS, "none", 100, 1024).weights_id

    # every tensor actually came from the file (buffers included)
    for key, value in ex_part.model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, source_state[key]), key


def test_checkpoint_without_num_batches_tracked(tmp_path: Path, source_state: dict) -> None:
    state = {k: v for k, v in _partial(source_state).items() if not k.endswith("num_batches_tracked")}
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(_save(state, tmp_path / "w.pth")), 10, 0)
    assert ex.weights_id == FeatureExtractor("resnet18", R18_LAYERS, str(_save(source_state, tmp_path / "f.pth")), 10, 0).weights_id


def test_checkpoint_missing_layer3_tensor(tmp_path: Path, source_state: dict) -> None:
    state = _partial(source_state)
    for key in ("layer3.1.conv2.weight", "layer3.0.downsample.1.running_var"):
        del state[key]
    path = _save(state, tmp_path / "incomplete.pth")
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("resnet18", R18_LAYERS, str(path), 100, 1024)
    msg = str(info.value)
    assert str(path) in msg
    assert "layer3.1.conv2.weight" in msg and "layer3.0.downsample.1.running_var" in msg
    assert "lacks 2 tensors" in msg


def test_checkpoint_missing_layer3_is_fine_when_layer3_unused(tmp_path: Path, source_state: dict) -> None:
    state = {k: v for k, v in source_state.items() if not k.startswith(("layer3.", "layer4.", "fc."))}
    path = _save(state, tmp_path / "upto_layer2.pth")
    ex = FeatureExtractor("resnet18", ("layer1", "layer2"), str(path), None, 0)
    assert ex.n_channels == 64 + 128
    with pytest.raises(WeightsError, match="layer3"):
        FeatureExtractor("resnet18", R18_LAYERS, str(path), None, 0)


def test_checkpoint_wrong_shape(tmp_path: Path, source_state: dict) -> None:
    state = _partial(source_state)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = _save(state, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError) as info:
        FeatureExtractor("resnet18", R18_LAYERS, str(path), 100, 1024)
    msg = str(info.value)
    assert "layer2.0.conv1.weight" in msg and "(128, 32, 3, 3)" in msg and "(128, 64, 3, 3)" in msg


def test_checkpoint_for_another_backbone(tmp_path: Path, source_state: dict) -> None:
    """A resnet18 checkpoint given for wide_resnet50_2 is rejected, not silently half-loaded."""
    path = _save(source_state, tmp_path / "r18.pth")
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
    not_tensors = _save({"a": [1, 2, 3]}, tmp_path / "list.pth")
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
