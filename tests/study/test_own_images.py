"""``fit`` and ``predict`` on a folder of your own images (tiny synthetic images written here, random-init backbone)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from padim_repro.config import PadimConfig
from padim_repro.images import ImageFiles, list_images, map_at_image_size, predict_files, threshold_at_fpr
from padim_repro.model import Padim
from padim_repro.study.cli import main

SMALL = ["--weights", "none", "--resize", "64", "--crop", "56", "--device", "cpu", "--batch-size", "4"]
H, W = 48, 80  # own size of the images: not square, not the network's input


def _texture(rng: np.random.Generator, height: int = H, width: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    img = 120 + 40 * np.sin(2 * np.pi * (xx / width * rng.uniform(1, 2) + yy / height) + rng.uniform(0, 6))
    return (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)


def _defect(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[14:30, 30:50] = 250
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good/ (a tree of 12 PNG, grayscale and RGB), heldout/ (10 good), test/ (2 good JPEG, 2 defect BMP)."""
    root = tmp_path_factory.mktemp("own_images")
    rng = np.random.default_rng(0)
    for i in range(12):
        sub = root / "good" / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(_texture(rng))
        (img if i % 3 else img.convert("RGB")).save(sub / f"g{i}.png")
    (root / "heldout").mkdir()
    for i in range(10):
        Image.fromarray(_texture(rng)).save(root / "heldout" / f"h{i}.png")
    (root / "test").mkdir()
    for i in range(2):
        Image.fromarray(_texture(rng)).convert("RGB").save(root / "test" / f"ok{i}.jpg", quality=95)
        Image.fromarray(_defect(_texture(rng))).save(root / "test" / f"bad{i}.bmp")
    return root


@pytest.fixture(scope="module")
def model_file(folders: Path) -> Path:
    path = folders / "model.pt"
    assert main(["fit", "--images", str(folders / "good"), "--model", str(path), *SMALL]) == 0
    return path


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv") as fh:
        return list(csv.DictReader(fh))


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_fit_is_the_method_on_the_same_images(folders: Path, model_file: Path) -> None:
    """The model file of ``fit`` is :meth:`Padim.fit` on the images preprocessed by the method's pipeline."""
    files = list_images([folders / "good"])
    assert len(files) == 12 and {f.parent.name for f in files} == {"a", "c"}  # searched recursively
    config = PadimConfig(weights="none", resize=64, crop=56, device="cpu", batch_size=4)
    x = torch.stack([ImageFiles(files, config)[i] for i in range(len(files))])
    direct = Padim(config, progress=False).fit(x)
    loaded = Padim.load(model_file, progress=False)
    assert loaded.config == config and loaded.n_train_ == 12
    torch.testing.assert_close(loaded.mean_, direct.mean_, rtol=0, atol=0)
    torch.testing.assert_close(loaded.precision_, direct.precision_, rtol=0, atol=0)
    streamed = [m for m, _ in predict_files(loaded, files, progress=False)]
    np.testing.assert_array_equal(np.concatenate(streamed), direct.predict(x)[0])


def test_predict_writes_scores_maps_and_overlays(folders: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(folders / "test"), "--model", str(model_file), "--out", str(out),
                 "--good", str(folders / "heldout"), "--fpr", "0.1"])  # fmt: skip
    assert code == 0
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == {"ok0.jpg", "ok1.jpg", "bad0.bmp", "bad1.bmp"}
    assert all(rows[f"bad{i}.bmp"]["anomalous"] == "yes" for i in range(2))
    assert min(float(rows[f"bad{i}.bmp"]["score"]) for i in range(2)) > max(
        float(rows[f"ok{i}.jpg"]["score"]) for i in range(2))
    amap = np.load(out / "maps" / "bad0.npy")
    assert amap.dtype == np.float16 and amap.shape == (H, W)
    seen = np.isfinite(amap)  # the paper's center crop: the image's sides outside it were never seen
    assert seen[H // 2, W // 2] and not seen[:, 0].any() and not seen[0].any()  # crop of 64 x 106: 3 rows cut
    assert np.nanargmax(amap.astype(np.float32)) // W in range(10, 34)
    assert Image.open(out / "overlays" / "bad0.png").size == (W, H)
    assert sorted(p.name for p in out.iterdir()) == ["maps", "overlays", "scores.csv", "summary.json"]


def test_no_maps_and_a_given_threshold(folders: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(folders / "test"), "--model", str(model_file), "--out", str(out), "--no-maps",
                 "--threshold", "1e9"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv", "summary.json"]
    assert {r["anomalous"] for r in _rows(out)} == {"no"}


def test_tiled_fit_and_predict_keep_the_image_size(folders: Path, tmp_path: Path) -> None:
    model = tmp_path / "tiled.pt"
    assert main(["fit", "--images", str(folders / "good"), "--model", str(model), "--tile", "32", "--stride", "16",
                 *SMALL[:2], *SMALL[6:]]) == 0  # fmt: skip
    out = tmp_path / "out"
    assert main(["predict", str(folders / "test"), "--model", str(model), "--out", str(out)]) == 0
    amap = np.load(out / "maps" / "bad1.npy").astype(np.float32)
    assert amap.shape == (H, W) and np.isfinite(amap).all()
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert 8 <= y < 36 and 24 <= x < 56
    assert "anomalous" not in _rows(out)[0]


def test_map_at_image_size_covers_the_center_crop() -> None:
    config = PadimConfig(resize=64, crop=56)
    full = map_at_image_size(np.ones((56, 56), np.float32), 160, 80, config)  # resized to 128x64, crop 56
    cols = np.flatnonzero(np.isfinite(full[40]))
    rows = np.flatnonzero(np.isfinite(full[:, 80]))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (5, 74, 45, 114)


def test_threshold_at_fpr() -> None:
    scores = np.arange(100, dtype=float)
    assert threshold_at_fpr(scores, 0.05) == 94.0 and (scores > 94).mean() == 0.05
    with pytest.raises(ValueError, match="too few"):
        threshold_at_fpr(scores[:10], 0.05)


# -- bad input: one error line naming the file or option, exit 2, nothing left in --out --------------------------
def _write(path: Path, data: bytes | np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        Image.fromarray(data).save(path)
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture, *names: str) -> None:
    assert main(argv) == 2
    err = _error(capsys)
    for name in names:
        assert name in err, err


def test_bad_input_to_fit(folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    model = tmp_path / "m.pt"
    broken = _write(tmp_path / "broken" / "x.png", b"not an image")
    _write(tmp_path / "broken" / "y.png", _texture(rng))
    _refused(["fit", "--images", str(broken.parent), "--model", str(model), *SMALL], capsys, str(broken))
    (tmp_path / "empty").mkdir()
    _refused(["fit", "--images", str(tmp_path / "empty"), "--model", str(model), *SMALL], capsys, "empty")
    sixteen = _write(tmp_path / "deep" / "a.png", (rng.random((H, W)) * 60000).astype(np.uint16))
    _write(tmp_path / "deep" / "b.png", _texture(rng))
    _refused(["fit", "--images", str(sixteen.parent), "--model", str(model), *SMALL], capsys, str(sixteen), "16-bit")
    mixed = tmp_path / "mixed"
    _write(mixed / "a.png", _texture(rng))
    _write(mixed / "b.png", _texture(rng, 40, 80))
    _refused(["fit", "--images", str(mixed), "--model", str(model), "--tile", "32", *SMALL[:2]], capsys,
             "different sizes", "--resize")  # fmt: skip
    _refused(["fit", "--images", str(folders / "good"), "--model", str(model), "--tile", "64", *SMALL[:2]], capsys,
             "tile 64 is larger")  # fmt: skip
    assert not model.exists()


def test_bad_input_to_predict(folders: Path, model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    base = ["predict", str(folders / "test"), "--model", str(model_file), "--out", str(out)]
    _refused([*base, "--good", str(folders / "heldout"), "--fpr", "0.05"], capsys, "--good", "too few")
    _refused([*base, "--good", str(folders / "heldout"), "--threshold", "3"], capsys, "--threshold")
    _refused(["predict", str(tmp_path / "nowhere"), "--model", str(model_file), "--out", str(out)], capsys, "nowhere")
    # a model fitted with other backbone weights than its file names now
    ckpt = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), ckpt)
    other = tmp_path / "other.pt"
    assert main(["fit", "--images", str(folders / "good"), "--model", str(other), *SMALL[2:],
                 "--weights", str(ckpt)]) == 0  # fmt: skip
    capsys.readouterr()
    torch.manual_seed(99)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), ckpt)
    _refused(["predict", str(folders / "test"), "--model", str(other), "--out", str(out)], capsys, str(other),
             "backbone weights")  # fmt: skip
    assert not out.exists()


def test_an_image_failing_mid_stream_leaves_out_as_it_was(folders: Path, model_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A file whose header reads but whose pixels do not (truncated): the error names it and the previous
    outputs in --out are untouched, with no staging folder left."""
    out = tmp_path / "out"
    assert main(["predict", str(folders / "test"), "--model", str(model_file), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    images = tmp_path / "imgs"
    for i in range(40):  # more than one scoring group, so some images are done when the last one fails
        _write(images / f"i{i:02d}.png", _texture(np.random.default_rng(i)))
    blob = (images / "i39.png").read_bytes()
    (images / "i39.png").write_bytes(blob[: len(blob) // 2])
    _refused(["predict", str(images), "--model", str(model_file), "--out", str(out)], capsys, "i39.png")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_run_with_tiles(synthetic_root: Path, tmp_path: Path) -> None:
    """``run --tile``: the whole 64 px images in 32 px tiles; maps and masks at the images' size, metrics computed."""
    from conftest import RGB_CATEGORY

    from padim_repro.study.runs import load_predictions

    out = tmp_path / "run"
    assert main(["run", "--category", RGB_CATEGORY, "--data-root", str(synthetic_root), "--out", str(out),
                 "--tile", "32", *SMALL[:2], *SMALL[6:]]) == 0  # fmt: skip
    pred = load_predictions(out)
    assert pred["maps"].shape[1:] == (64, 64) and pred["masks"].shape == pred["maps"].shape
    record = json.loads((out / "metrics.json").read_text())
    assert record["config"]["tile"] == 32 and record["image_auroc"] >= 0.9


def test_the_how_to_notebook_runs_on_a_folder(folders: Path, tmp_path: Path) -> None:
    """``notebooks/own_images.ipynb`` without a Magnetic Tile root: a folder to fit on, one to score, one for the
    threshold; its table has both variants and its figures are drawn."""
    pytest.importorskip("papermill")
    from padim_repro.study.notebooks import execute

    params = {"mt_root": "", "train_images": str(folders / "good"), "score_images": str(folders / "test"),
              "good_images": str(folders / "heldout"), "fpr": 0.1, "weights": "none", "tile": 32, "stride": 16,
              "tiled_size": f"{H}x{W}", "out_dir": str(tmp_path / "out"), "device": "cpu"}  # fmt: skip
    page = execute("own_images", tmp_path / "page.ipynb", params)
    text = page.read_text()
    assert "32 x 32, one tile (the untiled model)" in text and f"{W} x {H}, tiles of 32 every 16" in text
    assert text.count('"image/png"') == 2
    assert (tmp_path / "out" / "v1" / "predict" / "overlays" / "bad0.png").is_file()


def test_how_to_page_on_magnetic_tile_layout(tmp_path: Path) -> None:
    """The page's Magnetic Tile path: the seeded split, both commands, and the method's metrics on what predict
    wrote (maps of each image's own size and masks brought to one size)."""
    from padim_repro.study.beyond.magnetic_tile import make_synthetic_magnetic_tile
    from padim_repro.study.own_images_page import evaluate_variant, magnetic_tile_split, run_variant

    root = make_synthetic_magnetic_tile(tmp_path / "mt", n_free=20, n_defect=3, seed=0)
    split = magnetic_tile_split(root)
    assert (len(split.train), len(split.test), len(split.good)) == (10, 16, 10)
    assert {s.label for s in split.test} == {0, 1} and not set(split.train) & {s.image_path for s in split.test}
    assert len(magnetic_tile_split(root, limit=4).test) == 8
    config = PadimConfig(weights="none", device="cpu", batch_size=4, tile=32, image_size=(64, 64))
    run = run_variant("tiled", config, split, tmp_path / "out", fpr=0.1, progress=False)
    assert run["threshold"] is not None and np.load(next((run["out"] / "maps").rglob("*.npy"))).dtype == np.float16
    metrics = evaluate_variant(run["out"], split.test, 64)
    assert metrics["image_auroc"] >= 0.8 and metrics["pixel_auroc"] >= 0.8 and 0 < metrics["pro"] <= 1


def test_make_howto_skips_without_magnetic_tile(tmp_path: Path) -> None:
    """`make reproduce` runs `make howto`: without Magnetic Tile at MT_ROOT it says so and succeeds (the book keeps
    its pending page) instead of failing the step; with a folder there it runs the page's command (here PY=false)."""
    repo = Path(__file__).resolve().parents[2]
    make = ["make", "-s", "-C", str(repo), "-o", "setup", "howto", "PY=false"]
    skipped = subprocess.run([*make, f"MT_ROOT={tmp_path / 'none'}"], capture_output=True, text=True)
    assert skipped.returncode == 0 and "skipped, no Magnetic Tile at" in skipped.stdout
    assert subprocess.run([*make, f"MT_ROOT={tmp_path}"], capture_output=True, text=True).returncode != 0
