"""The ablations (padim_repro.study.ablations): the embeddings streamed into the method's accumulator, the sub-block /
projection routes against direct fits and brute force, the summed per-layer variant, keyed resumable experiments and
the notebooks, on small synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import RGB_CATEGORY
from test_display import assert_readable

from padim_repro.config import PadimConfig
from padim_repro.data import MVTecDataset, batches, find_samples
from padim_repro.features import FeatureExtractor
from padim_repro.gaussian import GaussianAccumulator
from padim_repro.metrics import PAPER_METRICS as METRICS
from padim_repro.model import Padim
from padim_repro.scoring import mahalanobis
from padim_repro.study import ablations as ab
from padim_repro.study import display as D_
from padim_repro.study.ablations import differences as D
from padim_repro.study.ablations import experiments as X
from padim_repro.study.ablations import tables as T
from padim_repro.study.ablations import variants as V
from padim_repro.study.ablations.embeddings import PositionGaussians
from padim_repro.study.ablations.work import CategoryWork
from padim_repro.study.synthetic import make_synthetic_category

SIZE = dict(resize=64, crop=56)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _embedder(root: Path, **kw) -> ab.CategoryEmbedder:
    return ab.CategoryEmbedder(root, kw.pop("weights", "none"), device="cpu", batch_size=8, **{**SIZE, **kw})


@pytest.fixture(scope="module")
def emb(synthetic_root: Path) -> ab.Embeddings:
    return _embedder(synthetic_root).embed(RGB_CATEGORY, progress=False)


def _images(root: Path, split: str) -> torch.Tensor:
    ds = MVTecDataset(find_samples(root, RGB_CATEGORY, split), **SIZE)
    return torch.cat([x for x, _ in batches(ds, 8)])


@pytest.fixture(scope="module")
def train_embeddings(synthetic_root: Path) -> torch.Tensor:
    """All 448 channels of the training images, from the method's extractor (the brute-force references' input)."""
    return FeatureExtractor("resnet18", ("layer1", "layer2", "layer3"), "none", None, 1024)(
        _images(synthetic_root, "train"))


def test_embeddings_layout(emb: ab.Embeddings) -> None:
    g = emb.gaussians
    assert g.mean.shape == (196, 448) and g.cov.shape == (196, 448, 448) and g.cov.dtype == torch.float32
    assert emb.test.shape == (10, 448, 14, 14) and emb.n_train == 10
    assert emb.layer_channels == (64, 128, 256) and emb.masks.shape == (10, 56, 56)
    assert emb.labels.tolist() == [0] * 4 + [1] * 6 and emb.layer_block("layer2").tolist() == list(range(64, 192))


def test_gaussians_match_numpy(emb: ab.Embeddings, train_embeddings: torch.Tensor) -> None:
    x = train_embeddings.double().reshape(10, 448, -1).numpy()
    for p in (0, 77, 195):
        assert np.allclose(emb.gaussians.mean[p].numpy(), x[:, :, p].mean(0))
        ref = np.cov(x[:, :, p], rowvar=False)
        assert np.abs(emb.gaussians.cov[p].double().numpy() - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("d, seed", [(100, 1024), (37, 1024)])
def test_subblock_equals_direct_padim_fit(synthetic_root: Path, emb: ab.Embeddings, d: int, seed: int) -> None:
    """A random subset as a sub-block of the full covariance == Padim fitted on that subset (streaming, float32)."""
    model = Padim(PadimConfig(d=d, seed=seed, weights="none", batch_size=8, device="cpu", **SIZE), progress=False)
    model.fit(_images(synthetic_root, "train"))
    idx = model.channel_indices_
    assert torch.allclose(model.extractor(_images(synthetic_root, "test")), emb.test[:, idx], atol=1e-5)
    ref = mahalanobis(emb.test[:, idx], model.mean_, model.precision_)
    ours = V.variant_distances(emb.gaussians, emb.test, idx)
    assert ours.shape == ref.shape == (10, 14, 14)
    assert _rel(ours, ref) < 1e-4


def test_subset_gaussians_equal_the_subblock(synthetic_root: Path, emb: ab.Embeddings) -> None:
    """Embeddings streamed over a layer's channels only (as the sigma and protocol experiments do) give that
    layer's diagonal block of the full covariance."""
    block = emb.layer_block("layer2")
    sub = _embedder(synthetic_root).embed(RGB_CATEGORY, block, progress=False)
    assert sub.test.shape[1] == block.numel() and torch.equal(sub.gaussians.channels, block)
    ref = V.variant_distances(emb.gaussians, emb.test, block)
    assert _rel(V.variant_distances(sub.gaussians, sub.test), ref) < 1e-4


def test_pca_matches_sklearn(emb: ab.Embeddings, train_embeddings: torch.Tensor) -> None:
    """PCA of the pooled training embeddings (sklearn), Gaussians fitted on the projections == W^T Sigma W route."""
    from sklearn.decomposition import PCA

    d = 20
    pooled = train_embeddings.double().permute(0, 2, 3, 1).reshape(-1, 448).numpy()  # N*h*w vectors
    pca = PCA(n_components=d, svd_solver="full").fit(pooled)
    w_ref = torch.from_numpy(pca.components_.T.copy())  # (448, d)
    w_ours = V.principal_axes(emb.gaussians)[:, :d]
    assert torch.allclose((w_ours.T @ w_ref).abs().diagonal(), torch.ones(d, dtype=torch.float64), atol=1e-6)
    acc = GaussianAccumulator(d, 14 * 14)
    acc.update(torch.einsum("nchw,ck->nkhw", train_embeddings.double(), w_ref).float())
    mean, precision = acc.finalize(0.01)
    ref = mahalanobis(torch.einsum("nchw,ck->nkhw", emb.test.double(), w_ref).float(), mean, precision)
    ours = V.variant_distances(emb.gaussians, emb.test, projection=w_ours)
    assert _rel(ours, ref) < 1e-4  # Mahalanobis distances do not depend on the axes' signs


@pytest.mark.parametrize("largest", [True, False])
def test_pooled_pca_as_a_sub_block_of_the_rotated_covariance(emb: ab.Embeddings, largest: bool) -> None:
    """CategoryWork's pooled PCA (a sub-block of the covariance rotated once into the principal axes) == projecting
    the covariance on the d axes directly (W^T Sigma W)."""
    d = 20
    axes = V.principal_axes(emb.gaussians)
    w = axes[:, :d] if largest else axes[:, -d:]
    direct = V.variant_distances(emb.gaussians, emb.test, projection=w)
    assert _rel(CategoryWork(emb).pooled_pca(d, largest), direct) < 1e-4


@pytest.mark.parametrize("largest", [True, False])
def test_position_pca_equals_brute_force(largest: bool) -> None:
    """One PCA per position (largest or smallest variance), on full-rank synthetic Gaussians: project each
    position's training and test vectors on its own eigenvectors, fit the Gaussian there in float64, compare."""
    g_ = torch.Generator().manual_seed(0)
    n, d, p, k = 300, 16, 6, 5
    scale = torch.linspace(0.2, 3.0, d)  # distinct variances: well-defined eigenvectors
    mix = torch.linalg.qr(torch.randn(p, d, d, generator=g_))[0]
    x = torch.einsum("pij,npj->npi", mix, torch.randn(n, p, d, generator=g_) * scale).permute(0, 2, 1)  # (n, d, p)
    t = torch.randn(7, d, p, generator=g_)
    acc = GaussianAccumulator(d, p)
    acc.update(x.float())
    mean, cov = acc.covariance()
    emb = ab.Embeddings("toy", "key", PositionGaussians(mean, cov, n, torch.arange(d)), t.float().reshape(7, d, p, 1),
                        np.zeros((7, 4, 4), bool), np.zeros(7, int), ["good"] * 7, ("layer1",), (d,), 4, 4, "w", 0.0)
    ours = CategoryWork(emb).position_pca(k, largest)
    for q in range(p):
        xq = x[:, :, q].double()
        vecs = torch.linalg.eigh(torch.cov(xq.T))[1]
        w = vecs[:, -k:] if largest else vecs[:, :k]
        z = xq @ w
        prec = torch.linalg.inv(torch.cov(z.T) + 0.01 * torch.eye(k, dtype=torch.float64))
        delta = t[:, :, q].double() @ w - z.mean(0)
        ref = torch.einsum("mi,ij,mj->m", delta, prec, delta).sqrt()
        assert _rel(ours.reshape(7, p)[:, q], ref) < 1e-4, q  # float32 eigenvectors


def test_full_rotation_is_all_channels(synthetic_root: Path) -> None:
    """Why d = 448 is computed once: PCA to all dimensions (a rotation) gives the all-channel distances."""
    sub = _embedder(synthetic_root).embed(RGB_CATEGORY, torch.arange(192), progress=False)  # layer1 + layer2
    rotated = V.variant_distances(sub.gaussians, sub.test, projection=V.principal_axes(sub.gaussians))
    assert _rel(rotated, V.variant_distances(sub.gaussians, sub.test)) < 1e-3


def test_summed_layers_equal_three_separate_fits(synthetic_root: Path, emb: ab.Embeddings) -> None:
    """Layer variants on the layer1 grid == three Padim fits, each on its layer's own grid, distances
    nearest-upsampled to the layer1 grid and summed (what ``layers_category`` adds up)."""
    train, test = _images(synthetic_root, "train"), _images(synthetic_root, "test")
    for layer in ("layer1", "layer2", "layer3"):
        ours = V.variant_distances(emb.gaussians, emb.test, emb.layer_block(layer))
        model = Padim(PadimConfig(layers=(layer,), d=0, weights="none", batch_size=8, device="cpu", **SIZE),
                      progress=False).fit(train)  # fmt: skip
        own = model.extractor(test)
        dist = mahalanobis(own, model.mean_, model.precision_)  # on the layer's own grid
        assert own.shape[-1] == {"layer1": 14, "layer2": 7, "layer3": 4}[layer]
        assert _rel(ours, F.interpolate(dist[:, None], size=(14, 14), mode="nearest")[:, 0]) < 1e-4


def test_embedder_key_follows_weights_and_data(synthetic_root: Path, tmp_path: Path) -> None:
    base = _embedder(synthetic_root)
    state = base.extractor.model.state_dict()
    torch.save(state, tmp_path / "w.pth")
    assert _embedder(synthetic_root, weights=str(tmp_path / "w.pth")).key(RGB_CATEGORY) == base.key(RGB_CATEGORY)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "w2.pth")
    assert _embedder(synthetic_root, weights=str(tmp_path / "w2.pth")).key(RGB_CATEGORY) != base.key(RGB_CATEGORY)
    for other in (dict(crop=64), dict(layers=("layer1", "layer2")), dict(interpolation="bilinear")):
        assert _embedder(synthetic_root, **other).key(RGB_CATEGORY) != base.key(RGB_CATEGORY), other
    root = tmp_path / "data"
    make_synthetic_category(root, RGB_CATEGORY, size=64, seed=0)
    assert _embedder(root).key(RGB_CATEGORY) == base.key(RGB_CATEGORY), "same files at another root: same key"
    (root / RGB_CATEGORY / "train" / "good" / "009.png").unlink()
    assert _embedder(root).key(RGB_CATEGORY) != base.key(RGB_CATEGORY)


def test_run_experiment_is_resumable(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(categories=[RGB_CATEGORY], results_root=tmp_path / "res", device="cpu", batch_size=8, **SIZE)
    df = X.run_experiment("sigma", synthetic_root, "none", sigmas=[0, 2, 4], **kw)
    assert df.sigma.tolist() == [0.0, 2.0, 4.0] and set(df.columns) == set(X.COLUMNS)
    assert df[list(METRICS)].notna().all().all() and (df.seed == 1024).all() and (df.d == 100).all()
    on_disk = X.load_results(tmp_path / "res", "sigma")
    manifest = json.loads((tmp_path / "res" / "ablations" / "sigma.json").read_text())
    assert len(on_disk) == 3 and manifest["params"]["sigmas"] == [0.0, 2.0, 4.0]
    assert manifest["groups"][RGB_CATEGORY]["n_rows"] == 3 and manifest["groups"][RGB_CATEGORY]["data"]["n_files"] == 26
    assert X.store(tmp_path / "res", "sigma").arrays(RGB_CATEGORY)["pro"].shape == (3, 1000)

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


def test_rows_are_trusted_only_when_intact(synthetic_root: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows edited after they were written, or without their manifest entry, or from other data, are recomputed."""
    kw = dict(categories=[RGB_CATEGORY], results_root=tmp_path / "res", device="cpu", batch_size=8, **SIZE)
    X.run_experiment("sigma", synthetic_root, "none", sigmas=[4], **kw)
    csv, manifest = tmp_path / "res" / "ablations" / "sigma.csv", tmp_path / "res" / "ablations" / "sigma.json"
    calls = []
    real = X.sigma_category
    monkeypatch.setattr(X, "sigma_category", lambda *a, **k: calls.append(1) or real(*a, **k))
    X.run_experiment("sigma", synthetic_root, "none", sigmas=[4], **kw)
    assert calls == []  # intact: read back
    csv.write_text(csv.read_text().replace("0.", "0.1", 1))  # a hand edit (or a half-written file)
    X.run_experiment("sigma", synthetic_root, "none", sigmas=[4], **kw)
    assert calls == [1]
    arrays = tmp_path / "res" / "ablations" / "sigma_arrays" / f"{RGB_CATEGORY}.npz"
    arrays.write_bytes(arrays.read_bytes()[:-8] + b"\0" * 8)  # the bootstrap resamples edited: the group too
    assert X.store(tmp_path / "res", "sigma").arrays(RGB_CATEGORY) == {}
    X.run_experiment("sigma", synthetic_root, "none", sigmas=[4], **kw)
    assert calls == [1, 1]
    data = json.loads(manifest.read_text())
    data["groups"].pop(RGB_CATEGORY)  # as if interrupted between the CSV and the manifest
    manifest.write_text(json.dumps(data))
    X.run_experiment("sigma", synthetic_root, "none", sigmas=[4], **kw)
    assert calls == [1, 1, 1]
    root = tmp_path / "data"
    make_synthetic_category(root, RGB_CATEGORY, size=64, seed=0)
    image = root / RGB_CATEGORY / "train" / "good" / "000.png"
    image.write_bytes((synthetic_root / RGB_CATEGORY / "train" / "good" / "001.png").read_bytes())
    X.run_experiment("sigma", root, "none", sigmas=[4], **kw)
    assert calls == [1, 1, 1, 1]  # one file's content changed: other data


@pytest.fixture(scope="module")
def ablation_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """The notebooks executed once through papermill on synthetic data, with small parameters."""
    tmp = tmp_path_factory.mktemp("ablations")
    out = ab.run_ablations(synthetic_root, tmp / "res", "none", categories=[RGB_CATEGORY], book_dir=tmp / "book",
                           device="cpu",
                           extra_parameters={**SIZE, "batch_size": 8, "d_values": [10, 100, 448],
                                             "seeds": [1024, 1025], "other_seeds": [1026], "sigmas": [0, 4],
                                             "d": 20})  # fmt: skip
    return out, tmp / "res", tmp / "book"


def test_ablation_notebooks_execute(ablation_run: tuple[list[Path], Path, Path]) -> None:
    """Every notebook runs through papermill, into BOOK_DIR/ablations, without an error output."""
    out, _, book = ablation_run
    assert [p.name for p in out] == [f"{n}.ipynb" for n in ab.NOTEBOOKS]
    for path in out:
        assert path.parent == book / "ablations" and path.is_file()
        nb = json.loads(path.read_text())
        assert nb["metadata"]["papermill"]["parameters"]["categories"] == [RGB_CATEGORY]
        assert_readable(path)  # no error, no NaN, no scientific notation
        assert path.stem == "ablation_pca" or any(
            o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
            for c in nb["cells"] for o in c.get("outputs", [])), f"{path.name}: no figure"  # fmt: skip


def test_experiment_rows_and_tables(ablation_run: tuple[list[Path], Path, Path]) -> None:
    _, res, _ = ablation_run
    nf, pca, layers, sigma, proto = (X.load_results(res, name) for name in X.EXPERIMENTS)
    assert sorted(nf.variant.unique()) == ["PCA10", "PCA100", "Rd10", "Rd100", "all448"]
    # 10 seeds' worth (here 2) at the paper's d = 100, other_seeds (here 1) at the other d.
    assert len(nf) == 1 + 2 + 1 + 2 and set(nf.columns) == set(X.COLUMNS)
    assert sorted(nf[nf.variant == "Rd100"].seed) == [1024, 1025] and nf[nf.variant == "Rd10"].seed.tolist() == [1026]
    assert layers.method.tolist() == ["layer", "layer", "layer", "summed", "all"]
    # all448 is the same variant in both experiments (same Gaussians, same metrics).
    a = nf[nf.method == "all"][list(METRICS)].to_numpy()
    assert np.allclose(a, layers[layers.method == "all"][list(METRICS)].to_numpy())
    assert proto.protocol.tolist() == ["paper", "no_crop", "bicubic_maps"] and proto.crop.tolist() == [56, 64, 56]
    assert proto.embeddings_key.nunique() == 2
    bicubic = proto.set_index("protocol").loc["bicubic_maps", list(METRICS)].to_numpy(float)
    assert not np.allclose(bicubic, proto.set_index("protocol").loc["paper", list(METRICS)].to_numpy(float))
    # Every variant keeps its paired bootstrap resamples; a difference reads them (paired) and the seed spread.
    boot = X.store(res, "n_features").arrays(RGB_CATEGORY)
    assert boot["pixel_auroc"].shape == (len(nf), 1000)
    d = D.variant_difference(res, "n_features", {"method": "random", "d": 100}, {"method": "pca", "d": 100})
    assert d["pro"].paired and d["pro"].seed_sd is not None and d["pro"].low <= d["pro"].value <= d["pro"].high
    expected = 100 * (nf[nf.variant == "Rd100"].pro.mean() - nf[nf.variant == "PCA100"].pro.mean())
    assert d["pro"].value == pytest.approx(expected)
    rd100 = nf[(nf.variant == "Rd100") & (nf.seed == 1024)][list(METRICS)].to_numpy()
    for other in (sigma[sigma.sigma == 4], proto[proto.protocol == "paper"]):
        assert np.allclose(other[list(METRICS)].to_numpy(), rd100)
    shown = ab.comparison_table("n_features", nf).data.set_index(("variant", ""))
    assert shown.loc["Rd100 (mean of 10 seeds)", ("pixel AUROC", "paper")] == "96.7 (S2)"
    assert shown.loc["Rd100 (mean of 10 seeds)", ("seeds", "")] == "2"
    assert shown.loc["Rd200", ("pixel AUROC", "ours")] == "—" and shown.loc["all 448", ("seeds", "")] == "—"
    frame = T.comparison_frame("n_features", nf).set_index("variant").loc["Rd100 (mean of 10 seeds)"]
    rd100 = nf[nf.variant == "Rd100"].groupby("seed").pixel_auroc.mean() * 100
    assert frame["pixel_auroc ours"] == pytest.approx(rd100.mean())
    assert frame["pixel_auroc std"] == pytest.approx(rd100.std(ddof=1))
    ours, std = frame["pixel_auroc ours"], frame["pixel_auroc std"]
    delta = ours - 96.7
    assert shown.loc["Rd100 (mean of 10 seeds)", ("pixel AUROC", "ours")] == f"{ours:.1f} ± {std:.1f}"
    assert shown.loc["Rd100 (mean of 10 seeds)", ("pixel AUROC", "Δ paper")] == ("+" if delta > 0 else "−") + (
        f"{abs(delta):.1f}")
    summary = ab.n_features_summary(nf).data.set_index(["method", "d"])
    assert summary.loc[("random", "100"), "seeds"] == "2" and summary.loc[("random", "10"), "seeds"] == "1"
    per_category = T.n_features_per_category(nf).tables[1].data  # pixel AUROC: random, PCA rows per category
    assert per_category[("method", "")].tolist() == ["random", "PCA", "random", "PCA"]
    assert per_category[("d", "448")].nunique() == 1  # all channels: the same for both methods
    layers_shown = ab.comparison_table("layers", layers).data.set_index(("variant", ""))
    assert layers_shown.loc["layer1 only", ("PRO", "paper")] == "86.8 (S2)"
    assert ab.sigma_table(sigma).tables[0].data[("sigma", "")].tolist() == ["0", "4"]
    assert ab.protocol_table(proto).data.shape[0] == 3
    assert "its variants took" in ab.timing_summary(res, "n_features")
    assert pca.method.tolist() == ["pca_pooled_top", "pca_pooled_bottom", "pca_position_top", "pca_position_bottom",
                                   "random"] and (pca.d == 20).all()  # fmt: skip
    assert ab.pca_table(pca).tables[0].data[("pixel AUROC", "paper")].eq("—").all()  # the paper's rows are d = 100
    pca_shown = ab.pca_table(pca.assign(d=100)).tables[0].data.set_index(("variant", ""))
    assert pca_shown.loc["pooled, largest variance", ("pixel AUROC", "paper")] == "93.5 (S1)"
    assert pca_shown.loc["pooled, smallest variance", ("pixel AUROC", "paper")] == "—"
    # Given the results, every Δ of the tables carries its 95 % interval: that of the difference it shows (A − B),
    # or of our value (A alone) shifted by the published value it is compared with.
    own = D.variant_difference(res, "n_features", {"method": "random", "d": 100})
    assert own["pro"].value == pytest.approx(100 * nf[nf.variant == "Rd100"].pro.mean())
    assert own["pro"].paired and own["pro"].seed_sd is not None and own["pro"].low < own["pro"].value < own["pro"].high
    cell = ab.comparison_table("n_features", nf, res).data.set_index(("variant", "")).loc[
        "Rd100 (mean of 10 seeds)", ("PRO", "Δ paper")]
    shift = frame["pro ours"] - 90.5
    assert cell == f"{D_.signed(shift)} [{D_.signed(shift - own['pro'].value + own['pro'].low)},\u00a0" \
                   f"{D_.signed(shift - own['pro'].value + own['pro'].high)}]"
    sigma0 = D.variant_difference(res, "sigma", {"sigma": 0.0}, {"sigma": 4.0})["pixel_auroc"]
    sigma_rows = ab.sigma_table(sigma, res).tables[0].data.set_index(("sigma", ""))[("pixel AUROC", "Δ to σ = 4")]
    assert sigma_rows["0"] == f"{D_.signed(sigma0.value)} [{D_.signed(sigma0.low)},\u00a0{D_.signed(sigma0.high)}]"
    assert sigma_rows["4"] == "±0.0"  # the reference itself: no interval
    reach = D.delta_reach(res, "protocol", {"category": RGB_CATEGORY, "protocol": "no_crop"})
    assert set(reach) == set(METRICS) and all(lo >= 0 and hi >= 0 for lo, hi in reach.values())
    assert ab.protocol_table(proto, res).data.shape[0] == 3  # no reproduction values a synthetic category
    assert all("[" in c for c in ab.pca_table(pca.assign(d=100), res).tables[0].data[("PRO", "Δ paper")] if c != "—")
    assert "[" not in "".join(ab.comparison_table("n_features", nf).data[("PRO", "Δ paper")])  # no results: none


def test_run_ablations_checks_inputs_first(synthetic_root: Path, tmp_path: Path) -> None:
    from padim_repro.backbones import WeightsError
    from padim_repro.data import DataError

    with pytest.raises(DataError, match="nope"):
        ab.run_ablations(synthetic_root, tmp_path, "none", categories=["nope"], book_dir=tmp_path)
    with pytest.raises(WeightsError):
        ab.run_ablations(synthetic_root, tmp_path, str(tmp_path / "missing.pth"), book_dir=tmp_path)
    assert not (tmp_path / "ablations").exists()


@pytest.mark.parametrize("experiment", ["n_features", "pca", "sigma"])  # the notebooks with parameters of their own
def test_notebook_defaults_are_the_experiment_defaults(experiment: str) -> None:
    """A notebook's parameters are the experiment's defaults, so `make ablations` computes each row once: the pass
    over every experiment and the notebook that reads the rows back share one key (a notebook d = 300 that the
    defaults lacked once computed Table II twice)."""
    nb = json.loads((Path(__file__).parents[2] / "notebooks" / f"ablation_{experiment}.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values: dict = {}
    exec("".join(cell["source"]), {}, values)
    shared = set(values) & set(X.EXPERIMENT_DEFAULTS[experiment])
    assert shared
    for name in shared:
        assert list(np.atleast_1d(values[name])) == list(np.atleast_1d(X.EXPERIMENT_DEFAULTS[experiment][name])), name
