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
def test_out_on_a_folder_of_the_users_is_refused_and_nothing_is_touched(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
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


# -- 3. relative paths are the working directory's ----------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def _tiny_notebook(folder: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), nbformat.v4.new_code_cell("x = 1", metadata={"tags": [
        "parameters"]}), nbformat.v4.new_code_cell("x * 10")]  # fmt: skip
    nbformat.write(nb, folder / "tiny.ipynb")
    return folder / "tiny.ipynb"


def test_a_relative_notebook_output_is_the_working_directorys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from padim_repro.study import notebooks

    (tmp_path / "src").mkdir()
    _tiny_notebook(tmp_path / "src")
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    out = notebooks.execute("tiny", Path("relbook") / "page.ipynb", {"x": 2}, cwd=tmp_path)
    assert out == tmp_path / "relbook" / "page.ipynb" and out.is_file()
    assert not (REPO / "relbook").exists()


# -- 4. pages of results that are not the repository's go beside those results ------------------------------------
@pytest.mark.parametrize("command, target", [
    ("reproduce", "padim_repro.study.reproduce.reproduce"),
    ("ablations", "padim_repro.study.ablations.run_ablations"),
    ("beyond", "padim_repro.study.beyond.run_beyond"),
    ("cost", "padim_repro.study.notebooks.execute"),
])  # fmt: skip
def test_pages_of_other_results_go_beside_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str,
                                               target: str) -> None:  # fmt: skip
    seen: list[str] = []

    def capture(*args, **kwargs):
        seen.append(str(kwargs.get("book_dir") or (args[1] if command == "cost" else args[4])))
        return {"x": "ran"} if command == "beyond" else []

    monkeypatch.setattr(target, capture)
    monkeypatch.chdir(tmp_path)
    assert main([command, "--results", "res"]) in (0, 1)
    assert Path(seen[0]).resolve().is_relative_to(tmp_path / "res"), seen
    seen.clear()
    assert main([command, "--results", str(REPO / "results")]) in (0, 1)
    assert Path(seen[0]).resolve().is_relative_to(REPO / "book"), seen


# -- 5. a page is its notebook's content too ------------------------------------------------------------------------
def test_a_changed_notebook_makes_its_pages_stale(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat

    from padim_repro.study import notebooks
    from padim_repro.study.reproduce import run_category_notebook

    src = _tiny_notebook(tmp_path)
    src.rename(tmp_path / "category.ipynb")
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path)
    page = tmp_path / "page.ipynb"
    args = (CAT, PadimConfig(**CFG), data, tmp_path / "res", page)
    assert run_category_notebook(*args)[2] and not run_category_notebook(*args)[2]  # executed, then up to date
    nb = nbformat.read(tmp_path / "category.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('a new cell')"))
    nbformat.write(nb, tmp_path / "category.ipynb")
    assert run_category_notebook(*args)[2]  # the notebook changed: its page is executed again
    assert "a new cell" in page.read_text()


# -- 9. images of another grid than the model's --------------------------------------------------------------------
def test_predict_refuses_images_of_another_grid(tmp_path: Path) -> None:
    import torch

    from padim_repro.model import Padim

    config = PadimConfig(resize=64, crop=64, sigma=2, weights="none", batch_size=4, device="cpu")
    path = Padim(config, progress=False).fit(torch.rand(4, 3, 64, 64)).save(tmp_path / "m.pt")
    model = Padim.load(path, progress=False)
    assert model.predict(torch.rand(2, 3, 64, 64))[0].shape == (2, 64, 64)
    for shape in ((32, 128), (128, 128)):  # the same number of positions, or another; never matched silently
        with pytest.raises(ValueError, match=r"16x16") as info:
            model.predict(torch.rand(2, 3, *shape))
        assert f"{shape[0] // 4}x{shape[1] // 4} feature grid" in str(info.value)


# -- 7. no good test image: every image metric that needs one is undefined, and said so ---------------------------
def test_without_good_test_images_no_image_metric_is_a_free_one(data: Path, tmp_path: Path) -> None:
    import shutil
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from padim_repro.study.plots import plot_per_defect
    from padim_repro.study.report import metrics_table, thresholded_table

    shutil.rmtree(data / CAT / "test" / "good")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = run_category(data, CAT, PadimConfig(**CFG), tmp_path / "run")
    for metric in ("image_auroc", "image_f1_max", "image_ap"):  # any scorer gets F1-max and AP 1.0 here
        assert record[metric] is None and record["undefined"][metric] == "no good test image", metric
        assert record["intervals"][metric]["low"] is None, metric
        assert any(f"{metric} is undefined" in str(w.message) for w in caught), metric
    assert record["per_defect_image_auroc"] is None
    assert record["undefined"]["per_defect_image_auroc"] == "no good test image"
    assert record["pixel_auroc"] is not None
    thresholded_table(record), metrics_table(record)  # the pages say why, and do not fail
    assert "no good test image" in plot_per_defect(record).axes[0].texts[0].get_text()


# -- 8. a defect the crop removes is said --------------------------------------------------------------------------
def test_a_defect_only_in_the_cropped_border_is_said(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    mask = data / CAT / "ground_truth" / "spot" / "000_mask.png"
    border = np.zeros((64, 64), np.uint8)
    border[20:30, :3] = 255  # 64 -> crop 56 removes 4 px on each side
    Image.fromarray(border, "L").save(mask)
    assert main(["run", "--category", CAT, "--data-root", str(data), "--out", str(tmp_path / "o"), *SMALL]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and str(mask) in warned[0] and "crop" in warned[0], warned
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert record["data"]["n_test_defective"] == 2  # still a defective image for the image metrics


# -- 10. a read-only file system, a full disk ----------------------------------------------------------------------
@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/ro``, where creating a file or folder fails as on a read-only file system (tests run as root, whom
    chmod does not stop)."""
    import errno
    import os

    ro = tmp_path / "ro"
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path) -> None:
        if Path(os.fsdecode(path)).absolute().is_relative_to(ro):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    return ro


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file written through :func:`padim_repro.storage.atomic_write` fills the disk after 100 bytes."""
    import errno
    import io

    from padim_repro import storage

    class Full(io.BufferedWriter):
        def write(self, b) -> int:
            if self.tell() + len(b) > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    real_fdopen = storage.os.fdopen
    monkeypatch.setattr(storage.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode, buffering=0)))


def test_a_read_only_results_folder_is_one_error_line(data: Path, read_only: Path,
                                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    for argv in (["run", "--results", str(read_only), "--no-progress"], ["run", "--out", str(read_only / "o")],
                 ["category", "--results", str(read_only)]):  # fmt: skip
        assert main([*argv, "--category", CAT, "--data-root", str(data), *SMALL[:-1]]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert str(read_only) in line and "Read-only file system" in line, line


@pytest.mark.parametrize("save_model", [False, True])
def test_a_full_disk_is_one_error_line_and_leaves_nothing_half_written(data: Path, tmp_path: Path, disk_full: None,
                                                                       capsys: pytest.CaptureFixture,
                                                                       save_model: bool) -> None:  # fmt: skip
    out = tmp_path / "o"
    argv = ["run", "--category", CAT, "--data-root", str(data), "--out", str(out), *SMALL]
    assert main(argv + (["--save-model"] if save_model else [])) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "No space left on device" in line, line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not is_complete(out)


# -- 12. the hub out of reach: one line, at once ----------------------------------------------------------------------
def test_hub_weights_out_of_reach_are_one_line_fast(data: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_")) and "proxy" not in k.lower()}  # fmt: skip
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9",  # an empty cache, a closed port
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    argv = [sys.executable, "-m", "padim_repro", "run", "--category", CAT, "--data-root", str(data), "--out",
            str(tmp_path / "o"), *SMALL[2:], "--weights", "tv_in1k"]  # fmt: skip
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the hub's retries went on for more than 40 s")
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "tv_in1k" in line and "--weights" in line and "127.0.0.1:9" in line, line
    assert time.monotonic() - t0 < 20



# -- 6. the report shows complete runs only, and says when a category was not whole ---------------------------------
def test_the_report_leaves_out_a_run_that_lost_its_manifest(data: Path, tmp_path: Path) -> None:
    from padim_repro.study.report import DONE, runs_frame

    res = tmp_path / "res"
    run_category(data, CAT, PadimConfig(**CFG), res / "runs" / CAT / "r")
    (res / "status.json").write_text(json.dumps({"runs": [{"category": CAT, "backbone": "resnet18", "status": "ran",
                                                          "reason": "", "run_dir": f"runs/{CAT}/r", "notebook": ""}]}))
    assert runs_frame(res).status.tolist() == ["ran"]
    (res / "runs" / CAT / "r" / "predictions.npz").unlink()  # not committed: a clone has none
    assert runs_frame(res).status.tolist() == ["ran"]
    (res / "runs" / CAT / "r" / MANIFEST_FILE).unlink()
    (row,) = runs_frame(res).itertuples()
    assert row.status not in DONE and "manifest" in row.reason


def test_a_category_with_other_counts_than_the_official_is_said_in_the_book(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from padim_repro.study import reproduce as R
    from padim_repro.study.report import coverage_table, runs_frame

    make_synthetic_category(tmp_path / "data", "bottle", n_train=4, n_test_good=2, n_test_defect=1, size=32)

    def ran(status, config, data_root, results, book_dir, force, pages=True) -> None:  # the run itself is not the point here
        run_category(data_root, status.category, config, results / "runs" / status.category / "r")
        status.status, status.run_dir = "ran", f"runs/{status.category}/r"

    monkeypatch.setattr(R, "_run_one", ran)
    monkeypatch.setattr(R, "execute", lambda *a, **k: None)
    R.reproduce(tmp_path / "data", tmp_path / "res", {"resnet18": "none"}, backbones=("resnet18",),
                book_dir=tmp_path / "book", extra_parameters={"resize": 32, "crop": 32, "batch_size": 8})  # fmt: skip
    runs = runs_frame(tmp_path / "res")
    (row,) = runs[runs.category == "bottle"].itertuples()
    assert row.status == "ran" and "official" in row.reason and "(4, 4, 2)" in row.reason, row.reason
    assert "official" in coverage_table(runs).loc["bottle", "resnet18"]


def test_the_committed_results_are_reported_in_a_clone() -> None:
    """The repository's own results (committed without predictions.npz) are reported, none as incomplete."""
    from padim_repro.study.report import INCOMPLETE, runs_frame

    runs = runs_frame(Path(__file__).resolve().parents[2] / "results")
    assert len(runs) and INCOMPLETE not in set(runs.status), runs[runs.status == INCOMPLETE]
