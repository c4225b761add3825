"""The verdict rules of the Claims page, on synthetic numbers, and the same-scope means."""

from __future__ import annotations

import numpy as np
import pytest

from padim_repro.study import claims as C
from padim_repro.study import evidence as E
from padim_repro.study import verdicts as V


@pytest.mark.parametrize(("ours", "paper", "noise", "verdict"), [
    (0.2, 0.3, 0.5, V.REPRODUCED),        # neither differs beyond noise
    (0.2, 3.2, 0.5, V.NOT_REPRODUCED),    # the paper's PCA gap, none found here
    (-1.5, 2.0, 0.5, V.NOT_REPRODUCED),   # reversed
    (1.9, 2.3, 0.5, V.REPRODUCED),        # same direction, comparable size
    (0.8, 4.0, 0.5, V.PARTLY),            # same direction, less than half
    (1.2, 0.1, 0.5, V.PARTLY),            # a difference the paper does not show
    (-6.7, -19.0, 1.2, V.PARTLY),
    (-3.4, -5.3, 0.5, V.REPRODUCED),
    (float("nan"), -5.3, 0.5, V.NOT_TESTABLE),  # an aligned value missing is no reversal
])  # fmt: skip
def test_difference_verdict(ours: float, paper: float, noise: float, verdict: str) -> None:
    assert V.difference_verdict(ours, paper, noise)[0] == verdict


def test_value_verdict_uses_the_interval_widened_by_the_floor() -> None:
    assert V.value_verdict(98.2, 97.8, 98.6, 98.1)[0] == V.REPRODUCED
    assert V.value_verdict(98.2, 97.8, 98.6, 99.0)[0] == V.REPRODUCED  # 0.4 beyond the interval, within the floor
    v, why = V.value_verdict(98.2, 97.8, 98.6, 99.2)
    assert v == V.NOT_REPRODUCED and "lower" in why
    assert V.value_verdict(98.2, np.nan, np.nan, 98.5)[0] == V.REPRODUCED  # no interval: the floor alone
    assert V.value_verdict(98.2, np.nan, np.nan, 99.0)[0] == V.NOT_REPRODUCED


def test_noise_level_and_combine() -> None:
    assert V.noise_level(None) == V.FLOOR and V.noise_level(0.1) == V.FLOOR and V.noise_level(0.5) == 1.0
    assert V.combine([V.REPRODUCED, V.REPRODUCED], complete_scope=True) == V.REPRODUCED
    assert V.combine([V.REPRODUCED, V.REPRODUCED], complete_scope=False) == V.PARTLY
    assert V.combine([V.NOT_REPRODUCED, V.NOT_TESTABLE], complete_scope=True) == V.NOT_REPRODUCED
    assert V.combine([V.REPRODUCED, V.NOT_REPRODUCED], complete_scope=True) == V.PARTLY
    assert V.combine([V.NOT_TESTABLE], complete_scope=True) == V.NOT_TESTABLE


def test_reproduction_and_paper_means_are_over_exactly_the_categories_given() -> None:
    cats = ["bottle", "capsule", "pill", "transistor"]
    mean = E.reproduction_mean("xiahaifeng1995", "resnet18", cats, "image_auroc")
    table = E.reference.reproductions()
    values = [E.reference.repro_value(table, "xiahaifeng1995", "resnet18", c, "image_auroc") for c in cats]
    assert mean == pytest.approx(100 * np.mean(values))
    assert E.reproduction_mean("xiahaifeng1995", "resnet18", cats, "pro") is None  # it reports no PRO
    # The paper gives R18 per-category pixel AUROC offline for bottle only: a mean over four does not exist.
    assert E.paper_mean("resnet18", ["bottle"], "pixel_auroc") == (98.1, "S1")
    assert E.paper_mean("resnet18", cats, "pixel_auroc") is None


def _fake_results(root, values: dict[str, float], spread: float = 0.01):
    """A results folder as `make reproduce` leaves it, for two MVTec AD categories (R18 run, WR50 not)."""
    import json

    from padim_repro.study.runs import write_manifest

    rng = np.random.default_rng(0)
    runs = []
    for cat, v in values.items():
        run_dir = f"runs/{cat}/resnet18-d100-x"
        (root / run_dir).mkdir(parents=True)
        rec = {m: v for m in E.METRICS} | {"timings": {"fit_s": 1.0, "predict_per_image_s": 0.01},
                                           "intervals": {m: {"low": v - 0.02, "high": v + 0.02} for m in E.METRICS}}
        (root / run_dir / "metrics.json").write_text(json.dumps(rec))
        np.savez(root / run_dir / "bootstrap.npz", **{m: rng.normal(v, spread, 1000) for m in E.METRICS})
        write_manifest(root / run_dir, "x", {}, [root / run_dir / "metrics.json", root / run_dir / "bootstrap.npz"])
        runs.append({"category": cat, "backbone": "resnet18", "status": "ran", "reason": "", "run_dir": run_dir,
                     "notebook": ""})
        runs.append({"category": cat, "backbone": "wide_resnet50_2", "status": "not run",
                     "reason": "weights unavailable: no hub", "run_dir": "", "notebook": ""})
    (root / "status.json").write_text(json.dumps({"runs": runs, "data_root": "d", "weights": {},
                                                  "git_commit": "abc", "machine": {"cpu": "Test CPU"}}))
    return root


def test_headline_and_claims_from_results(tmp_path) -> None:
    res = _fake_results(tmp_path / "res", {"bottle": 0.98, "pill": 0.90})
    main = E.main_runs(res)
    assert main.categories == ["bottle", "pill"]
    pro = main.means.set_index("metric").loc["pro"]
    assert pro.ours == pytest.approx(94.0) and pro.low < 94.0 < pro.high
    # Two independent categories with sd 1 point each: the mean's 95 % interval is about +-1.96 / sqrt(2) points.
    assert pro.high - pro.low == pytest.approx(2 * 1.96 / np.sqrt(2), rel=0.15)
    headline = E.headline_markdown(res)
    assert "means over the **2** categories run (bottle, pill)" in headline and "| ours, mean | 94.0 |" in headline
    assert "nan" not in headline.lower()
    scope = E.scope_markdown(res)
    assert "**2 of the 15**" in scope and "PaDiM-WR50-Rd550 was not run (weights unavailable" in scope
    items = C.claims(res, tmp_path / "book")
    assert [c.verdict for c in items][:2] == [V.PARTLY, V.NOT_TESTABLE]  # bottle's pixel AUROC is the paper's
    assert all(c.verdict == V.NOT_TESTABLE for c in items[2:])  # no ablation, experiment or benchmark yet


def test_cost_claim_judges_the_cost_page_rows() -> None:
    """C8 reads the Cost page's rows (one source of its numbers, in the page's units) and judges each."""
    from types import SimpleNamespace

    from test_display import _core

    claim = C.claim_cost(SimpleNamespace(bench=_core(), link=lambda doc, text: text))
    lines = {line.split("|")[1].strip(): line for line in claim.evidence.splitlines() if line.startswith("| ")}
    assert "| 11 |" in lines["inference per image, R18-Rd100 (ms)"]
    assert lines["inference per image, R18-Rd100 (ms)"].rstrip(" |").endswith(V.REPRODUCED)
    wr50 = lines["training per category, WR50-Rd550 (400 images, s)"]  # 382 s against the paper's 150
    assert "| 382 |" in wr50 and wr50.rstrip(" |").endswith(V.NOT_REPRODUCED)
    assert lines["inference per image, WR50-Rd550 (ms)"].rstrip(" |").endswith(V.NOT_TESTABLE)
