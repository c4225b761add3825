"""padim_repro.data: layout discovery, preprocessing (paper Sec. 4.1) and clear errors on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GRAY_CATEGORY, RGB_CATEGORY, SYNTHETIC_SIZE
from PIL import Image
from torchvision import transforms as T

from padim_repro.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    MVTecDataset,
    find_samples,
    list_categories,
    load_category,
    preprocess_image,
    preprocess_mask,
)

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def _rgb_image(seed: int = 0, size: tuple[int, int] = (300, 260)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


# -- discovery ------------------------------------------------------------------------------------------------
def test_list_categories(synthetic_root: Path, tmp_path: Path) -> None:
    assert list_categories(synthetic_root) == sorted([RGB_CATEGORY, GRAY_CATEGORY])
    # folders without train/good are not categories
    (tmp_path / "notes").mkdir()
    (tmp_path / "half" / "train").mkdir(parents=True)
    (tmp_path / "real" / "train" / "good").mkdir(parents=True)
    assert list_categories(tmp_path) == ["real"]


def test_find_samples_train(synthetic_root: Path) -> None:
    train = find_samples(synthetic_root, RGB_CATEGORY, "train")
    assert len(train) == 10
    assert [s.image_path.name for s in train] == [f"{i:03d}.png" for i in range(10)]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in train)


def test_find_samples_test_labels_types_masks(synthetic_root: Path) -> None:
    test = find_samples(synthetic_root, RGB_CATEGORY, "test")
    assert [s.defect_type for s in test] == ["good"] * 4 + ["scratch"] * 3 + ["spot"] * 3
    assert [s.label for s in test] == [0] * 4 + [1] * 6
    cat = synthetic_root / RGB_CATEGORY
    for s in test:
        assert s.image_path == cat / "test" / s.defect_type / s.image_path.name
        if s.label == 0:
            assert s.mask_path is None
        else:
            assert s.mask_path == cat / "ground_truth" / s.defect_type / f"{s.image_path.stem}_mask.png"
            assert s.mask_path.is_file()


def test_find_samples_rejects_unknown_split(synthetic_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        find_samples(synthetic_root, RGB_CATEGORY, "val")


# -- dataset --------------------------------------------------------------------------------------------------
def test_dataset_shapes_dtypes_labels(synthetic_root: Path) -> None:
    train, test = load_category(synthetic_root, RGB_CATEGORY, resize=64, crop=56)
    assert len(train) == 10 and len(test) == 10
    np.testing.assert_array_equal(test.labels, [0] * 4 + [1] * 6)
    assert test.labels.dtype == np.int64
    assert test.defect_types == ["good"] * 4 + ["scratch"] * 3 + ["spot"] * 3
    for ds in (train, test):
        for i in range(len(ds)):
            x, m, label = ds[i]
            assert x.shape == (3, 56, 56) and x.dtype == torch.float32
            assert m.shape == (56, 56) and m.dtype == torch.bool
            assert label == ds.samples[i].label
            if label == 0:
                assert not m.any()
            else:
                assert m.any()


@pytest.mark.parametrize(("resize", "crop"), [(64, 56), (128, 112), (96, 80)])
def test_dataset_masks_match_ground_truth(synthetic_root: Path, resize: int, crop: int) -> None:
    _, test = load_category(synthetic_root, RGB_CATEGORY, resize=resize, crop=crop)
    for i, s in enumerate(test.samples):
        if s.mask_path is None:
            continue
        _, m, _ = test[i]
        with Image.open(s.mask_path) as im:
            by_hand = preprocess_mask(im, resize, crop)
            gt = np.asarray(im) > 127
        assert torch.equal(m, by_hand)
        if resize == SYNTHETIC_SIZE:  # no resize: the crop of the ground truth, pixel for pixel
            off = (resize - crop) // 2
            np.testing.assert_array_equal(m.numpy(), gt[off : off + crop, off : off + crop])
        elif resize == 2 * SYNTHETIC_SIZE:  # exact 2x nearest upsampling: every defect pixel stays defect
            off = (resize - crop) // 2
            rows = (np.arange(crop) + off) // 2
            np.testing.assert_array_equal(m.numpy(), gt[np.ix_(rows, rows)])
        else:  # any nearest resize keeps the defect fraction of the full image roughly unchanged
            full = preprocess_mask(Image.fromarray((gt * 255).astype(np.uint8)), resize, resize).numpy()
            assert abs(full.mean() - gt.mean()) < 0.02


def test_grayscale_images_become_three_channels(synthetic_root: Path) -> None:
    train, _ = load_category(synthetic_root, GRAY_CATEGORY, resize=64, crop=56)
    with Image.open(train.samples[0].image_path) as im:
        assert im.mode == "L"
    x, _, _ = train[0]
    assert x.shape == (3, 56, 56)
    raw = x * STD + MEAN  # undo the normalisation: the three channels are the same gray image
    torch.testing.assert_close(raw[0], raw[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(raw[0], raw[2], atol=1e-6, rtol=0)
    with Image.open(train.samples[0].image_path) as im:
        gray = torch.from_numpy(np.asarray(im)[4:60, 4:60].astype(np.float32) / 255)
    torch.testing.assert_close(raw[0], gray, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_preprocess_image_equals_torchvision_pipeline(mode: str) -> None:
    image = _rgb_image(seed=3).convert(mode)
    reference = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    expected = reference(image.convert("RGB"))
    got = preprocess_image(image, 256, 224)
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_preprocess_image_interpolation_is_used() -> None:
    image = _rgb_image(seed=4)
    bicubic = preprocess_image(image, 256, 224, "bicubic")
    nearest = preprocess_image(image, 256, 224, "nearest")
    expected = T.Compose(
        [T.Resize(256, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(224), T.ToTensor()]
    )(image)
    torch.testing.assert_close(nearest, (expected - MEAN) / STD, atol=1e-6, rtol=0)
    assert not torch.allclose(bicubic, nearest)


def test_preprocess_mask_nearest_and_binary() -> None:
    arr = np.zeros((300, 260), np.uint8)  # 260 wide, 300 high: resized to 256x295, then cropped
    arr[100:180, 50:120] = 255
    arr[200:240, 150:200] = 100  # faint: below the 127 threshold, not defect
    arr[250:260, 60:80] = 128  # just above it: defect
    mask = Image.fromarray(arr, "L")
    got = preprocess_mask(mask, 256, 224)
    expected = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(224)])(mask)
    expected = np.asarray(expected)
    assert got.dtype == torch.bool and got.shape == (224, 224)
    assert set(np.unique(expected).tolist()) == {0, 100, 128, 255}  # every level survives into the crop
    np.testing.assert_array_equal(got.numpy(), expected > 127)
    assert got.sum() == (expected >= 128).sum() > 0


# -- bad input: every error is a DataError naming the path ----------------------------------------------------
def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(root)):
        list_categories(root)
    with pytest.raises(DataError, match=str(root)):
        find_samples(root, "bottle", "train")
    with pytest.raises(DataError, match=str(root)):
        load_category(root, "bottle")


def test_missing_category_lists_present(synthetic_root: Path) -> None:
    with pytest.raises(DataError) as info:
        find_samples(synthetic_root, "bottle", "train")
    msg = str(info.value)
    assert "'bottle'" in msg and str(synthetic_root) in msg
    assert RGB_CATEGORY in msg and GRAY_CATEGORY in msg


def test_missing_category_in_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="present: none"):
        find_samples(tmp_path, "bottle", "test")


def test_no_training_images(synthetic_copy: Path) -> None:
    good = synthetic_copy / RGB_CATEGORY / "train" / "good"
    for p in good.iterdir():
        p.unlink()
    (good / "readme.txt").write_text("not an image")
    with pytest.raises(DataError, match=str(good)):
        find_samples(synthetic_copy, RGB_CATEGORY, "train")


def test_missing_test_folder(synthetic_copy: Path) -> None:
    test_dir = synthetic_copy / RGB_CATEGORY / "test"
    shutil.rmtree(test_dir)
    with pytest.raises(DataError, match=str(test_dir)):
        find_samples(synthetic_copy, RGB_CATEGORY, "test")


def test_defect_image_without_mask(synthetic_copy: Path) -> None:
    mask = synthetic_copy / RGB_CATEGORY / "ground_truth" / "spot" / "000_mask.png"
    mask.unlink()
    image = synthetic_copy / RGB_CATEGORY / "test" / "spot" / "000.png"
    with pytest.raises(DataError) as info:
        find_samples(synthetic_copy, RGB_CATEGORY, "test")
    assert str(image) in str(info.value) and str(mask) in str(info.value)


def test_mask_size_differs_from_image(synthetic_copy: Path) -> None:
    mask = synthetic_copy / RGB_CATEGORY / "ground_truth" / "scratch" / "000_mask.png"
    Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(mask)
    with pytest.raises(DataError) as info:
        find_samples(synthetic_copy, RGB_CATEGORY, "test")
    assert str(mask) in str(info.value)
    assert "24x20" in str(info.value) and "32x32" in str(info.value)


def test_mask_size_checked_again_when_loading(synthetic_copy: Path) -> None:
    """A mask replaced after the listing is still caught when the dataset reads it."""
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "test")
    ds = MVTecDataset(samples, resize=32, crop=32)
    i = next(k for k, s in enumerate(samples) if s.mask_path is not None)
    Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(samples[i].mask_path)
    with pytest.raises(DataError, match=str(samples[i].mask_path)):
        ds[i]


@pytest.mark.parametrize("split", ["train", "test"])
def test_garbage_image(synthetic_copy: Path, split: str) -> None:
    folder = "good" if split == "train" else "spot"
    bad = synthetic_copy / RGB_CATEGORY / split / folder / "000.png"
    bad.write_bytes(b"\x00this is not a png\xff" * 10)
    with pytest.raises(DataError, match=str(bad)):
        find_samples(synthetic_copy, RGB_CATEGORY, split)


def test_garbage_mask(synthetic_copy: Path) -> None:
    bad = synthetic_copy / RGB_CATEGORY / "ground_truth" / "spot" / "000_mask.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=str(bad)):
        find_samples(synthetic_copy, RGB_CATEGORY, "test")


def test_truncated_image_fails_when_loaded(synthetic_copy: Path) -> None:
    """A PNG with a valid header but truncated pixel data passes the header check and fails clearly on load."""
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "train")
    path = samples[0].image_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = MVTecDataset(samples, resize=32, crop=32)
    with pytest.raises(DataError, match=str(path)):
        ds[0]
