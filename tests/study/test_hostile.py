"""What a hostile tester broke (issue 23): files lost, results invalidated, paths misread, silent numbers, a hang.
One test (or a few) per finding, on synthetic data made here; each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from padim_repro.config import PadimConfig
from padim_repro.study.cli import main
from padim_repro.study.runs import MANIFEST_FILE, is_complete, run_category
from padim_repro.study.synthetic import make_synthetic_category

CFG = dict(resize=64, crop=56, weights="none", batch_size=8, device="cpu")
SMALL = ["--weights", "none", "--resize", "64", "--crop", "56", "--device", "cpu", "--batch-size", "8", "--no-progress"]
CAT = "widget"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_synthetic_category(tmp_path / "data", CAT, n_train=4, n_test_good=2, n_test_defect=1, size=64, seed=3)
    return tmp_path / "data"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. --out on a folder that is not a run's ----------------------------------------------------------------------
def test_out_on_a_folder_of_the_users_is_refused_and_nothing_is_touched(data: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "manifest"}')
    (mine / "metrics.json").write_text('{"my": "metrics"}')
    (mine / ".draft.tmp").write_text("draft")
    before = _snapshot(mine)
    assert main(["run", "--category", CAT, "--data-root", str(data), "--out", str(mine), *SMALL]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(mine) in line and "--out" in line
    assert _snapshot(mine) == before


def test_out_on_an_empty_folder_or_an_earlier_run_is_used(data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "empty", tmp_path / "new"):  # twice: a run's folder is reused
        assert main(["run", "--category", CAT, "--data-root", str(data), "--out", str(out), *SMALL]) == 0
        assert is_complete(out)


# -- 2. a rerun that fails leaves the previous run valid ------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("break_input", ["truncated image", "empty mask"])
def test_a_failed_rerun_leaves_the_finished_run_valid(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      break_input: str) -> None:  # fmt: skip
    out = tmp_path / "o"
    argv = ["run", "--category", CAT, "--data-root", str(data), "--out", str(out), "--save-model", *SMALL]
    assert main(argv) == 0
    before = _snapshot(out)
    if break_input == "truncated image":
        _truncate(data / CAT / "test" / "good" / "001.png")
    else:
        from PIL import Image

        mask = data / CAT / "ground_truth" / "spot" / "000_mask.png"
        Image.new("L", Image.open(mask).size, 0).save(mask)
    capsys.readouterr()
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err)
    assert _snapshot(out) == before and is_complete(out)
    assert json.loads((out / MANIFEST_FILE).read_text())["outputs"]["model.pt"]
