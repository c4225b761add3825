"""The ablations (padim_repro.study.ablations): cached embeddings, the sub-block / projection route against direct fits,
the summed per-layer variant, resumable experiments and the notebooks, on small synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import RGB_CATEGORY

from padim_repro.config import PadimConfig
from padim_repro.data import MVTecDataset, batches, find_samples
from padim_repro.features import FeatureExtractor
from padim_repro.gaussian import GaussianAccumulator
from padim_repro.model import Padim
from padim_repro.scoring import mahalanobis
from padim_repro.study import ablations as ab
from padim_repro.study.ablations import experiments as X
from padim_repro.study.ablations import variants as V
from padim_repro.study.report import METRICS
from padim_repro.study.synthetic import make_synthetic_category

SIZE = dict(resize=64, crop=56)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _cache(root: Path, cache_dir: Path, **kw) -> ab.EmbeddingCache:
    return ab.EmbeddingCache(root, kw.pop("weights", "none"), cache_dir, device="cpu", batch_size=8,
                             **{**SIZE, **kw})  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def emb(synthetic_root: Path, cache_dir: Path) -> ab.Embeddings:
    return _cache(synthetic_root, cache_dir).load(RGB_CATEGORY)


@pytest.fixture(scope="module")
def gaussians(emb: ab.Embeddings) -> V.PositionGaussians:
    return V.position_gaussians(emb.train)


def _images(root: Path, split: str) -> torch.Tensor:
    ds = MVTecDataset(find_samples(root, RGB_CATEGORY, split), **SIZE)
    return torch.cat([x for x, _ in batches(ds, 8)])


def test_embeddings_layout(emb: ab.Embeddings) -> None:
    assert emb.train.dtype == torch.float32 and emb.test.dtype == torch.float32
    assert emb.train.shape == (10, 448, 14, 14) and emb.test.shape == (10, 448, 14, 14)
    assert emb.layer_channels == (64, 128, 256) and emb.masks.shape == (10, 56, 56)
    assert emb.labels.tolist() == [0] * 4 + [1] * 6 and emb.layer_block("layer2").tolist() == list(range(64, 192))


def test_position_gaussians_match_numpy(emb: ab.Embeddings, gaussians: V.PositionGaussians) -> None:
    x = emb.train.double().reshape(10, 448, -1).numpy()
    for p in (0, 77, 195):
        assert np.allclose(gaussians.mean[p].numpy(), x[:, :, p].mean(0))
        ref = np.cov(x[:, :, p], rowvar=False)
        assert np.abs(gaussians.cov[p].double().numpy() - ref).max() <= 1e-6 * np.abs(ref).max()  # float32 storage


@pytest.mark.parametrize("d, seed", [(100, 1024), (37, 1024)])
def test_subblock_equals_direct_padim_fit(synthetic_root: Path, emb: ab.Embeddings, gaussians: V.PositionGaussians,
                                         d: int, seed: int) -> None:  # fmt: skip
    """A random subset as a sub-block of the full covariance == Padim fitted on that subset (streaming, float32)."""
    model = Padim(PadimConfig(d=d, seed=seed, weights="none", batch_size=8, device="cpu", **SIZE), progress=False)
    model.fit(_images(synthetic_root, "train"))
    idx = model.channel_indices_
    # The cache holds the same embeddings as the model's own extractor.
    assert torch.allclose(model.extractor(_images(synthetic_root, "test")), emb.test[:, idx], atol=1e-5)
    ref = mahalanobis(emb.test[:, idx], model.mean_, model.precision_)
    ours = V.variant_distances(gaussians, emb.test, idx)
    assert ours.shape == ref.shape == (10, 14, 14)
    assert _rel(ours, ref) < 1e-4


def test_subblock_equals_accumulator_on_subset(emb: ab.Embeddings, gaussians: V.PositionGaussians) -> None:
    """A layer's diagonal block == GaussianAccumulator fed only that layer's channels."""
    block = emb.layer_block("layer2")
    acc = GaussianAccumulator(block.numel(), 14 * 14)
    for chunk in emb.train[:, block].split(4):
        acc.update(chunk)
    mean, precision = acc.finalize(0.01)
    ref = mahalanobis(emb.test[:, block], mean, precision)
    assert _rel(V.variant_distances(gaussians, emb.test, block), ref) < 1e-4
    # ... and == Gaussians computed on the block alone.
    assert _rel(V.variant_distances(V.position_gaussians(emb.train, block), emb.test, block), ref) < 1e-4


def test_pca_matches_sklearn(emb: ab.Embeddings, gaussians: V.PositionGaussians) -> None:
    """PCA of the pooled training embeddings (sklearn), Gaussians fitted on the projections == W^T Sigma W route."""
    from sklearn.decomposition import PCA

    d = 20
    pooled = emb.train.double().permute(0, 2, 3, 1).reshape(-1, 448).numpy()  # N*h*w vectors
    pca = PCA(n_components=d, svd_solver="full").fit(pooled)
    w_ref = torch.from_numpy(pca.components_.T.copy())  # (448, d)
    w_ours = V.principal_axes(gaussians)[:, :d]
    # Same axes up to sign.
    assert torch.allclose((w_ours.T @ w_ref).abs().diagonal(), torch.ones(d, dtype=torch.float64), atol=1e-6)
    ref_train = torch.einsum("nchw,ck->nkhw", emb.train.double(), w_ref)
    acc = GaussianAccumulator(d, 14 * 14)
    acc.update(ref_train)
    mean, precision = acc.finalize(0.01)
    ref = mahalanobis(torch.einsum("nchw,ck->nkhw", emb.test.double(), w_ref).float(), mean, precision)
    ours = V.variant_distances(gaussians, emb.test, projection=w_ours)
    assert _rel(ours, ref) < 1e-4  # Mahalanobis distances do not depend on the axes' signs


def test_full_rotation_is_all_channels(emb: ab.Embeddings) -> None:
    """Why d = 448 is computed once: PCA to all dimensions (a rotation) gives the all-channel distances."""
    g = V.position_gaussians(emb.train, torch.arange(192))  # layer1 + layer2 keeps the test fast
    rotated = V.variant_distances(g, emb.test, projection=V.principal_axes(g))
    assert _rel(rotated, V.variant_distances(g, emb.test)) < 1e-3


def test_summed_layers_equal_three_separate_fits(synthetic_root: Path, emb: ab.Embeddings) -> None:
    """Layer variants on the layer1 grid == three Padim fits, each on its layer's own grid, distances
    nearest-upsampled to the layer1 grid and summed."""
    train, test = _images(synthetic_root, "train"), _images(synthetic_root, "test")
    per_layer = X.layer_distances(emb)
    refs = []
    for layer in ("layer1", "layer2", "layer3"):
        with V.torch_threads(1):  # batched Cholesky is much slower with 2 threads on a busy 2-core machine
            model = Padim(PadimConfig(layers=(layer,), d=0, weights="none", batch_size=8, device="cpu", **SIZE),
                          progress=False).fit(train)  # fmt: skip
        own = model.extractor(test)
        dist = mahalanobis(own, model.mean_, model.precision_)  # on the layer's own grid
        assert own.shape[-1] == {"layer1": 14, "layer2": 7, "layer3": 4}[layer]
        up = F.interpolate(dist[:, None], size=(14, 14), mode="nearest")[:, 0]
        assert _rel(per_layer[layer], up) < 1e-4
        refs.append(up)
    summed = torch.stack(list(per_layer.values())).sum(0)
    assert _rel(summed, torch.stack(refs).sum(0)) < 1e-4


@pytest.fixture
def counted_forward(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = FeatureExtractor.forward

    def forward(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(FeatureExtractor, "forward", forward)
    return calls


def test_cache_hit_and_misses(synthetic_root: Path, tmp_path: Path, counted_forward: list[int]) -> None:
    first = _cache(synthetic_root, tmp_path).load(RGB_CATEGORY)
    n = len(counted_forward)
    assert n > 0 and not first.from_cache
    second = _cache(synthetic_root, tmp_path).load(RGB_CATEGORY)  # a fresh object: only the disk is shared
    assert len(counted_forward) == n, "a cache hit must not run the backbone"
    assert second.from_cache and second.key == first.key
    assert torch.equal(second.train, first.train) and torch.equal(second.test, first.test)
    assert np.array_equal(second.masks, first.masks) and np.array_equal(second.labels, first.labels)

    others = {
        "preprocessing": _cache(synthetic_root, tmp_path, crop=64),
        "layers": _cache(synthetic_root, tmp_path, layers=("layer1", "layer2")),
        "interpolation": _cache(synthetic_root, tmp_path, interpolation="bilinear"),
        "weights": _cache(synthetic_root, tmp_path, seed=7),  # another random init: another fingerprint
    }
    for what, cache in others.items():
        before = len(counted_forward)
        other = cache.load(RGB_CATEGORY)
        assert other.key != first.key and other.folder != first.folder, what
        assert not other.from_cache and len(counted_forward) > before, f"{what}: must not reuse the cache"
    assert others["layers"].load(RGB_CATEGORY).n_channels == 192


def test_cache_key_follows_weights_file_and_data(synthetic_root: Path, tmp_path: Path) -> None:
    base = _cache(synthetic_root, tmp_path / "c")
    state = base.extractor.model.state_dict()
    torch.save(state, tmp_path / "w.pth")
    same = _cache(synthetic_root, tmp_path / "c", weights=str(tmp_path / "w.pth"))
    assert same.key(RGB_CATEGORY) == base.key(RGB_CATEGORY), "identical weights from a file: same content hash"
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp_path / "w2.pth")
    assert _cache(synthetic_root, tmp_path / "c", weights=str(tmp_path / "w2.pth")).key(RGB_CATEGORY) != base.key(
        RGB_CATEGORY)  # fmt: skip
    root = tmp_path / "data"
    make_synthetic_category(root, RGB_CATEGORY, size=64, seed=0)
    key = _cache(root, tmp_path / "c").key(RGB_CATEGORY)
    assert key == base.key(RGB_CATEGORY), "same files at another root: same key"
    (root / RGB_CATEGORY / "train" / "good" / "009.png").unlink()
    assert _cache(root, tmp_path / "c").key(RGB_CATEGORY) != key


def test_incomplete_entry_is_recomputed(synthetic_root: Path, tmp_path: Path, counted_forward: list[int]) -> None:
    first = _cache(synthetic_root, tmp_path).load(RGB_CATEGORY)
    (first.folder / "meta.json").unlink()  # as if interrupted before the end
    n = len(counted_forward)
    again = _cache(synthetic_root, tmp_path).load(RGB_CATEGORY)
    assert not again.from_cache and len(counted_forward) > n and torch.equal(again.train, first.train)


def test_run_experiment_is_resumable(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(categories=[RGB_CATEGORY], results_root=tmp_path / "res", cache_dir=tmp_path / "cache", device="cpu",
              batch_size=8, **SIZE)  # fmt: skip
    df = X.run_experiment("sigma", synthetic_root, "none", sigmas=[0, 2, 4], **kw)
    assert df.sigma.tolist() == [0.0, 2.0, 4.0] and set(df.columns) == set(X.COLUMNS)
    assert df[list(METRICS)].notna().all().all() and (df.seed == 1024).all() and (df.d == 100).all()
    on_disk = X.load_results(tmp_path / "res", "sigma")
    assert len(on_disk) == 3 and json.loads((tmp_path / "res" / "ablations" / "sigma.json").read_text())["params"]

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(X, "sigma_category", boom)
    again = X.run_experiment("sigma", synthetic_root, "none", sigmas=[0, 2, 4], **kw)
    assert again[list(METRICS)].equals(df[list(METRICS)])
    with pytest.raises(AssertionError, match="recomputed"):
        X.run_experiment("sigma", synthetic_root, "none", sigmas=[0, 2, 4], force=True, **kw)
    with pytest.raises(AssertionError, match="recomputed"):
        X.run_experiment("sigma", synthetic_root, "none", sigmas=[0, 1], **kw)  # other parameters
    with pytest.raises(ValueError, match="unknown parameters"):
        X.run_experiment("sigma", synthetic_root, "none", d_values=[10], **kw)


@pytest.fixture(scope="module")
def ablation_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """The four notebooks executed once through papermill on synthetic data, with small parameters."""
    tmp = tmp_path_factory.mktemp("ablations")
    out = ab.run_ablations(synthetic_root, tmp / "res", "none", categories=[RGB_CATEGORY], book_dir=tmp / "book",
                           cache_dir=tmp / "cache", device="cpu",
                           extra_parameters={**SIZE, "batch_size": 8, "d_values": [10, 100, 448],
                                             "seeds": [1024, 1025], "sigmas": [0, 4]})  # fmt: skip
    return out, tmp / "res", tmp / "book"


def test_ablation_notebooks_execute(ablation_run: tuple[list[Path], Path, Path]) -> None:
    """All four notebooks run through papermill, into BOOK_DIR/ablations, without an error output."""
    out, _, book = ablation_run
    assert [p.name for p in out] == [f"{n}.ipynb" for n in ab.NOTEBOOKS]
    for path in out:
        assert path.parent == book / "ablations" and path.is_file()
        nb = json.loads(path.read_text())
        assert nb["metadata"]["papermill"]["parameters"]["categories"] == [RGB_CATEGORY]
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
        assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                   for c in nb["cells"] for o in c.get("outputs", [])), f"{path.name}: no figure"  # fmt: skip


def test_experiment_rows_and_tables(ablation_run: tuple[list[Path], Path, Path]) -> None:
    _, res, _ = ablation_run
    nf, layers, sigma, proto = (X.load_results(res, name) for name in ab.EXPERIMENTS)
    assert sorted(nf.variant.unique()) == ["PCA10", "PCA100", "Rd10", "Rd100", "all448"]
    assert len(nf) == 1 + 2 * 2 + 2 and set(nf.columns) == set(X.COLUMNS)
    assert layers.method.tolist() == ["layer", "layer", "layer", "summed", "all"]
    # all448 is the same variant in both experiments (shared distance maps, same metrics).
    a = nf[nf.method == "all"][list(METRICS)].to_numpy()
    assert np.allclose(a, layers[layers.method == "all"][list(METRICS)].to_numpy())
    assert proto.protocol.tolist() == ["paper", "no_crop"] and proto.crop.tolist() == [56, 64]
    assert proto.embeddings_key.nunique() == 2
    rd100 = nf[(nf.variant == "Rd100") & (nf.seed == 1024)][list(METRICS)].to_numpy()
    for other in (sigma[sigma.sigma == 4], proto[proto.protocol == "paper"]):
        assert np.allclose(other[list(METRICS)].to_numpy(), rd100)
    table = ab.comparison_table("n_features", nf)
    assert table.loc["Rd100 (mean of 10 seeds)", "pixel AUROC paper"] == "96.7 (S2)"
    assert table.loc["Rd100 (mean of 10 seeds)", "seeds"] == 2 and table.loc["Rd200", "pixel AUROC ours"] == "not run"
    assert ab.comparison_table("layers", layers).loc["layer1 only", "PRO paper"] == "86.8 (S2)"
    assert list(ab.sigma_table(sigma).index) == [0.0, 4.0]
    assert ab.protocol_table(proto).shape[0] == 2
    assert "computed in" in ab.timing_summary(res, "n_features")


def test_run_ablations_checks_inputs_first(synthetic_root: Path, tmp_path: Path) -> None:
    from padim_repro.backbones import WeightsError
    from padim_repro.data import DataError

    with pytest.raises(DataError, match="nope"):
        ab.run_ablations(synthetic_root, tmp_path, "none", categories=["nope"], book_dir=tmp_path)
    with pytest.raises(WeightsError):
        ab.run_ablations(synthetic_root, tmp_path, str(tmp_path / "missing.pth"), book_dir=tmp_path)
    assert not (tmp_path / "ablations").exists()
