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
from torchvision.transforms import functional as TF

from padim_repro.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    MVTecDataset,
    binarize_mask,
    display_image,
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
    arr[200:240, 150:200] = 100  # faint: a defect under the non-zero rule, not under an explicit threshold 127
    arr[250:260, 60:80] = 128  # just above 127: a defect either way
    mask = Image.fromarray(arr, "L")
    expected = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(224)])(mask)
    expected = np.asarray(expected)
    assert set(np.unique(expected).tolist()) == {0, 100, 128, 255}  # every level survives into the crop
    got = preprocess_mask(mask, 256, 224)
    assert got.dtype == torch.bool and got.shape == (224, 224)
    np.testing.assert_array_equal(got.numpy(), expected > 0)  # default: any non-zero pixel is a defect
    soft = preprocess_mask(mask, 256, 224, threshold=127)
    np.testing.assert_array_equal(soft.numpy(), expected > 127)
    assert soft.sum() == (expected >= 128).sum() > 0 and got.sum() > soft.sum()


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


# -- image modes: more than 8 bits per channel is refused, 8-bit modes are converted to RGB ----------------------
#: A mode of more than 8 bits, and a file format that stores it (PNG has no 32-bit modes).
WIDE_MODES = {"I;16": (".png", np.uint16), "I": (".tif", np.int32), "F": (".tif", np.float32)}


def _write_wide_image(png: Path, mode: str) -> Path:
    """Replace the 8-bit image ``png`` by the same picture in ``mode`` (16/32-bit integers: values x 257; float:
    values / 255), a real file of that mode; returns its path (the suffix may change, the stem does not)."""
    suffix, dtype = WIDE_MODES[mode]
    with Image.open(png) as im:
        gray = np.asarray(im.convert("L")).astype(np.float64)
    png.unlink()
    path = png.with_suffix(suffix)
    Image.fromarray((gray / 255 if dtype == np.float32 else gray * 257).astype(dtype)).save(path)
    with Image.open(path) as im:
        assert im.mode == mode
    return path


def _assert_one_line_naming(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("mode", list(WIDE_MODES))
@pytest.mark.parametrize("split", ["train", "test"])
def test_wide_image_refused_when_listed(synthetic_copy: Path, split: str, mode: str) -> None:
    """A 16-bit PNG (or 32-bit TIFF) would become all white through convert("RGB"): refused before any computation,
    naming the file and its mode."""
    folder = "good" if split == "train" else "spot"
    path = _write_wide_image(synthetic_copy / RGB_CATEGORY / split / folder / "000.png", mode)
    with pytest.raises(DataError) as info:
        find_samples(synthetic_copy, RGB_CATEGORY, split)
    _assert_one_line_naming(info, str(path), repr(mode), "8-bit")


def test_wide_image_swapped_after_listing_refused_when_loaded(synthetic_copy: Path) -> None:
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "train")
    path = samples[0].image_path
    with Image.open(path) as im:
        wide = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    wide.save(path)  # same name, now 16-bit
    with Image.open(path) as im:
        assert im.mode == "I;16"
        assert np.asarray(im.convert("RGB")).min() == 255  # what PIL would silently have given: all white
    with pytest.raises(DataError) as info:
        MVTecDataset(samples, resize=32, crop=32)[0]
    _assert_one_line_naming(info, str(path), "'I;16'", "8-bit")
    with pytest.raises(DataError, match="I;16"):
        display_image(path, 32, 32)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I", "F"])
def test_preprocess_image_refuses_wide_modes(mode: str) -> None:
    with pytest.raises(DataError, match=f"mode '{mode}'"):
        preprocess_image(Image.new(mode, (40, 30)), 32, 32)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK"])
def test_8bit_image_modes_accepted_as_their_rgb_conversion(synthetic_copy: Path, mode: str) -> None:
    """Palette, grayscale, alpha and CMYK files are accepted and give exactly the tensor of their RGB conversion."""
    png = synthetic_copy / RGB_CATEGORY / "train" / "good" / "000.png"
    with Image.open(png) as im:
        image = im.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else im.convert(mode)
    path = png
    if mode == "CMYK":  # PNG cannot store CMYK
        png.unlink()
        path = png.with_suffix(".tiff")
    image.save(path)
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "train")
    i = next(k for k, s in enumerate(samples) if s.image_path == path)
    x, _, _ = MVTecDataset(samples, resize=32, crop=28)[i]
    with Image.open(path) as im:
        assert im.mode == mode
        expected = preprocess_image(im.convert("RGB"), 32, 28)
    assert torch.equal(x, expected)


# -- masks: any non-zero pixel is a defect ------------------------------------------------------------------------
def _old_rule(mask: Image.Image, resize: int, crop: int) -> np.ndarray:
    """The former mask preprocessing: 8-bit grayscale, nearest resize, center crop, pixels above 127."""
    resized = TF.resize(mask.convert("L"), resize, interpolation=T.InterpolationMode.NEAREST)
    return np.asarray(TF.center_crop(resized, crop)) > 127


def _defect_masks(root: Path) -> list[Path]:
    return sorted((root / RGB_CATEGORY / "ground_truth").rglob("*_mask.png"))


@pytest.mark.parametrize(("resize", "crop"), [(64, 56), (96, 80), (128, 112), (50, 40)])
def test_0_255_masks_give_the_same_result_as_before(synthetic_root: Path, resize: int, crop: int) -> None:
    """The rule change leaves MVTec AD's standard 0/255 masks exactly as they were."""
    _, test = load_category(synthetic_root, RGB_CATEGORY, resize=resize, crop=crop)
    checked = 0
    for i, s in enumerate(test.samples):
        if s.mask_path is None:
            continue
        with Image.open(s.mask_path) as im:
            assert im.mode == "L" and set(np.unique(np.asarray(im)).tolist()) == {0, 255}
            np.testing.assert_array_equal(test[i][1].numpy(), _old_rule(im, resize, crop))
        checked += 1
    assert checked == 6
    arr = np.where(np.random.default_rng(0).random((300, 260)) < 0.3, 255, 0).astype(np.uint8)
    mask = Image.fromarray(arr, "L")
    np.testing.assert_array_equal(preprocess_mask(mask, 256, 224).numpy(), _old_rule(mask, 256, 224))


@pytest.mark.parametrize(("resize", "crop"), [(64, 56), (96, 80), (128, 112)])
def test_zero_one_masks_equal_0_255_masks(synthetic_root: Path, resize: int, crop: int) -> None:
    """A 0/1 mask marks the same defect pixels as its 0/255 version (with "> 127" it had none: NaN pixel AUROC)."""
    for path in _defect_masks(synthetic_root):
        with Image.open(path) as im:
            standard = preprocess_mask(im, resize, crop)
            zero_one = Image.fromarray((np.asarray(im) > 0).astype(np.uint8), "L")
        got = preprocess_mask(zero_one, resize, crop)
        assert got.any() and torch.equal(got, standard)


@pytest.mark.parametrize("encoding", ["0/1", "16-bit 0/1", "16-bit 0/65535"])
def test_one_odd_mask_among_standard_ones_keeps_its_defect(synthetic_copy: Path, encoding: str) -> None:
    """A 0/1 (or 16-bit) mask file among 0/255 ones: its defect pixels are kept, identical to the 0/255 version."""
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "test")
    ds = MVTecDataset(samples, resize=32, crop=28)
    i = next(k for k, s in enumerate(samples) if s.mask_path is not None)
    before = ds[i][1]
    assert before.any()
    with Image.open(samples[i].mask_path) as im:
        defect = np.asarray(im) > 0
    values = {"0/1": defect.astype(np.uint8), "16-bit 0/1": defect.astype(np.uint16),
              "16-bit 0/65535": defect.astype(np.uint16) * 65535}[encoding]  # fmt: skip
    Image.fromarray(values).save(samples[i].mask_path)
    with Image.open(samples[i].mask_path) as im:
        assert im.mode == ("L" if encoding == "0/1" else "I;16")
    assert torch.equal(ds[i][1], before)


def test_16bit_and_float_masks_keep_their_values(tmp_path: Path) -> None:
    """16-bit masks are thresholded on their own values: nothing is clipped to 8 bits (1 stays a defect, and an
    explicit threshold of 500 keeps the pixels of value 1000, which 8-bit clipping would turn into 255)."""
    arr = np.zeros((40, 40), np.uint16)
    arr[2:10, 3:30] = 1
    arr[12:25, 5:35] = 1000
    arr[30:38, 1:9] = 65535
    Image.fromarray(arr).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as mask:
        assert mask.mode == "I;16"
        np.testing.assert_array_equal(preprocess_mask(mask, 40, 40).numpy(), arr > 0)
        np.testing.assert_array_equal(preprocess_mask(mask, 40, 40, threshold=500).numpy(), arr > 500)
        up = preprocess_mask(mask, 80, 80)  # exact 2x nearest upsampling
        np.testing.assert_array_equal(up.numpy(), np.kron(arr > 0, np.ones((2, 2), bool)))
    floats = Image.fromarray(arr.astype(np.float32) / 2000)  # 0.0005, 0.5, 32.8
    assert floats.mode == "F"
    np.testing.assert_array_equal(preprocess_mask(floats, 40, 40).numpy(), arr > 0)


def test_binarize_mask_rule_and_threshold() -> None:
    arr = np.array([[0, 1, 127], [128, 200, 255]], np.uint8)
    mask = Image.fromarray(arr, "L")
    np.testing.assert_array_equal(binarize_mask(mask).numpy(), arr > 0)
    np.testing.assert_array_equal(binarize_mask(mask, threshold=127).numpy(), arr > 127)
    dark_blue = Image.fromarray(np.array([[[0, 0, 0], [0, 0, 3]]], np.uint8), "RGB")  # luminance rounds to 0
    np.testing.assert_array_equal(binarize_mask(dark_blue).numpy(), [[False, True]])
    with pytest.raises(ValueError, match="threshold"):
        binarize_mask(mask, threshold=-1)


def test_empty_mask_of_defect_image_refused_when_loaded(synthetic_copy: Path) -> None:
    """A defect image whose mask has no defect pixel would silently drop its defect: refused, naming the mask."""
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "test")
    i = next(k for k, s in enumerate(samples) if s.mask_path is not None)
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(samples[i].mask_path)
    with pytest.raises(DataError) as info:
        MVTecDataset(samples, resize=32, crop=32)[i]
    _assert_one_line_naming(info, str(samples[i].mask_path), str(samples[i].image_path), "no defect pixel")
    # a dataset that ships such masks on purpose can accept them
    _, m, label = MVTecDataset(samples, resize=32, crop=32, allow_empty_masks=True)[i]
    assert label == 1 and not m.any()


def test_mask_threshold_is_plumbed_through_the_dataset(synthetic_copy: Path) -> None:
    """Soft masks: ``mask_threshold`` sets which values are defects; a mask empty under it is refused too."""
    samples = find_samples(synthetic_copy, RGB_CATEGORY, "test")
    i = next(k for k, s in enumerate(samples) if s.mask_path is not None)
    arr = np.zeros((32, 32), np.uint8)
    arr[4:12, 4:12] = 100  # soft border
    arr[6:10, 6:10] = 200  # core
    Image.fromarray(arr, "L").save(samples[i].mask_path)
    np.testing.assert_array_equal(MVTecDataset(samples, resize=32, crop=32)[i][1].numpy(), arr > 0)
    soft = MVTecDataset(samples, resize=32, crop=32, mask_threshold=127)
    np.testing.assert_array_equal(soft[i][1].numpy(), arr > 127)
    Image.fromarray(np.minimum(arr, 100), "L").save(samples[i].mask_path)
    with pytest.raises(DataError, match="above 127"):
        soft[i]
