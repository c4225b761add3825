"""The verdict rules of the Claims page, on synthetic numbers, and the same-scope means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from padim_repro.study import claims as C
from padim_repro.study import evidence as E
from padim_repro.study import verdicts as V


@pytest.mark.parametrize(("ours", "low", "high", "paper", "verdict"), [
    (0.2, -0.3, 0.7, 0.3, V.REPRODUCED),        # neither shows a difference
    (0.2, -0.3, 0.7, 3.2, V.NOT_REPRODUCED),    # the paper's PCA gap, none found here: 3.2 beyond the interval
    (0.2, -1.0, 4.0, 3.2, V.PARTLY),            # inconclusive: the interval holds 0 and the paper's gap
    (-1.5, -2.5, -0.5, 2.0, V.NOT_REPRODUCED),  # reversed
    (1.9, 1.0, 2.8, 2.3, V.REPRODUCED),         # same direction, comparable size
    (0.8, 0.6, 1.0, 4.0, V.PARTLY),             # same direction, less than half
    (1.2, 0.9, 1.5, 0.1, V.PARTLY),             # a difference the paper does not show
    (0.3, 0.2, 0.4, 0.3, V.REPRODUCED),         # the paper's small difference lies within ours
    (-6.5, -8.2, -4.5, -19.0, V.PARTLY),
    (-3.2, -3.9, -2.6, -5.3, V.REPRODUCED),
    (float("nan"), -1.0, 1.0, -5.3, V.NOT_TESTABLE),  # an aligned value missing is no reversal
    (0.2, float("nan"), float("nan"), 3.2, V.NOT_TESTABLE),  # no interval: nothing to judge a difference by
])  # fmt: skip
def test_difference_verdict_reads_the_interval(ours: float, low: float, high: float, paper: float,
                                               verdict: str) -> None:  # fmt: skip
    assert V.difference_verdict(ours, low, high, paper)[0] == verdict


def test_value_verdict_uses_the_interval_widened_by_the_floor() -> None:
    assert V.value_verdict(98.2, 97.8, 98.6, 98.1)[0] == V.REPRODUCED
    assert V.value_verdict(98.2, 97.8, 98.6, 99.0)[0] == V.REPRODUCED  # 0.4 beyond the interval, within the floor
    v, why = V.value_verdict(98.2, 97.8, 98.6, 99.2)
    assert v == V.NOT_REPRODUCED and "lower" in why
    assert V.value_verdict(98.2, np.nan, np.nan, 98.5)[0] == V.REPRODUCED  # no interval: the floor alone
    assert V.value_verdict(98.2, np.nan, np.nan, 99.0)[0] == V.NOT_REPRODUCED


def test_combine_and_scope_both_ways() -> None:
    assert V.combine([V.REPRODUCED, V.REPRODUCED]) == V.REPRODUCED
    assert V.combine([V.NOT_REPRODUCED, V.NOT_TESTABLE]) == V.NOT_REPRODUCED
    assert V.combine([V.REPRODUCED, V.NOT_REPRODUCED]) == V.PARTLY
    assert V.combine([V.NOT_TESTABLE]) == V.NOT_TESTABLE
    # Part of the scope is said in the verdict, positive or negative alike; never for the full scope.
    assert V.scoped(V.REPRODUCED, 4, 15) == "reproduced on 4 of 15"
    assert V.scoped(V.NOT_REPRODUCED, 4, 15) == "not reproduced on 4 of 15"
    assert V.scoped(V.NOT_REPRODUCED, 15, 15) == V.NOT_REPRODUCED
    assert V.scoped(V.NOT_TESTABLE, 4, 15) == V.NOT_TESTABLE
    assert [V.verdict_kind(V.scoped(v, 4, 15)) for v in (V.REPRODUCED, V.PARTLY, V.NOT_REPRODUCED)] == [
        V.REPRODUCED, V.PARTLY, V.NOT_REPRODUCED]


def test_ratio_verdict() -> None:
    assert V.ratio_verdict(30.0, 22.4)[0] == V.REPRODUCED
    assert V.ratio_verdict(1.2, 4.1)[0] == V.NOT_REPRODUCED
    assert V.ratio_verdict(float("nan"), 4.1)[0] == V.NOT_TESTABLE


def test_a_difference_carries_the_weakest_mark_of_its_values() -> None:
    assert E.reference.weakest("S2", "S1") == "S1" and E.reference.weakest("R", "S2") == "S2"
    assert E.reference.weakest("T", "R") == "R"
    # C4's paper difference: Rd100 (S2) against PCA100 (S1) is S1.
    claim = C.claim_pca(_NoEvidence())
    assert "+3.2 (S1)" in claim.evidence and "+4.8 (S1)" in claim.evidence


class _NoEvidence:
    """Evidence with no result at all: the claims still state the paper's side."""

    results = "/nonexistent"
    ablations = {name: pd.DataFrame() for name in ("n_features", "pca", "layers", "sigma")}

    def link(self, doc: str, text: str) -> str:
        return text


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
    # bottle's pixel AUROC is the paper's: one published cell, said in the verdict
    assert [c.verdict for c in items][:2] == [f"{V.REPRODUCED} on 1 published cell", V.NOT_TESTABLE]
    assert all(c.verdict in (V.NOT_TESTABLE, V.FINDING) for c in items[2:])  # no ablation, experiment, benchmark


def test_cost_claim_judges_the_papers_ratios() -> None:
    """C8 judges what the paper claims about cost, ratios of its own figures, against the same ratios measured here on
    one machine (read from the Cost page's rows); the absolute figures are shown without a verdict."""
    from types import SimpleNamespace

    from test_display import _core

    core = _core()
    for w in core["wr50_fit"]:
        w["predict_per_image_s"] = 0.05
    claim = C.claim_cost(SimpleNamespace(bench=core, link=lambda doc, text: text))
    lines = {line.split("|")[1].strip(): line for line in claim.evidence.splitlines() if line.startswith("| ")}
    inference = lines["inference time, WR50-Rd550 / R18-Rd100"]  # 50 ms / 11.18 ms = 4.5 against 0.95 / 0.23 = 4.1
    assert "| 4.1 (S2) | 4.5 | reproduced |" in inference
    assert f"| {V.NOT_TESTABLE} |" in lines["inference time, SPADE-WR50 / PaDiM-WR50-Rd550"]
    assert "| 382 |" in lines["training per category, WR50-Rd550 (400 images, s)"]  # shown, not judged
    assert claim.verdict == "reproduced on 2 of 4 ratios"


def test_conclusions_and_the_upsampling_note_say_what_is_missing(tmp_path) -> None:
    """Before any experiment, every page's conclusion names the command that computes it (never a number)."""
    from padim_repro.study import conclusions as K

    for page, (_, command, _) in K.PAGES.items():
        assert command in K.conclusion(page, tmp_path), page
    assert "make ablations" in K.upsampling_markdown(tmp_path)
