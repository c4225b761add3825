"""How the book's tables are shown (padim_repro.study.display), the check every executed notebook of the tests goes
through (:func:`notebook_problems`: no NaN, no scientific notation), and the Cost page on bench figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from padim_repro.study import cost as C
from padim_repro.study import display as D
from padim_repro.study import report as R
from padim_repro.study.html_check import SCIENTIFIC, cell_problem, table_rows
from padim_repro.study.notebooks import execute

#: A missing value written out in text (Markdown or printed), as a word.
_MISSING_WORD = re.compile(r"\b(nan|NaN|None|NaT)\b|<NA>")


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def output_problems(output: dict) -> list[str]:
    """The problems of one output of an executed notebook: the cells of its HTML tables that show a missing value
    or scientific notation (:func:`~padim_repro.study.html_check.cell_problem`); in text shown as such (Markdown,
    printed text, plain text without an HTML form), a missing value anywhere, and scientific notation in the rows of
    Markdown tables (prose may quote a constant of code, ``1e-5``, as the book's check allows)."""
    data = output.get("data", {})
    if "text/html" in data:
        return [cell for row in table_rows(_text(data["text/html"])) for cell in row if cell_problem(cell)]
    texts = [_text(data[k]) for k in ("text/markdown", "text/plain") if k in data]
    if output.get("output_type") == "stream" and output.get("name") == "stdout":
        texts.append(_text(output["text"]))
    rows = [line for t in texts for line in t.splitlines() if line.lstrip().startswith("|")]
    return ([m.group(0) for t in texts for m in _MISSING_WORD.finditer(t)]
            + [m.group(0) for line in rows for m in SCIENTIFIC.finditer(line)])


def notebook_problems(path: Path) -> list[str]:
    """``"NOTEBOOK cell N: TEXT"`` for every problem (:func:`output_problems`) of an executed notebook's outputs;
    empty when every table and text it shows is clean."""
    nb = json.loads(Path(path).read_text())
    return [f"{Path(path).name} cell {i}: {p}" for i, cell in enumerate(nb["cells"]) for o in cell.get("outputs", [])
            for p in output_problems(o)]  # fmt: skip


def assert_readable(*paths: Path) -> None:
    """Every notebook executed, without an error and with no problem (:func:`notebook_problems`)."""
    for path in paths:
        nb = json.loads(Path(path).read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[0].get('evalue')}"
        problems = notebook_problems(path)
        assert not problems, problems


# -- the formats -------------------------------------------------------------------------------------------------
def test_cells_are_formatted() -> None:
    assert D.percent(0.99683) == "99.7" and D.percent(0.99683, 2) == "99.68" and D.percent(np.float32("nan")) == "—"
    assert D.signed(0.34) == "+0.3" and D.signed(-1.24) == "−1.2" and D.signed(0.01) == "±0.0" and D.signed(None) == "—"
    assert D.interval(0.989, 0.999) == "[98.9, 99.9]" and D.interval(None, 0.9) == "—"
    assert D.sourced(98.3, "S2") == "98.3 (S2)" and D.sourced(np.nan, "S2") == "—"
    assert D.mean_std(96.84, 0.12) == "96.8 ± 0.1" and D.mean_std(96.84, np.nan) == "96.8" and D.mean_std(None) == "—"
    assert D.is_missing(pd.NA) and D.is_missing("") and not D.is_missing(0) and not D.is_missing([np.nan, 1.0])


def test_table_has_no_index_counts_without_decimals_and_dashes_explained() -> None:
    df = pd.DataFrame({"category": ["bottle", "pill"], "n": [3, 4], "AUROC": [0.9968, np.nan], "ok": [True, False]},
                      index=[7, 8])  # fmt: skip
    styler = D.table(df, {"AUROC": D.percent})
    assert styler.data.values.tolist() == [["bottle", "3", "99.7", "yes"], ["pill", "4", "—", "no"]]
    html = styler.to_html()
    assert ">7<" not in html and "td.col2" in html  # no index; the numeric column is right-aligned
    shown = D.noted(styler, D.dash_note(styler, {"AUROC": "not run"}), None)
    assert shown.notes == ("— : not run",) and "— : not run" in shown._repr_html_() and "— : not run" in repr(shown)
    assert D.dash_note(D.table(df.iloc[:1], {"AUROC": D.percent}), {"AUROC": "not run"}) is None


def test_a_delta_with_its_interval_may_wrap_before_the_interval_only() -> None:
    """A Δ column with intervals fits a narrow page: its cells may wrap between the delta and the interval, never
    inside the interval (a no-break space after its comma); other numeric columns never wrap."""
    cell = D.signed_with_interval(1.26, 0.44, 2.03)
    assert cell == "+1.3 [+0.4,\u00a0+2.0]" and D.signed_with_interval(1.26) == "+1.3"
    assert D.signed_with_interval(None, 0.1, 0.2) == "—" and D.signed_interval(None, 0.2) == ""
    html = D.table(pd.DataFrame({"variant": ["a", "b"], "ours": ["91.3", "90.2"], "Δ": [cell, "—"]})).to_html()
    css = {m[0]: m[1] for m in re.findall(r"td\.(col\d) \{[^}]*white-space: (\w+)", html)}
    assert css == {"col1": "nowrap", "col2": "normal"}


def test_multiindex_columns_match_their_notes() -> None:
    df = pd.DataFrame({("category", ""): ["bottle"], ("PRO", "ours"): ["94.7"], ("PRO", "paper"): [D.DASH]})
    styler = D.table(df)
    assert D.dash_note(styler, {"paper": "not published", "ours": "not run"}) == "— : not published"
    both = D.Tables([D.noted(styler), D.noted(styler, "a note")])
    assert both._repr_html_().count("<table") == 2 and "a note" in repr(both)


def test_output_check_finds_nan_and_scientific_notation() -> None:
    html = "<table><tr><td>nan</td><td>8.0e-02</td></tr></table><p>1e-5 in prose</p>"
    assert output_problems({"output_type": "execute_result", "data": {"text/html": html}}) == ["nan", "8.0e-02"]
    markdown = {"output_type": "display_data", "data": {"text/markdown": "a drop of nan points, eps 1e-5\n\n"
                                                                         "| a |\n|--:|\n| 3.2e-07 |"}}  # fmt: skip
    assert output_problems(markdown) == ["nan", "3.2e-07"]
    assert output_problems({"output_type": "stream", "name": "stdout", "text": ["d = None\n"]}) == ["None"]
    clean = {"output_type": "execute_result", "data": {"text/html": D.table(pd.DataFrame({"a": [np.nan]})).to_html(),
                                                       "text/plain": "<Styler at 0x7f3e5a>"}}  # fmt: skip
    assert output_problems(clean) == []


# -- the Cost page -----------------------------------------------------------------------------------------------
def _core() -> dict:
    """A core.json as bench/bench_core.py writes it (figures of a small machine)."""
    r18 = {"category": "bottle", "weights": "w.pth", "n_train": 209, "n_test": 83, "fit_ratio": 1.31,
           "fit_ratio_rounds": [1.3, 1.31, 1.35], "fit_s": 5.94,
           "fit_breakdown_s": {"backbone_s": 2.39, "gaussian_s": 3.24},
           "predict_ratio": 1.12, "predict_ratio_rounds": [1.1, 1.12], "predict_per_image_s": 0.01118,
           "predict_breakdown_s": {"backbone_s": 0.796, "mahalanobis_s": 0.0722, "upsample_blur_s": 0.0049},
           "backbone_per_image_s": 0.0087, "batch_size": 8, "precision_rel_error_max": 3.2e-07,
           "model_size_mb": 121.0, "peak_rss_mb": 2235.3, "threads": 2}  # fmt: skip
    wr50 = [{"n_images": n, "d": 550, "n_channels_total": 1792, "grid": [56, 56], "fit_s": s, "backbone_s": b,
             "fit_ratio": s / b, "fit_breakdown_s": {"backbone_s": b}, "model_size_mb": 3625.36, "peak_rss_mb": 6029.5}
            for n, s, b in ((200, 253.7, 180.2), (400, 382.0, 300.1))]  # fmt: skip
    return {"measured_at": "2026-11-28T13:18:23+0000", "versions": {"torch": "2.14.1"}, "git_commit": "abc",
            "machine": {"cpu": "Intel(R) Xeon(R) Processor (family 6, model 106)", "cpu_count": 2},
            "r18": r18, "run": {"peak_rss_mb": 1300.0, "imports_rss_mb": 780.0, "wall_s": 41.0}, "wr50_fit": wr50,
            "targets": {"r18_fit_ratio": 1.5, "r18_predict_ratio": 1.15, "wr50_fit_ratio": 2.0, "wr50_peak_rss_gb": 8.0,
                        "run_peak_rss_gib": 1.0}}  # fmt: skip


def _anomalib() -> dict:
    pair = {"ratio_anomalib_over_ours_per_pair": [2.77, 2.67], "ratio_median": 2.72}
    return {"category": "bottle", "weights": "w.pth", "pairs": [],
            "summary": {"inference_s_per_image": {"ours_median": 0.0116, "anomalib_median": 0.0311, **pair},
                        "fit_s": {"ours_median": 5.38, "anomalib_median": 6.61, **pair},
                        "peak_rss_mb": {"ours_median": 2398.6, "anomalib_median": 2225.8, **pair}},
            "metrics": {"image_auroc": {"ours": 0.99683, "anomalib": 0.99841}},
            "notes_anomalib": ["Preprocessing: done outside anomalib.", "Channel choice: its own seed."]}  # fmt: skip


def test_cost_table_sets_ours_beside_the_paper() -> None:
    shown = C.paper_cost_table(_core()).data.set_index("quantity")
    assert shown.loc["inference per image, R18-Rd100 (ms)", "paper"] == "230 (S2)"
    assert shown.loc["inference per image, R18-Rd100 (ms)", "ours"] == "11"
    assert "i7-4710HQ" in shown.loc["inference per image, R18-Rd100 (ms)", "paper: measured on"]
    assert shown.loc["inference per image, R18-Rd100 (ms)", "ours: measured on"].startswith("Intel(R) Xeon(R)")
    assert shown.loc["model size, WR50-Rd550 (GB)", ["paper", "ours"]].tolist() == ["3.8 (S2)", "3.80"]
    assert shown.loc["model size, R18-Rd100 (GB)", ["paper", "ours"]].tolist() == ["0.17 (S2)", "0.13"]
    wr50_training = shown.loc["training per category, WR50-Rd550 (400 images, s)"]  # the larger of the two fits
    assert "6154" in wr50_training["paper: measured on"] and wr50_training["ours"] == "382"
    r18 = C.r18_cost_table(_core()).data.set_index("quantity")
    assert r18.loc["precision vs float64, max relative error (ppm)", "value"] == "0.320"
    assert r18.loc["fit / backbone forward", "value"] == "1.31"
    # The engineering figures (targets, the memory floor) live in bench/README.md, not on the readers' page.
    assert list(r18.columns) == ["value"] and not r18.index.str.contains("floor|imports").any()
    assert shown.loc["inference per image, WR50-Rd550 (ms)", "ours"] == "—"  # an older bench timed no WR50 inference


def test_wr50_table_shows_inference_where_measured_and_no_engineering_columns() -> None:
    core = _core()
    core["wr50_fit"][1].update(predict_per_image_s=0.0512, fit_system_s=16.5, first_touch_s_per_gib=2.92)
    shown = C.wr50_cost_table(core).data  # rows: 200, then 400 images
    assert shown["inference per image (ms)"].tolist() == ["—", "51"]
    assert not any("kernel" in c or "fresh" in c for c in shown.columns)
    row = C.paper_cost_table(core).data.set_index("quantity").loc["inference per image, WR50-Rd550 (ms)"]
    assert row[["paper", "ours"]].tolist() == ["950 (S2)", "51"]  # the larger fit's inference


def test_anomalib_notes_keep_their_characters_in_markdown() -> None:
    """Markdown read "PadimModel.__init__" as bold "init" and "2*int(4*sigma" as italics: the notes are escaped."""
    import markdown_it

    notes = C.anomalib_notes({"notes_anomalib": ["in PadimModel.__init__, kernel 2*int(4*sigma+0.5)+1"]})
    text = markdown_it.MarkdownIt().render(notes)
    assert "PadimModel.__init__" in text and "2*int(4*sigma+0.5)+1" in text and "<em>" not in text


def _bench(folder: Path, core: dict | None, cmp: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    for name, figures in (("core.json", core), ("anomalib_vs_ours.json", cmp)):
        if figures is not None:
            (folder / name).write_text(json.dumps(figures))
    return folder


def test_cost_page_executes(tmp_path: Path) -> None:
    """The Cost notebook on bench figures as bench/bench_core.py and bench/compare_anomalib.py write them, without
    the sections an older bench or ``--skip-wr50`` leaves out, and before any bench."""
    out = execute("cost", tmp_path / "book" / "cost.ipynb", {"bench_dir": str(_bench(tmp_path / "b", _core(),
                                                                                            _anomalib()))})
    assert_readable(out)
    html = out.read_text()
    assert "Intel(R) Xeon(R) Processor" in html and "i7-4710HQ" in html and "Channel choice: its own seed." in html
    partial = {k: v for k, v in _core().items() if k not in ("wr50_fit", "machine", "targets", "run")}
    assert_readable(execute("cost", tmp_path / "book" / "partial.ipynb", {"bench_dir": str(_bench(tmp_path / "p",
                                                                                                  partial))}))
    pending = execute("cost", tmp_path / "book" / "pending.ipynb", {"bench_dir": str(tmp_path / "none")})
    assert_readable(pending)
    assert "make bench" in pending.read_text()
    assert "no GPU was available" in _outputs(out)


def _outputs(page: Path) -> str:
    """The text of an executed notebook's outputs (not its code)."""
    cells = json.loads(page.read_text())["cells"]
    return "\n".join(str(o.get("data", o.get("text", ""))) for c in cells for o in c.get("outputs", []))


def _core_cuda() -> dict:
    """A core_cuda.json as ``bench/bench_core.py --device cuda`` writes it."""
    core = _core()
    core["r18"] |= {"fit_s": 0.021, "fit_ratio": 1.62, "predict_per_image_s": 0.00011, "predict_ratio": 1.31,
                    "batch_size": 32, "device": "cuda", "fit_gpu_peak_mb": 900.0}  # fmt: skip
    core["wr50_fit"] = [{**w, "fit_gpu_peak_mb": 6100.0, "predict_ratio": 1.4, "predict_n_images": 83}
                        for w in core["wr50_fit"]]  # fmt: skip
    return {**core, "device": "cuda", "gpu": "NVIDIA H200", "run": {"wall_s": 8.2}}


def test_cost_page_shows_the_gpu_figures_beside_the_cpus(tmp_path: Path) -> None:
    shown = C.gpu_cost_table(_core_cuda()).data.set_index("quantity")["value"]
    assert shown["R18-Rd100 fit / backbone forward"] == "1.62" and shown["R18-Rd100 inference per image (ms)"] == "0.11"
    assert shown["WR50-Rd550 fit of 200 images, GPU memory peak (GB)"] == "6.40"
    bench = _bench(tmp_path / "b", _core(), _anomalib())
    (bench / "core_cuda.json").write_text(json.dumps(_core_cuda()))
    out = execute("cost", tmp_path / "book" / "cost.ipynb", {"bench_dir": str(bench)})
    assert_readable(out)
    shown = _outputs(out)
    assert "NVIDIA H200" in shown and "no GPU was available" not in shown


# -- the results tables ------------------------------------------------------------------------------------------
def _record(**extra: object) -> dict:
    """A bottle run's metrics.json as runs.py writes it (values of the real run), with ``extra`` fields replaced."""
    bounds = {m: {"estimate": v, "low": v - 0.01, "high": min(1.0, v + 0.01), "n_resamples": 1000, "n_skipped": 0}
              for m, v in (("image_auroc", 0.9968), ("pixel_auroc", 0.9819), ("pro", 0.947), ("image_f1_max", 0.984),
                           ("image_ap", 0.999), ("pixel_f1_max", 0.71))}  # fmt: skip
    return {"category": "bottle", "backbone": "resnet18", "image_auroc": 0.9968, "pixel_auroc": 0.9819, "pro": 0.947,
            "image_f1_max": 0.984, "image_ap": 0.999, "pixel_f1_max": 0.71, "pixel_ap": 0.7412, "undefined": {},
            "intervals": {"method": "stratified image bootstrap, percentile interval", "n_resamples": 1000, "seed": 0,
                          "level": 0.95, **bounds},
            "weights": {"file": "r18.pth", "file_sha256": "c57f" * 16, "fingerprint": "f3ce"},
            "timings": {"fit_s": 33.727, "predict_s": 6.437, "predict_per_image_s": 0.07756, "metrics_s": 1.298,
                        "bootstrap_s": 4.2, "total_s": 41.537},
            "machine": {"cpu": "Intel(R) Xeon(R) Processor"}, **extra}  # fmt: skip


def test_category_tables() -> None:
    shown = R.metrics_table(_record()).data.set_index("metric")
    assert shown.loc["pixel AUROC"].tolist() == ["98.19", "[97.19, 99.19]", "98.1 (S1)", "98.1", "98.3"]
    assert shown.loc["PRO", "xiahaifeng1995"] == "—" and shown.loc["image AUROC", "paper"] == "—"
    beyond = R.thresholded_table(_record())
    assert beyond.data.set_index("metric").loc["pixel AP"].tolist() == ["74.12", "—"]
    assert any("pixel AP gets no interval" in n for n in beyond.notes)
    prov = R.provenance_table(_record()).data.set_index("item")["value"]
    assert prov["weights sha256"] == "c57f" * 16 and prov["CPU"] == "Intel(R) Xeon(R) Processor"
    assert prov["fit"] == "33.7 s" and prov["inference"] == "6.4 s (78 ms per image)"
    old = {k: v for k, v in _record().items() if k not in ("intervals", "undefined", "machine", "pixel_ap")}
    assert any("recorded before the bootstrap intervals" in n for n in R.metrics_table(old).notes)
    undefined = _record(image_auroc=None, undefined={"image_auroc": "no good test image"})
    assert R.metrics_table(undefined).data.iloc[0, 1] == "—"
    assert any("image AUROC is undefined on this test set (no good test image)" in n
               for n in R.metrics_table(undefined).notes)


def test_summary_tables() -> None:
    """Per category, in % with signed deltas, on a bottle run (the paper gives its pixel
    AUROC) and a carpet not run."""
    done = {"category": "bottle", "backbone": "resnet18", "group": "object", "status": "ran", "reason": "",
            **R.record_values(_record())}  # fmt: skip
    runs = pd.DataFrame([done, {"category": "carpet", "backbone": "resnet18", "group": "texture",
                                "status": "not run", "reason": "data absent (no carpet under data)"}])  # fmt: skip
    (image, pixel, pro) = R.per_category_display(R.comparison_table(runs), "resnet18").tables
    row = pixel.data.iloc[0]
    assert row[("paper", "%")] == "98.1 (S1)" and row[("paper", "Δ")] == "+0.1" and row[("anomalib", "Δ")] == "−0.1"
    assert row[("ours", "95 % interval")] == "[97.2, 99.2]" and pixel.data.shape[0] == 1
    assert ("xiahaifeng1995", "%") not in pro.data.columns  # neither reproduction reports PRO
    assert R.thresholded_display(runs, "resnet18").data.iloc[0][("pixel AP", "ours")] == "74.1"
    assert R.not_run_display(runs).data.iloc[0]["reason"] == "data absent (no CATEGORY under data)"
    assert R.coverage_display(runs).data.set_index("category").loc["carpet", "resnet18"] == "not run: data absent"
