"""padim_repro.tiling: tiles embedded one by one and stitched into the whole image's grid (random-init backbone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from padim_repro.config import PadimConfig
from padim_repro.model import Padim
from padim_repro.tiling import TiledExtractor, padded_size, tile_starts

BASE = {"weights": "none", "batch_size": 4, "device": "cpu", "resize": 64, "crop": 56}


def _textures(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth random stripes plus noise, normalised like network inputs: (n, 3, height, width)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(height) / height, torch.arange(width) / width, indexing="ij")
    out = []
    for _ in range(n):
        f, phase = torch.rand(2, generator=g) * torch.tensor([3.0, 6.28])
        img = torch.sin(2 * torch.pi * f * (xx + yy) + phase) * 0.5 + 0.1 * torch.randn(height, width, generator=g)
        out.append(img.expand(3, -1, -1))
    return torch.stack(out)


def test_tile_positions_cover_the_padded_image() -> None:
    assert padded_size(64, 32, 32) == 64 and tile_starts(64, 32, 32) == [0, 32]
    assert padded_size(70, 32, 16) == 80 and tile_starts(70, 32, 16) == [0, 16, 32, 48]
    assert padded_size(32, 32, 8) == 32 and tile_starts(32, 32, 8) == [0]
    with pytest.raises(ValueError, match="tile 40 is larger than the image side 32"):
        padded_size(32, 40, 8)


def test_one_tile_covering_the_image_is_exactly_the_untiled_model() -> None:
    """A tile of the image's size: the same Gaussians, maps and scores, bit for bit."""
    train, test = _textures(6, 56, 56, seed=0), _textures(3, 56, 56, seed=1)
    plain = Padim(PadimConfig(**BASE), progress=False).fit(train)
    tiled = Padim(PadimConfig(**BASE, tile=56), progress=False).fit(train)
    assert torch.equal(plain.mean_, tiled.mean_) and torch.equal(plain.precision_, tiled.precision_)
    (maps_p, scores_p), (maps_t, scores_t) = plain.predict(test), tiled.predict(test)
    np.testing.assert_array_equal(maps_p, maps_t)
    np.testing.assert_array_equal(scores_p, scores_t)


def test_overlaps_are_averaged() -> None:
    """Stitching with a stride of half a tile: each position is the mean of the tiles' embeddings covering it."""
    model = Padim(PadimConfig(**BASE, tile=32, stride=16), progress=False)
    ext = model.extractor
    assert isinstance(ext, TiledExtractor)
    x = _textures(2, 32, 48, seed=2)
    stitched = ext(x)
    left, right = ext.extractor(x[..., :32]), ext.extractor(x[..., 16:48])  # tiles at x = 0 and 16, grid 8 wide
    assert stitched.shape == (2, 100, 8, 12)
    torch.testing.assert_close(stitched[..., :4], left[..., :4], rtol=0, atol=0)
    torch.testing.assert_close(stitched[..., 4:8], (left[..., 4:] + right[..., :4]) / 2)
    torch.testing.assert_close(stitched[..., 8:], right[..., 4:], rtol=0, atol=0)


def test_a_defect_across_a_tile_border_is_found() -> None:
    """A bright square straddling the border between two tiles (and two rows of tiles): the defective image scores
    above every good one, and the map peaks on the defect."""
    train, good = _textures(16, 64, 96, seed=3), _textures(4, 64, 96, seed=4)
    bad = _textures(2, 64, 96, seed=5)
    bad[:, :, 24:40, 24:40] = 2.0  # tiles of 32 px: borders at x = 32 and y = 32 cross the square
    model = Padim(PadimConfig(**BASE, tile=32), progress=False).fit(train)
    maps, scores = model.predict(torch.cat([good, bad]))
    assert maps.shape == (6, 64, 96)
    assert scores[4:].min() > scores[:4].max()
    for m in maps[4:]:
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert 16 <= y < 48 and 16 <= x < 48, (y, x)
        assert m[24:40, 24:40].mean() > 2 * m[:, 64:].mean()


def test_the_backbone_sees_only_tiles() -> None:
    """Memory flat in the image size per tile: every backbone call is one tile position of the batch."""
    model = Padim(PadimConfig(**BASE, tile=32, stride=32), progress=False)
    seen: list[tuple[int, ...]] = []
    inner = model.extractor.extractor
    hook = inner.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        model.fit(_textures(4, 96, 128, seed=6))
    finally:
        hook.remove()
    assert len(seen) == 3 * 4 and set(seen) == {(4, 3, 32, 32)}


def test_tiled_model_file_round_trip_and_size_check(tmp_path: Path) -> None:
    train, test = _textures(6, 40, 72, seed=7), _textures(2, 40, 72, seed=8)
    model = Padim(PadimConfig(**BASE, tile=32, stride=8), progress=False).fit(train)
    maps, scores = model.predict(test)
    assert maps.shape == (2, 40, 72) and model.image_size_ == (40, 72)
    loaded = Padim.load(model.save(tmp_path / "m.pt"), progress=False)
    assert loaded.image_size_ == (40, 72) and loaded.config == model.config
    maps2, scores2 = loaded.predict(test)
    np.testing.assert_array_equal(maps, maps2)
    with pytest.raises(ValueError, match="pass --resize 40x72"):
        loaded.predict(_textures(2, 48, 72, seed=9))


@pytest.mark.parametrize("tile, stride, match", [(30, None, "multiples of the backbone's feature stride"),
                                                 (32, 6, "multiples of the backbone's feature stride"),
                                                 (64, None, "tile 64 is larger")])  # fmt: skip
def test_bad_tiles_are_refused(tile: int, stride: int | None, match: str) -> None:
    model = Padim(PadimConfig(**BASE, tile=tile, stride=stride), progress=False)
    with pytest.raises(ValueError, match=match):
        model.fit(_textures(2, 48, 72, seed=10))


def test_tiling_config_fields() -> None:
    untiled = PadimConfig()
    assert "tile" not in untiled.to_dict()  # the paper's runs keep their fields and identities
    c = PadimConfig(tile=64, stride=32, image_size=[128, 256])
    assert c.image_size == (128, 256) and c.tile_stride == 32 and c.geometry == ((128, 256), None)
    assert PadimConfig.from_dict(c.to_dict()) == c
    assert PadimConfig(tile=64).tile_stride == 64 and untiled.geometry == (256, 224)
    for kwargs, match in [({"tile": 64, "stride": 65}, "stride must be"), ({"stride": 8}, "only with tiling"),
                          ({"tile": 0}, "tile must be"), ({"tile": 8, "image_size": (8,)}, "image_size")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            PadimConfig(**kwargs)
