"""PaDiM-R18-Rd100 on real MVTec AD categories with ImageNet weights: the paper's protocol end to end.

Needs ``../shared/mvtec_ad`` and the ImageNet ResNet-18 checkpoint in ``../shared/weights``; skipped otherwise.
Each category takes roughly 30-45 s on two CPU cores. Thresholds sit a little below what PaDiM-R18-Rd100 reaches
(published torchvision-based reproduction: bottle 99.4 / 98.1, transistor 92.5 / 96.7 image / pixel AUROC).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_MVTEC, SHARED_WEIGHTS, requires, requires_shared

from padim_repro.config import PadimConfig
from padim_repro.study.runs import is_complete, run_category

pytestmark = [pytest.mark.integration, requires_shared]

HEADLINE = ("image_auroc", "pixel_auroc", "pro")


def _config() -> PadimConfig:
    # the paper's defaults (resnet18, layer1..3, d=100, seed 1024, resize 256, crop 224, sigma 4, epsilon 0.01)
    return PadimConfig(weights=str(SHARED_WEIGHTS))


@pytest.fixture(scope="module")
def bottle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bottle") / "run"
    return out, run_category(SHARED_MVTEC, "bottle", _config(), out, progress=False)


@requires(SHARED_MVTEC / "bottle", SHARED_WEIGHTS)
def test_bottle(bottle: tuple[Path, dict]) -> None:
    out, record = bottle
    assert is_complete(out)
    assert json.loads((out / "metrics.json").read_text())["image_auroc"] == record["image_auroc"]
    assert record["data"]["n_train"] == 209 and record["data"]["n_test"] == 83
    assert record["d"] == 100 and record["n_channels_total"] == 448
    assert record["image_auroc"] >= 0.99
    assert record["pixel_auroc"] >= 0.975
    assert 0.85 < record["pro"] < 1.0


@requires(SHARED_MVTEC / "bottle", SHARED_WEIGHTS)
def test_bottle_is_deterministic(bottle: tuple[Path, dict], tmp_path: Path) -> None:
    _, first = bottle
    second = run_category(SHARED_MVTEC, "bottle", _config(), tmp_path / "again", progress=False)
    assert {k: second[k] for k in HEADLINE} == {k: first[k] for k in HEADLINE}
    assert second["per_defect_image_auroc"] == first["per_defect_image_auroc"]
    assert second["weights"]["fingerprint"] == first["weights"]["fingerprint"]


@requires(SHARED_MVTEC / "transistor", SHARED_WEIGHTS)
def test_transistor(tmp_path: Path) -> None:
    record = run_category(SHARED_MVTEC, "transistor", _config(), tmp_path / "run", progress=False)
    assert record["data"]["n_train"] == 213 and record["data"]["n_test"] == 100
    assert record["image_auroc"] >= 0.90
    assert record["pixel_auroc"] >= 0.96
