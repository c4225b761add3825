"""`make reproduce`'s driver: resumes, isolates a failing category, reports what could not be run and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_display import assert_readable

from padim_repro.data import DataError
from padim_repro.study import download
from padim_repro.study import reproduce as R
from padim_repro.study.display import interval, percent
from padim_repro.study.download import verify_counts
from padim_repro.study.synthetic import make_synthetic_category

SMALL = {"resize": 64, "crop": 56}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two synthetic categories, one broken (a defect image lost its mask), reproduced once with R18 + WR50."""
    tmp = tmp_path_factory.mktemp("reproduce")
    data = tmp / "data"
    make_synthetic_category(data, "good_one", n_train=6, n_test_good=2, n_test_defect=2, seed=1)
    broken = make_synthetic_category(data, "broken", n_train=6, n_test_good=2, n_test_defect=2, seed=2)
    next((broken / "ground_truth" / "spot").glob("*_mask.png")).unlink()
    weights = {"resnet18": "none", "wide_resnet50_2": str(tmp / "no-such-weights.pth")}
    kwargs = dict(weights=weights, book_dir=tmp / "book", extra_parameters=SMALL)
    statuses = R.reproduce(data, tmp / "results", **kwargs)
    return {"tmp": tmp, "data": data, "kwargs": kwargs, "statuses": {(s.category, s.backbone): s for s in statuses}}


def test_runs_present_categories_and_isolates_the_failure(run: dict) -> None:
    st = run["statuses"]
    assert st["good_one", "resnet18"].status == "ran"
    assert st["broken", "resnet18"].status == "failed"
    assert "has no mask" in st["broken", "resnet18"].reason
    assert R.exit_code(list(st.values())) == 1
    book = run["tmp"] / "book"
    assert (book / st["good_one", "resnet18"].notebook).is_file() and st["broken", "resnet18"].notebook == ""
    assert not (book / "results" / "broken_resnet18.ipynb").exists()  # a failed run leaves no page
    assert not list(book.rglob(".*.ipynb"))  # nor a partial notebook


def test_reports_absent_categories_and_unavailable_weights(run: dict) -> None:
    st = run["statuses"]
    assert st["carpet", "resnet18"].status == "not run"
    assert st["carpet", "resnet18"].reason.startswith("data absent")
    wr50 = st["good_one", "wide_resnet50_2"]
    assert wr50.status == "not run" and wr50.reason.startswith("weights unavailable")
    assert "does not exist" in wr50.reason
    status = json.loads((run["tmp"] / "results" / R.STATUS_FILE).read_text())
    assert {(r["category"], r["backbone"]) for r in status["runs"]} == set(st)
    assert (run["tmp"] / "book" / "results" / "summary.ipynb").is_file()


def test_pages_show_readable_tables(run: dict) -> None:
    """The category page and the summary execute without a NaN or scientific notation in any table; the category
    page shows the run's metrics with their intervals, and the thresholded metrics beyond the paper."""
    ran = run["statuses"]["good_one", "resnet18"]
    page, summary = run["tmp"] / "book" / ran.notebook, run["tmp"] / "book" / "results" / "summary.ipynb"
    assert_readable(page, summary)
    record = json.loads((run["tmp"] / "results" / ran.run_dir / "metrics.json").read_text())
    html = page.read_text()
    for metric in ("image_auroc", "pixel_auroc", "pro", "image_f1_max", "pixel_f1_max", "pixel_ap"):
        assert f">{percent(record[metric], 2)}<" in html, metric
    bounds = record["intervals"]["pixel_auroc"]
    assert interval(bounds["low"], bounds["high"], 2) in html and "Beyond the paper (anomalib reports F1)" in html
    assert "weights fingerprint" in html  # random-init weights: no file
    text = summary.read_text()  # the same-scope headline is linked; no group mean of ours beside the paper's over 10
    assert "{ref}`headline`" in text and " of 10" not in text


def test_second_run_recomputes_nothing(run: dict) -> None:
    notebook = run["tmp"] / "book" / run["statuses"]["good_one", "resnet18"].notebook
    metrics = run["tmp"] / "results" / run["statuses"]["good_one", "resnet18"].run_dir / "metrics.json"
    before = (notebook.stat().st_mtime_ns, metrics.stat().st_mtime_ns)
    again = {(s.category, s.backbone): s for s in R.reproduce(run["data"], run["tmp"] / "results", **run["kwargs"])}
    assert again["good_one", "resnet18"].status == "reused"
    assert (notebook.stat().st_mtime_ns, metrics.stat().st_mtime_ns) == before


def test_counts_are_checked_against_the_official_ones(tmp_path: Path) -> None:
    make_synthetic_category(tmp_path, "bottle", n_train=3, n_test_good=1, n_test_defect=1)
    (problem,) = verify_counts(tmp_path, ["bottle"])
    assert "bottle" in problem and "(3, 3, 2)" in problem and "(209, 83, 3)" in problem
    assert verify_counts(tmp_path, ["not_mvtec"]) == []


def test_offline_without_data_says_how_to_point_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)  # no backoff waits in a test
    with pytest.raises(DataError, match="DATA_ROOT"):
        R.ensure_data(tmp_path / "empty")
