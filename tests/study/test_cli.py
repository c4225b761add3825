"""padim_repro.study.cli: ``run`` writes metrics.json and predictions.npz; bad input exits with code 2 and a clear message."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GRAY_CATEGORY, RGB_CATEGORY

from padim_repro.config import PadimConfig
from padim_repro.data import load_category
from padim_repro.metrics import image_auroc
from padim_repro.model import Padim
from padim_repro.study.cli import main
from padim_repro.study.runs import is_complete, load_predictions

SMALL = ["--weights", "none", "--resize", "64", "--crop", "56", "--device", "cpu", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def cli_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["run", "--category", RGB_CATEGORY, "--data-root", str(synthetic_root), "--out", str(out), "--save-model"]
    buf = io.StringIO()  # module-scoped, so capsys is not available: capture the printed summary by hand
    with contextlib.redirect_stdout(buf):
        code = main(argv + SMALL)
    return out, code, buf.getvalue()


def test_run_writes_metrics(cli_run: tuple[Path, int, str]) -> None:
    out, code, stdout = cli_run
    assert code == 0
    assert is_complete(out)
    record = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pro", "config", "timings", "versions", "git_commit", "weights"):
        assert key in record, key
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert 0.0 <= record[key] <= 1.0
    assert record["category"] == RGB_CATEGORY
    assert record["config"] == PadimConfig(resize=64, crop=56, weights="none", batch_size=8, device="cpu").to_dict()
    assert record["weights"]["spec"] == "none"
    fp = record["weights"]["fingerprint"]
    assert isinstance(fp, str) and len(fp) == 16 and int(fp, 16) >= 0
    assert record["timings"]["fit_s"] > 0 and record["timings"]["predict_s"] > 0
    assert record["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert record["data"]["n_train"] == 10 and record["data"]["n_test"] == 10
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["image_auroc"] == record["image_auroc"] and summary["category"] == RGB_CATEGORY


def test_run_predictions_readable(cli_run: tuple[Path, int, str], synthetic_root: Path) -> None:
    out, code, _ = cli_run
    assert code == 0
    pred = load_predictions(out)
    _, test = load_category(synthetic_root, RGB_CATEGORY, resize=64, crop=56)
    masks = np.stack([test[i][1].numpy() for i in range(len(test))])
    assert pred["maps"].shape == (len(test), 56, 56) and pred["maps"].dtype == np.float32
    assert pred["masks"].shape == masks.shape and pred["masks"].dtype == bool
    np.testing.assert_array_equal(pred["masks"], masks)
    np.testing.assert_array_equal(pred["labels"], test.labels)
    assert list(pred["defect_types"]) == test.defect_types
    assert list(pred["image_paths"])[0] == f"{RGB_CATEGORY}/test/good/000.png"
    # the scores are the maxima of the maps (up to the float16 storage of the maps)
    np.testing.assert_allclose(pred["scores"], pred["maps"].reshape(len(test), -1).max(1), rtol=2e-3)
    record = json.loads((out / "metrics.json").read_text())
    assert record["image_auroc"] == image_auroc(pred["scores"], pred["labels"])


def test_run_saved_model_reproduces_predictions(cli_run: tuple[Path, int, str], synthetic_root: Path) -> None:
    out, code, _ = cli_run
    assert code == 0
    model = Padim.load(out / "model.pt", progress=False)
    _, test = load_category(synthetic_root, RGB_CATEGORY, resize=64, crop=56)
    x = torch.stack([test[i][0] for i in range(len(test))])
    _, scores = model.predict(x)
    np.testing.assert_allclose(scores, load_predictions(out)["scores"], rtol=1e-5)


def test_run_grayscale_category(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "gray"
    code = main(["run", "--category", GRAY_CATEGORY, "--data-root", str(synthetic_root), "--out", str(out), *SMALL])
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["image_auroc"] >= 0.9


def test_missing_category(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["run", "--category", "bottle", "--data-root", str(synthetic_root), "--out", str(out), *SMALL])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'bottle'" in err and RGB_CATEGORY in err
    assert not (out / "metrics.json").exists()


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "no_data"
    code = main(["run", "--category", "bottle", "--data-root", str(root), "--out", str(tmp_path / "o"), *SMALL])
    assert code == 2
    assert str(root) in capsys.readouterr().err


def test_missing_weights_file(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "missing" / "resnet18.pth"
    out = tmp_path / "run"
    argv = ["run", "--category", RGB_CATEGORY, "--data-root", str(synthetic_root), "--out", str(out), *SMALL]
    code = main(argv + ["--weights", str(weights)])  # the last --weights wins
    assert code == 2
    err = capsys.readouterr().err
    assert str(weights) in err
    assert not (out / "metrics.json").exists()


def test_invalid_config_value(synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["run", "--category", RGB_CATEGORY, "--data-root", str(synthetic_root), "--out", str(tmp_path / "o"), *SMALL]
    assert main(argv + ["--crop", "80"]) == 2
    assert "crop" in capsys.readouterr().err
