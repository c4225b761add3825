"""Integrity: every result tied to its exact inputs, never stale, never half-written, written only where asked, and
bad input refused in one line. One test per finding of the integrity issue, on synthetic data made here."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from padim_repro.backbones import WeightsError, build_backbone, load_checkpoint
from padim_repro.config import PadimConfig
from padim_repro.model import Padim
from padim_repro.study import reproduce as R
from padim_repro.study.cli import main
from padim_repro.study.runs import MANIFEST_FILE, is_complete, prepare, run_category, run_or_load
from padim_repro.study.synthetic import make_synthetic_category

CFG = dict(resize=64, crop=56, weights="none", batch_size=8, device="cpu")
SMALL = ["--weights", "none", "--resize", "64", "--crop", "56", "--device", "cpu", "--batch-size", "8", "--no-progress"]
CAT = "widget"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_synthetic_category(tmp_path / "data", CAT, n_train=6, n_test_good=2, n_test_defect=2, size=64, seed=3)
    return tmp_path / "data"


def _cut_copy(data: Path, dst: Path, drop: int = 2) -> Path:
    """A copy of the category with ``drop`` training images less."""
    shutil.copytree(data, dst)
    for p in sorted((dst / CAT / "train" / "good").glob("*.png"))[:drop]:
        p.unlink()
    return dst


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- 1. stale and overwritten results ---------------------------------------------------------------------------
def test_other_data_never_shares_a_run_folder(data: Path, tmp_path: Path) -> None:
    config = PadimConfig(**CFG)
    full = run_or_load(CAT, data, tmp_path / "res", config)
    full_metrics = (full.run_dir / "metrics.json").read_bytes()
    cut = run_or_load(CAT, _cut_copy(data, tmp_path / "cut"), tmp_path / "res", config)
    assert cut.run_dir != full.run_dir and not cut.reused and cut.record["data"]["n_train"] == 4
    assert (full.run_dir / "metrics.json").read_bytes() == full_metrics  # not overwritten
    again = run_or_load(CAT, data, tmp_path / "res", config)
    assert again.reused and again.run_dir == full.run_dir and again.record["data"]["n_train"] == 6


def test_one_changed_file_is_other_data(data: Path, tmp_path: Path) -> None:
    config = PadimConfig(**CFG)
    first = run_or_load(CAT, data, tmp_path / "res", config)
    image = data / CAT / "train" / "good" / "000.png"
    image.write_bytes((data / CAT / "train" / "good" / "001.png").read_bytes())  # same name, other content
    second = run_or_load(CAT, data, tmp_path / "res", config)
    assert second.run_dir != first.run_dir and not second.reused


def test_code_and_batch_size_are_part_of_the_identity(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    first = run_or_load(CAT, data, tmp_path / "res", PadimConfig(**CFG))
    other_batch = prepare(data, CAT, PadimConfig(**{**CFG, "batch_size": 4}))
    assert other_batch.key != prepare(data, CAT, PadimConfig(**CFG)).key
    from padim_repro.study import runs

    monkeypatch.setattr(runs, "code_fingerprint", lambda modules=(): "other code")
    again = runs.run_or_load(CAT, data, tmp_path / "res", PadimConfig(**CFG))
    assert not again.reused and again.run_dir == first.run_dir  # recomputed in place by the new code
    assert again.manifest["identity"]["code"] == "other code"


def test_reproduce_reports_reuse_and_the_commit(data: Path, tmp_path: Path) -> None:
    kw = dict(weights={"resnet18": "none"}, backbones=("resnet18",), book_dir=tmp_path / "book",
              extra_parameters={"resize": 64, "crop": 56, "batch_size": 8})  # fmt: skip
    (first,) = [s for s in R.reproduce(data, tmp_path / "res", **kw) if s.category == CAT]
    (second,) = [s for s in R.reproduce(data, tmp_path / "res", **kw) if s.category == CAT]
    assert (first.status, second.status) == ("ran", "reused") and second.run_key == first.run_key
    status = json.loads((tmp_path / "res" / "status.json").read_text())
    (entry,) = [r for r in status["runs"] if r["category"] == CAT]
    assert entry["status"] == "reused" and entry["computed_at"] == first.computed_at
    (third,) = [s for s in R.reproduce(_cut_copy(data, tmp_path / "cut"), tmp_path / "res", **kw) if s.category == CAT]
    assert third.status == "ran" and third.run_dir != first.run_dir  # other data: computed, not "reused"


# -- 2. half-written runs ---------------------------------------------------------------------------------------
def test_a_run_is_complete_only_when_its_manifest_vouches_for_every_output(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = prepare(data, CAT, PadimConfig(**CFG))
    run_category(data, CAT, run.config, out, save_model=True, prepared=run)
    assert is_complete(out, run.identity)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["outputs"]) == {"metrics.json", "predictions.npz", "bootstrap.npz", "model.pt"}
    assert len(manifest["data_files"]) == manifest["identity"]["data"]["n_files"] == 6 + 2 + 4 + 4  # masks too
    predictions = (out / "predictions.npz").read_bytes()
    (out / "predictions.npz").write_bytes(predictions[:-10])  # a newer, half-written file beside the old metrics
    assert not is_complete(out)
    (out / "predictions.npz").write_bytes(predictions)
    assert is_complete(out)
    (out / "bootstrap.npz").rename(out / "moved.npz")  # the intervals of means need it: no run without it
    assert not is_complete(out)
    (out / "moved.npz").rename(out / "bootstrap.npz")
    assert is_complete(out)
    (out / MANIFEST_FILE).unlink()  # as if killed before the last write
    assert not is_complete(out)


def test_an_interrupted_run_leaves_no_manifest_and_its_temporary_files_go(data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from padim_repro.study import runs

    out = tmp_path / "run"
    run_category(data, CAT, PadimConfig(**CFG), out)
    (out / ".model.pt.abc123.tmp").write_bytes(b"x" * 1000)  # what a SIGKILL during a save leaves

    def killed(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(Padim, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_category(data, CAT, PadimConfig(**CFG), out, save_model=True)
    assert is_complete(out)  # killed before any output was replaced: the finished run is still whole
    assert not list(out.glob(".*.tmp"))  # removed when the run started
    monkeypatch.undo()

    def killed_writing(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "write_json", killed_writing)  # killed while the outputs are being replaced
    with pytest.raises(KeyboardInterrupt):
        run_category(data, CAT, PadimConfig(**CFG), out, save_model=True)
    assert not (out / MANIFEST_FILE).exists() and not is_complete(out)  # the old manifest went first
    assert not list(out.glob(".*.tmp"))


# -- 3. writes outside --results ----------------------------------------------------------------------------------
def test_reproduce_writes_only_under_results_and_book_dir(data: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    watched = [repo / "book", repo / "results"]
    before = {p: p.stat().st_mtime_ns for w in watched for p in w.rglob("*")}
    R.reproduce(data, tmp_path / "res", {"resnet18": "none"}, backbones=("resnet18",), book_dir=tmp_path / "book",
                extra_parameters={"resize": 64, "crop": 56, "batch_size": 8})  # fmt: skip
    after = {p: p.stat().st_mtime_ns for w in watched for p in w.rglob("*")}
    assert after == before
    assert (tmp_path / "book" / "results" / "summary.ipynb").is_file()
    assert (tmp_path / "res" / "tables" / "per_category.csv").is_file()


# -- 4. plausible data that gave silently wrong numbers ----------------------------------------------------------
def test_a_test_set_without_good_images_records_the_undefined_metric(data: Path, tmp_path: Path) -> None:
    shutil.rmtree(data / CAT / "test" / "good")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = run_category(data, CAT, PadimConfig(**CFG), tmp_path / "run")
    assert record["image_auroc"] is None and record["undefined"]["image_auroc"] == "no good test image"
    assert record["pixel_auroc"] is not None and "NaN" not in (tmp_path / "run" / "metrics.json").read_text()
    assert any("image_auroc is undefined" in str(w.message) for w in caught)


def test_cli_says_so_in_one_warning_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(data / CAT / "test" / "good")
    assert main(["run", "--category", CAT, "--data-root", str(data), "--out", str(tmp_path / "o"), *SMALL]) == 0
    err = capsys.readouterr().err
    assert "warning: widget: image_auroc is undefined (no good test image); recorded as null" in err.splitlines()


# -- 5. tracebacks instead of errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, needle", [
    (["--device", "cuda"], "device"),
    (["--sigma", "inf"], "sigma"),
    (["--epsilon", "nan"], "epsilon"),
])  # fmt: skip
def test_bad_options_end_in_one_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                     needle: str) -> None:  # fmt: skip
    if needle == "device" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    argv = ["run", "--category", CAT, "--data-root", str(data), "--out", str(tmp_path / "o"), *SMALL, *extra]
    assert main(argv) == 2
    assert needle in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_refused_before_the_fit(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "o").write_text("keep me")
    monkeypatch.setattr(Padim, "fit", lambda *a, **k: pytest.fail("fitted before checking --out"))
    assert main(["run", "--category", CAT, "--data-root", str(data), "--out", str(tmp_path / "o"), *SMALL]) == 2
    assert "--out" in _one_error_line(capsys.readouterr().err) and (tmp_path / "o").read_text() == "keep me"


def test_category_with_bad_input_is_one_line_and_leaves_no_notebook(data: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    argv = ["category", "--category", "nope", "--data-root", str(data), "--results", str(tmp_path / "res"), *SMALL[:-1]]
    assert main(argv) == 2
    assert "'nope'" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.rglob("*.ipynb"))


@pytest.mark.parametrize("spec, needle", [("resnet18", "BACKBONE=SPEC"), ("resnt18=x.pth", "unknown backbone")])
def test_reproduce_weights_specs_are_checked(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, spec: str,
                                             needle: str) -> None:  # fmt: skip
    argv = ["reproduce", "--data-root", str(data), "--results", str(tmp_path / "r"), "--book-dir",
            str(tmp_path / "b"), "--weights", spec]  # fmt: skip
    assert main(argv) == 2
    assert needle in _one_error_line(capsys.readouterr().err) and not (tmp_path / "r").exists()


def test_reproduce_fails_when_nothing_ran(data: Path, tmp_path: Path) -> None:
    statuses = R.reproduce(data, tmp_path / "res", {"resnet18": str(tmp_path / "missing.pth")},
                           backbones=("resnet18",), book_dir=tmp_path / "book")  # fmt: skip
    assert {s.status for s in statuses} == {"not run"} and R.exit_code(statuses) == 1


def test_random_bytes_as_weights_never_advise_unsafe_loading(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(WeightsError) as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_nan_weights_are_refused_naming_the_file(tmp_path: Path) -> None:
    model, _ = build_backbone("resnet18", ("layer1",), "none", 0)
    state = model.state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match="NaN or infinite values in 1 tensors"):
        build_backbone("resnet18", ("layer1",), str(tmp_path / "nan.pth"), 0)


def _saved_model(data: Path, tmp_path: Path) -> tuple[Path, dict]:
    from padim_repro.data import batches, load_category

    train, _ = load_category(data, CAT, 64, 56)
    path = Padim(PadimConfig(**CFG), progress=False).fit(batches(train, 8)).save(tmp_path / "m.pt")
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("weights_id"), "'weights_id'"),
    (lambda s: s["mean"].__setitem__((0, 0), float("nan")), "NaN"),
    (lambda s: s.__setitem__("precision", s["precision"][:5]), "precision"),
    (lambda s: s.__setitem__("n_train", "many"), "'n_train'"),
])  # fmt: skip
def test_model_files_are_checked_field_by_field(data: Path, tmp_path: Path, edit, needle: str) -> None:
    path, state = _saved_model(data, tmp_path)
    edit(state)
    torch.save(state, path)
    with pytest.raises(ValueError, match=needle) as info:
        Padim.load(path)
    assert str(path) in str(info.value)
