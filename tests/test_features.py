"""padim_repro.features: seeded channel selection and the patch embedding (paper Sec. 3.1)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import R18_LAYERS, partial_state, save_state

from padim_repro.config import PadimConfig
from padim_repro.features import FeatureExtractor, select_channels, upsample_nearest_into


# -- helpers --------------------------------------------------------------------------------------------------
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
    tmp_path: Path, resnet18_state: dict, images: torch.Tensor, d: int | None, seed: int
) -> None:
    ckpt = save_state(partial_state(resnet18_state), tmp_path / "r18.pth")
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(ckpt), d, seed)
    got = ex(images)
    expected = _reference_embedding(resnet18_state, images, select_channels(448, d, seed))
    assert got.shape == (2, d or 448, 16, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_extractor_writes_into_a_given_buffer(tmp_path: Path, resnet18_state: dict, images: torch.Tensor) -> None:
    """``out`` (a slice of a larger buffer, as predict's group buffer): the same embeddings, written there, and
    nothing outside the slice; a buffer of another shape is refused."""
    ex = FeatureExtractor("resnet18", R18_LAYERS, str(save_state(partial_state(resnet18_state), tmp_path / "r.pth")),
                          100, 1024)  # fmt: skip
    buffer = torch.full((5, 16, 16, 100), float("nan"))
    got = ex(images, buffer[1:3])
    assert got.data_ptr() == buffer[1].data_ptr() and torch.equal(got, ex(images))
    assert bool(buffer[0].isnan().all()) and bool(buffer[3:].isnan().all())
    with pytest.raises(ValueError, match="out has shape"):
        ex(images, buffer[:3])


@pytest.mark.parametrize("size_in", [1, 2, 3, 5, 7, 13, 14, 28])
@pytest.mark.parametrize("size_out", [14, 21, 50, 56, 64])
def test_upsample_nearest_into_equals_interpolate(size_in: int, size_out: int) -> None:
    """Both paths (integer factor: an expanded view; otherwise gathered rows and columns) against F.interpolate,
    written into a channel slice of a larger buffer as the extractor does."""
    part = torch.randn(2, 3, size_in, size_in + 1, generator=torch.Generator().manual_seed(size_in))
    expected = F.interpolate(part, size=(size_out, 2 * size_out), mode="nearest").permute(0, 2, 3, 1)
    out = torch.full((2, size_out, 2 * size_out, 7), float("nan"))
    upsample_nearest_into(out[..., 2:5], part.permute(0, 2, 3, 1))
    assert torch.equal(out[..., 2:5], expected)
    assert bool(out[..., :2].isnan().all()) and bool(out[..., 5:].isnan().all())


def test_extractor_equals_brute_force_on_a_grid_of_no_integer_factor(tmp_path: Path, resnet18_state: dict) -> None:
    """72 px: layer grids 18, 9 and 5, so layer3's 5 -> 18 takes the gathering path."""
    images = torch.randn(2, 3, 72, 72, generator=torch.Generator().manual_seed(3))
    ckpt = save_state(partial_state(resnet18_state), tmp_path / "r18.pth")
    got = FeatureExtractor("resnet18", R18_LAYERS, str(ckpt), 100, 1024)(images)
    expected = _reference_embedding(resnet18_state, images, select_channels(448, 100, 1024))
    assert got.shape == (2, 100, 18, 18)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_extractor_other_layers_use_first_layer_grid(tmp_path: Path, resnet18_state: dict, images: torch.Tensor) -> None:
    layers = ("layer2", "layer3")
    ckpt = save_state(partial_state(resnet18_state), tmp_path / "r18.pth")
    ex = FeatureExtractor("resnet18", layers, str(ckpt), 50, 2)
    assert ex.n_channels == 128 + 256
    expected = _reference_embedding(resnet18_state, images, select_channels(384, 50, 2), layers)
    got = ex(images)
    assert got.shape == (2, 50, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_wide_resnet50_path() -> None:
    ex = FeatureExtractor("wide_resnet50_2", R18_LAYERS, "none", 550, 1024)
    assert ex.n_channels == 256 + 512 + 1024 == 1792
    assert ex.channel_indices.tolist() == sorted(random.Random(1024).sample(range(1792), 550))
    out = ex(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 550, 16, 16)
    assert torch.isfinite(out).all()
    assert PadimConfig(backbone="wide_resnet50_2").resolved_d == 550


