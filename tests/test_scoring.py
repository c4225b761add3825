"""padim_repro.scoring: Mahalanobis distance (Eq. 2), upsampling, Gaussian blur and image scores (Sec. 3.3, 4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from padim_repro import scoring
from padim_repro.scoring import anomaly_maps, gaussian_blur, gaussian_kernel1d, image_scores, mahalanobis


def _spd(p: int, d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(p, d, d, generator=g, dtype=torch.float64)
    return a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("steps", [None, 5])
def test_mahalanobis_matches_scipy(monkeypatch: pytest.MonkeyPatch, steps: int | None) -> None:
    if steps is not None:  # several chunks of positions, the last one partial
        monkeypatch.setattr(scoring, "_POSITIONS_PER_STEP", steps)
    g = torch.Generator().manual_seed(0)
    b, d, h, w = 3, 6, 4, 3
    emb = torch.randn(b, d, h, w, generator=g) * 2
    mean = torch.randn(h * w, d, generator=g)
    precision = _spd(h * w, d, g).float()
    got = mahalanobis(emb, mean, precision)
    assert got.shape == (b, h, w) and got.dtype == torch.float32
    expected = np.empty((b, h, w))
    e = emb.double().numpy()
    for i in range(b):
        for y in range(h):
            for x in range(w):
                p = y * w + x
                expected[i, y, x] = scipy_mahalanobis(e[i, :, y, x], mean[p].double().numpy(), precision[p].double().numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_mahalanobis_zero_at_mean() -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(4, 5, generator=g)
    emb = mean.T.reshape(1, 5, 2, 2)
    got = mahalanobis(emb, mean, _spd(4, 5, g).float())
    torch.testing.assert_close(got, torch.zeros(1, 2, 2), atol=1e-3, rtol=0)


def test_mahalanobis_identity_precision_is_euclidean() -> None:
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(2, 4, 3, 3, generator=g)
    mean = torch.randn(9, 4, generator=g)
    got = mahalanobis(emb, mean, torch.eye(4).expand(9, 4, 4).contiguous())
    expected = (emb.reshape(2, 4, 9) - mean.T[None]).norm(dim=1).reshape(2, 3, 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0, 1.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_blur_matches_scipy(sigma: float, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    maps = rng.random((3, 40, 37)) * 10  # non-square, so a swapped axis would show
    got = gaussian_blur(torch.from_numpy(maps).to(dtype), sigma)
    assert got.shape == maps.shape and got.dtype == dtype
    expected = np.stack([gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in maps])
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_gaussian_blur_borders_are_reflect_not_zero() -> None:
    """A constant map stays constant (zero padding would darken the borders)."""
    maps = torch.full((1, 30, 30), 5.0, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(maps, 4.0), maps)


def test_gaussian_kernel_radius_and_sum() -> None:
    for sigma, radius in [(1.0, 4), (2.0, 8), (4.0, 16), (0.5, 2)]:
        k = gaussian_kernel1d(sigma)
        assert k.numel() == 2 * radius + 1
        assert abs(float(k.sum()) - 1) < 1e-12
        assert torch.equal(k, k.flip(0))


def test_sigma_zero_is_identity() -> None:
    maps = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(3))
    assert torch.equal(gaussian_blur(maps, 0), maps)


def test_blur_radius_larger_than_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(torch.rand(1, 10, 10), 4.0)


@pytest.mark.parametrize(("h", "size"), [(14, 56), (7, 30), (28, 224)])
def test_anomaly_maps_upsample_bilinear(h: int, size: int) -> None:
    dist = torch.rand(2, h, h, generator=torch.Generator().manual_seed(h))
    expected = F.interpolate(dist[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    got = anomaly_maps(dist, size, 0)
    assert got.shape == (2, size, size)
    # anomaly_maps applies the same linear map as two matrix products: equal up to float32 rounding.
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_anomaly_maps_upsample_then_blur() -> None:
    dist = torch.rand(2, 14, 14, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    up = F.interpolate(dist[:, None], size=(56, 56), mode="bilinear", align_corners=False)[:, 0].numpy()
    expected = np.stack([gaussian_filter(m, 4, mode="reflect", truncate=4.0) for m in up])
    np.testing.assert_allclose(anomaly_maps(dist, 56, 4.0).numpy(), expected, rtol=1e-6, atol=1e-9)


def test_image_scores_are_maxima() -> None:
    maps = torch.rand(4, 8, 9, generator=torch.Generator().manual_seed(6))
    maps[2, 7, 8] = 3.0
    maps[0, 0, 0] = -1.0
    got = image_scores(maps)
    assert got.shape == (4,)
    expected = torch.tensor([float(m.max()) for m in maps])
    assert torch.equal(got, expected)
    assert float(got[2]) == 3.0


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_anomaly_maps_upsampling_modes_match_interpolate_then_blur(mode: str) -> None:
    """The map upsampling: bilinear (the method's default) or bicubic (the paper as translated), each equal to
    F.interpolate with that mode followed by the blur."""
    d = torch.rand(2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = gaussian_blur(F.interpolate(d[:, None], size=(32, 32), mode=mode, align_corners=False)[:, 0], 2.0)
    assert torch.allclose(anomaly_maps(d, 32, 2.0, mode), ref, atol=1e-12)
    with pytest.raises(ValueError, match="upsample"):
        anomaly_maps(d, 32, 2.0, "nearest")
