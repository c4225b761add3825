"""bench/check_cuda.py, the proof that every command gives the CPU's numbers on a GPU: run here on the CPU against
itself on the smallest data (so the script never rots), and its comparison shown to catch a difference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import RGB_CATEGORY

from padim_repro.study.beyond import magnetic_tile as MT

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "check_cuda.py"


def _script():
    spec = importlib.util.spec_from_file_location("check_cuda", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_runs_every_command_and_compares_cpu_with_cpu(synthetic_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    mt = MT.make_synthetic_magnetic_tile(tmp_path / "mt", n_free=8, n_defect=1, seed=0)
    work = tmp_path / "work"
    rc = _script().main(["--device", "cpu", "--data-root", str(synthetic_root), "--mt-root", str(mt), "--weights",
                         "none", "--categories", RGB_CATEGORY, "--train", "4", "--test", "1",
                         "--mt-free", "6", "--mt-test", "1", "--resize", "64", "--crop", "64",
                         "--work", str(work)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "check_cuda: OK" in out
    for name in ("run/synthetic/metrics.json", "runs/synthetic/resnet18-d100/metrics.json",
                 "runs/synthetic/wide_resnet50_2-d550/metrics.json", "ablations/n_features.csv",
                 "ablations/protocol.csv", "beyond/nonaligned.csv", "beyond/efficientnet.csv",
                 "beyond/magnetic_tile/metrics.csv"):  # fmt: skip
        assert name in out, f"{name} not compared"
    for command in (f"run {RGB_CATEGORY}", "ablations", "beyond", "reproduce"):
        assert command in out
    assert not list((work / "results-checked" / "book").rglob("*.ipynb")), "--no-pages executed a notebook"


def _results(root: Path, pro: float) -> Path:
    run = root / "runs" / "bottle" / f"resnet18-d100-{abs(hash(pro)) % 997}"
    run.mkdir(parents=True)
    run.joinpath("metrics.json").write_text(json.dumps({
        "image_auroc": 0.9, "pixel_auroc": 0.95, "pro": pro, "per_defect_image_auroc": {"crack": 0.8},
        "intervals": {"pro": {"estimate": pro, "low": pro - 0.01, "high": pro + 0.01, "n_resamples": 1000}},
        "timings": {"fit_s": pro * 100}}))  # fmt: skip
    (root / "ablations").mkdir()
    (root / "ablations" / "sigma.csv").write_text(
        "experiment,category,variant,sigma,image_auroc,pixel_auroc,pro,seconds,embeddings_key\n"
        f"sigma,bottle,sigma 4,4.0,0.9,0.95,{pro},{pro * 7},k{pro}\n")
    return root


def test_compare_reports_a_difference_over_the_tolerance(tmp_path: Path) -> None:
    check = _script()
    a, same, off = (_results(tmp_path / n, pro) for n, pro in (("a", 0.9), ("b", 0.90005), ("c", 0.9002)))
    lines, problems = check.compare(a, same, 1e-4)
    assert problems == [] and len(lines) == 2
    lines, problems = check.compare(a, off, 1e-4)
    assert len(problems) == 5  # pro, its interval's estimate, low and high; the sigma row's pro
    assert all("differs by 2.00e-04" in p for p in problems[:1])
    (off / "ablations" / "sigma.csv").unlink()
    _, problems = check.compare(a, off, 1e-4)
    assert any("ablations/sigma.csv: on one device only" in p for p in problems)
