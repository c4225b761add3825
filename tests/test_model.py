"""padim_repro.model: the estimator end to end on synthetic data (fit, predict, save/load, determinism)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import RGB_CATEGORY, SHARED_WEIGHTS, requires_shared_weights

from padim_repro.config import PadimConfig
from padim_repro.data import load_category
from padim_repro.metrics import image_auroc, pixel_auroc
from padim_repro.model import FORMAT_VERSION, Padim, _embedding_groups


@pytest.fixture(scope="module")
def data(synthetic_root: Path) -> dict[str, object]:
    train, test = load_category(synthetic_root, RGB_CATEGORY, resize=64, crop=56)
    items = [test[i] for i in range(len(test))]
    return {
        "train": torch.stack([train[i][0] for i in range(len(train))]),
        "test": torch.stack([x for x, _, _ in items]),
        "masks": torch.stack([m for _, m, _ in items]).numpy(),
        "labels": test.labels,
    }


@pytest.fixture(scope="module")
def config() -> PadimConfig:
    return PadimConfig(resize=64, crop=56, weights="none", batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def fitted(config: PadimConfig, data: dict) -> tuple[Padim, np.ndarray, np.ndarray]:
    model = Padim(config, progress=False).fit(data["train"])
    maps, scores = model.predict(data["test"])
    return model, maps, scores


def _random_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    return path


# -- fit / predict --------------------------------------------------------------------------------------------
def test_fit_state_and_predict_shapes(fitted, data: dict) -> None:
    model, maps, scores = fitted
    n_test = len(data["test"])
    assert model.n_train_ == len(data["train"]) == 10
    assert model.grid_size_ == (14, 14)
    assert model.mean_.shape == (14 * 14, 100) and model.precision_.shape == (14 * 14, 100, 100)
    assert model.channel_indices_.shape == (100,)
    assert maps.shape == (n_test, 56, 56) and maps.dtype == np.float32
    assert scores.shape == (n_test,) and scores.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all()
    np.testing.assert_array_equal(scores, maps.reshape(n_test, -1).max(axis=1))
    assert {"backbone_s", "mahalanobis_s", "upsample_blur_s"} <= set(model.timings_)


def test_defective_images_score_higher_random_weights(fitted, data: dict) -> None:
    """Even a random-init backbone separates the synthetic defects (pasted blobs of another intensity)."""
    _, maps, scores = fitted
    labels = data["labels"]
    assert scores[labels == 1].mean() > 1.5 * scores[labels == 0].mean()
    assert image_auroc(scores, labels) >= 0.9
    assert pixel_auroc(maps, data["masks"]) >= 0.9
    # inside the defects the map is higher than outside them, in the defective images themselves
    defective = labels == 1
    inside = maps[defective][data["masks"][defective]].mean()
    outside = maps[defective][~data["masks"][defective]].mean()
    assert inside > 1.5 * outside


@requires_shared_weights
def test_imagenet_weights_separate_defects(config: PadimConfig, data: dict) -> None:
    model = Padim(dataclasses.replace(config, weights=str(SHARED_WEIGHTS)), progress=False).fit(data["train"])
    maps, scores = model.predict(data["test"])
    labels = data["labels"]
    assert scores[labels == 1].mean() > 2 * scores[labels == 0].mean()
    assert image_auroc(scores, labels) >= 0.95
    assert pixel_auroc(maps, data["masks"]) >= 0.95


def test_predict_before_fit(config: PadimConfig, data: dict) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Padim(config, progress=False).predict(data["test"])


def test_fit_without_images(config: PadimConfig) -> None:
    with pytest.raises(ValueError, match="no training images"):
        Padim(config, progress=False).fit([])


def test_fit_with_one_image(config: PadimConfig, data: dict) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Padim(config, progress=False).fit(data["train"][:1])


def test_determinism(config: PadimConfig, data: dict, fitted) -> None:
    _, maps, scores = fitted
    again = Padim(config, progress=False).fit(data["train"])
    maps2, scores2 = again.predict(data["test"])
    np.testing.assert_array_equal(maps2, maps)
    np.testing.assert_array_equal(scores2, scores)


def test_other_seed_gives_other_maps(config: PadimConfig, data: dict, fitted) -> None:
    """The determinism test above can fail: another seed gives other maps."""
    _, maps, _ = fitted
    other = Padim(dataclasses.replace(config, seed=7), progress=False).fit(data["train"])
    assert not np.allclose(other.predict(data["test"])[0], maps)


def test_tensor_and_iterable_inputs_agree(config: PadimConfig, data: dict, fitted) -> None:
    _, maps, scores = fitted
    x_train, x_test = data["train"], data["test"]
    dummy = torch.zeros(1)
    # the same batches as the tensor input (batch_size 8), as (images, masks) tuples: identical results
    model = Padim(config, progress=False).fit([(x_train[:8], dummy), (x_train[8:], dummy)])
    got_maps, got_scores = model.predict(iter([[x_test[:8], dummy], [x_test[8:], dummy]]))
    np.testing.assert_array_equal(got_maps, maps)
    np.testing.assert_array_equal(got_scores, scores)
    # other batch boundaries (plain tensors, a generator): the same up to float rounding
    model = Padim(config, progress=False).fit(b for b in x_train.split([3, 3, 4]))
    got_maps, got_scores = model.predict(list(x_test.split([1, 5, 4])))
    np.testing.assert_allclose(got_maps, maps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_scores, scores, rtol=1e-4)


@pytest.mark.parametrize(("sizes", "groups"), [([8] * 5, [32, 8]), ([40, 1], [40, 1]), ([3, 3], [6]), ([], []),
                                               ([30, 4, 2], [30, 6]), ([1, 40, 8], [1, 40, 8])])  # fmt: skip
def test_scoring_groups_join_consecutive_batches(sizes: list[int], groups: list[int]) -> None:
    """predict scores the embeddings of consecutive batches in groups of up to SCORE_GROUP images (a larger batch
    alone), in order, none lost; each batch is embedded once, into the group buffer when it fits."""
    batches = [torch.full((n, 3), float(i)) for i, n in enumerate(sizes)]
    calls: list[bool] = []

    def embed(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(out is not None)
        emb = torch.arange(2 * 4 * 3, dtype=torch.float32).view(1, 2, 4, 3) + 100 * x[:, :1, None, None]  # (B, h, w, d)
        if out is None:
            return emb.permute(0, 3, 1, 2).clone()
        out.copy_(emb)
        return out.permute(0, 3, 1, 2)

    got = [g.clone() for g in _embedding_groups(((x, embed) for x in batches), 32)]
    assert [len(g) for g in got] == groups and len(calls) == len(sizes)
    want = [embed(x) for x in batches]
    empty = torch.empty(0, 3, 2, 4)
    assert torch.equal(torch.cat(got) if got else empty, torch.cat(want) if want else empty)


# -- persistence ----------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path, fitted, data: dict) -> None:
    model, maps, scores = fitted
    path = model.save(tmp_path / "sub" / "model.pt")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = Padim.load(path, progress=False)
    assert loaded.config == model.config
    assert loaded.n_train_ == model.n_train_ and loaded.grid_size_ == model.grid_size_
    assert loaded.weights_id_ == model.weights_id_
    assert torch.equal(loaded.mean_, model.mean_) and torch.equal(loaded.precision_, model.precision_)
    maps2, scores2 = loaded.predict(data["test"])
    np.testing.assert_array_equal(maps2, maps)
    np.testing.assert_array_equal(scores2, scores)


def test_load_other_format_version(tmp_path: Path, fitted) -> None:
    model, _, _ = fitted
    path = model.save(tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    assert state["format_version"] == FORMAT_VERSION
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        Padim.load(path)
    msg = str(info.value)
    assert f"format version {FORMAT_VERSION + 1}" in msg and str(FORMAT_VERSION) in msg and str(path) in msg


def test_load_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read model file"):
        Padim.load(path)
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="format version None"):
        Padim.load(path)


def test_load_with_changed_weights(tmp_path: Path, config: PadimConfig, data: dict) -> None:
    ckpt = _random_checkpoint(tmp_path / "backbone.pth", seed=1)
    model = Padim(dataclasses.replace(config, weights=str(ckpt)), progress=False).fit(data["train"][:4])
    path = model.save(tmp_path / "model.pt")
    Padim.load(path)  # unchanged file: loads
    _random_checkpoint(ckpt, seed=2)  # same path, other content
    with pytest.raises(ValueError) as info:
        Padim.load(path)
    assert model.weights_id_ in str(info.value)


def test_load_with_device_override(tmp_path: Path, fitted, data: dict) -> None:
    model, maps, _ = fitted
    path = model.save(tmp_path / "model.pt")
    loaded = Padim.load(path, device="cpu", progress=False)
    assert loaded.device == torch.device("cpu") and loaded.config.device == "cpu"
    np.testing.assert_array_equal(loaded.predict(data["test"])[0], maps)

