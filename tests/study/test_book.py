"""The Jupyter Book: table of contents from the files present, builds with and without results, rendering.

The main fixture runs the whole reproduction driver on one small synthetic category (random ResNet-18 weights,
64 px images) into a temporary copy of the book's sources, then builds that book once (module scope); the tests
read the HTML it produced. A browser check renders pages in headless Chromium when it is installed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from padim_repro.study.book import (
    MATHJAX_PATH,
    build_book,
    category_title,
    mathjax_source,
    toc_yaml,
    write_generated,  # fmt: skip
)
from padim_repro.study.synthetic import make_synthetic_category

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_SRC = REPO_ROOT / "book"
#: Outputs of runs and builds: a copy of the book gets only the hand-written sources.
RUN_OUTPUTS = ("_build", "results", "ablations", "beyond", "cost.ipynb", "_generated", "_toc.yml", ".*.partial.ipynb")


def _ignore_run_outputs(folder: str, names: list[str]) -> set[str]:
    return shutil.ignore_patterns(*RUN_OUTPUTS)(folder, names)


def copy_book_sources(dst: Path, short_api: bool = False) -> Path:
    """Copy the book's hand-written sources (no build, no run outputs) to ``dst``.

    ``short_api``: keep only the API pages of the modules the hand-written pages link to, for a shorter build
    (the module fixture builds the full API).
    """
    shutil.copytree(BOOK_SRC, dst, ignore=_ignore_run_outputs)
    if short_api:
        # What the hand-written pages, the API index and the package docstring (on the index) refer to.
        sources = [*dst.glob("*.md"), dst / "api" / "index.md", REPO_ROOT / "padim_repro" / "__init__.py"]
        referenced = set(re.findall(r"padim_repro(?:\.\w+)+", "".join(p.read_text() for p in sources)))
        pages = {api: re.findall(r"automodule:: (\S+)", api.read_text()) for api in (dst / "api").glob("*.md")}
        kept: set[Path] = set()
        while True:  # a kept page's docstrings refer to more modules: keep their pages too
            new = {api for api, modules in pages.items() if api.stem != "index" and api not in kept
                   and any(r == m or r.startswith(m + ".") for r in referenced for m in modules)}  # fmt: skip
            if not new:
                break
            kept |= new
            for module in (m for api in new for m in pages[api]):
                source = REPO_ROOT / Path(*module.split("."))
                source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
                referenced |= set(re.findall(r"padim_repro(?:\.\w+)+", source.read_text()))
        for api in pages:
            if api.stem != "index" and api not in kept:
                api.write_text(f"# {api.stem}\n\nNot built in this test.\n")
    return dst


def _html(book: Path, page: str) -> str:
    return (book / "_build" / "html" / f"{page}.html").read_text(encoding="utf-8")


def _text(book: Path, page: str) -> str:
    """The visible text of a built page (tags removed, entities decoded, whitespace collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", _html(book, page))).split())


@pytest.fixture(scope="module")
def synthetic_book(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A reproduction on one synthetic category, and the book built from it (once for the module)."""
    from padim_repro.study.reproduce import reproduce

    tmp = tmp_path_factory.mktemp("book")
    make_synthetic_category(tmp / "data", size=64)
    book = copy_book_sources(tmp / "book")
    t0 = time.perf_counter()
    statuses = reproduce(tmp / "data", tmp / "results", {"resnet18": "none"}, backbones=("resnet18",),
                         book_dir=book, extra_parameters={"resize": 64, "crop": 56})  # fmt: skip
    t_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    code = build_book(tmp / "results", book)
    print(f"synthetic reproduction {t_run:.1f} s, book build {time.perf_counter() - t0:.1f} s")
    (run,) = [s for s in statuses if s.status == "ran"]
    metrics = json.loads((tmp / "results" / run.run_dir / "metrics.json").read_text())
    return {"tmp": tmp, "book": book, "code": code, "statuses": statuses, "metrics": metrics}


def test_toc_from_files_present(tmp_path: Path) -> None:
    """The pages of the runs that succeeded become sections of the summary, in backbone then MVTec order; a failed
    run's page (left by an earlier run) and partial notebooks are left out."""
    book = tmp_path / "book"
    (book / "results").mkdir(parents=True)
    (book / "ablations").mkdir()
    runs = [("pill", "resnet18", "ran"), ("metal_nut", "wide_resnet50_2", "reused"), ("carpet", "resnet18", "ran"),
            ("bottle", "resnet18", "failed")]  # fmt: skip
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "status.json").write_text(json.dumps({"runs": [
        {"category": c, "backbone": b, "status": s, "notebook": f"results/{c}_{b}.ipynb" if s != "failed" else ""}
        for c, b, s in runs]}))  # fmt: skip

    def notebook(path: Path, title: str, params: dict | None = None) -> None:
        nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n", "text"]}],
              "metadata": {"papermill": {"parameters": params or {}}}, "nbformat": 4, "nbformat_minor": 5}
        path.write_text(json.dumps(nb))

    notebook(book / "results" / "summary.ipynb", "Results against the paper")
    notebook(book / "results" / "pill_resnet18.ipynb", "x", {"category": "pill", "backbone": "resnet18"})
    notebook(book / "results" / "metal_nut_wide_resnet50_2.ipynb", "x")
    notebook(book / "results" / "carpet_resnet18.ipynb", "x", {"category": "carpet", "backbone": "resnet18"})
    notebook(book / "results" / "bottle_resnet18.ipynb", "x")  # its run failed this time: not a page
    notebook(book / "ablations" / ".ablation_layers.partial.ipynb", "x")  # still running: not a page
    notebook(book / "ablations" / "layers.ipynb", "Table I: which layers")
    toc = toc_yaml(book, tmp_path / "results")

    order = [toc.index(f'"results/{s}"') for s in ("summary", "carpet_resnet18", "pill_resnet18",
                                                    "metal_nut_wide_resnet50_2")]  # fmt: skip
    assert order == sorted(order)
    assert '"metal_nut — Wide-ResNet-50-2"' in toc and '"carpet — ResNet-18"' in toc
    assert "partial" not in toc and "bottle" not in toc
    assert '"ablations/layers"' in toc and '"Table I: which layers"' in toc
    assert '"cost_pending"' in toc and '"beyond_pending"' in toc
    assert '"results_pending"' not in toc and '"ablations_pending"' not in toc
    assert category_title("bottle", "resnet18") == "bottle — ResNet-18"


def test_synthetic_book_builds(synthetic_book: dict) -> None:
    assert synthetic_book["code"] == 0
    site = synthetic_book["book"] / "_build" / "html"
    for page in ("index", "intro", "method", "protocol", "limitations", "rerun", "api/index", "api/gaussian",
                 "api/ablations", "results/summary",
                 "results/synthetic_resnet18", "ablations_pending", "cost_pending", "beyond_pending"):  # fmt: skip
        assert (site / f"{page}.html").is_file(), page
    assert (site / "_modules" / "padim_repro" / "gaussian.html").is_file()  # viewcode: highlighted source


def test_results_pages_show_the_run(synthetic_book: dict) -> None:
    """The numbers of the run's metrics.json appear in the summary (1 decimal) and on its category page."""
    assert synthetic_book["code"] == 0
    m = synthetic_book["metrics"]
    values = [100 * m[k] for k in ("image_auroc", "pixel_auroc", "pro")]
    summary = _html(synthetic_book["book"], "results/summary")
    assert "synthetic" in summary
    for v in values:  # the summary shows pandas' display.precision 1
        assert f"{v:.1f}" in summary, v
    page = _html(synthetic_book["book"], "results/synthetic_resnet18")
    for v in values:  # metrics_table rounds to 2 decimals
        assert f"{v:.2f}" in page or f"{np.round(v, 2):.2f}" in page, v
    assert "synthetic — ResNet-18" in summary  # the section's title in the navigation


def test_method_links_resolve_to_the_api(synthetic_book: dict) -> None:
    assert synthetic_book["code"] == 0
    method = _html(synthetic_book["book"], "method")
    for page, target in (("gaussian", "padim_repro.gaussian.GaussianAccumulator"),
                         ("scoring", "padim_repro.scoring.mahalanobis"), ("scoring", "padim_repro.scoring.anomaly_maps"),
                         ("features", "padim_repro.features.select_channels")):  # fmt: skip
        assert f'href="api/{page}.html#{target}"' in method, target


def test_mathjax_is_served_by_the_book(synthetic_book: dict) -> None:
    """With django-static-mathjax installed the pages load MathJax from the book itself, not from a CDN."""
    assert synthetic_book["code"] == 0
    method = _html(synthetic_book["book"], "method")
    if mathjax_source() is None:
        assert "cdn.jsdelivr.net/npm/mathjax@3" in method  # the fallback
        pytest.skip("django-static-mathjax not installed: the book loads MathJax from its CDN")
    assert f'src="_static/{MATHJAX_PATH}"' in method and "cdn.jsdelivr.net" not in method
    served = synthetic_book["book"] / "_build" / "html" / "_static" / MATHJAX_PATH
    assert served.read_bytes() == mathjax_source().read_bytes()
    assert (served.parent / "LICENSE").is_file()


def test_mathjax_falls_back_to_the_cdn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the package, mathjax_source finds nothing and the extension keeps Sphinx's default (CDN) path."""
    from importlib import metadata
    from types import SimpleNamespace

    from sphinx.ext.mathjax import MATHJAX_URL

    from padim_repro.study import book

    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    assert book.mathjax_source() is None
    config = SimpleNamespace(mathjax_path=MATHJAX_URL)
    book._use_local_mathjax(None, config)
    assert config.mathjax_path == MATHJAX_URL


def test_coverage_and_headline_are_generated(synthetic_book: dict) -> None:
    """The coverage lists the synthetic run and the 15 MVTec AD categories not run; no MVTec run, no headline."""
    limitations = _text(synthetic_book["book"], "limitations")
    assert "1 of 16 (category, backbone) pairs were computed: synthetic (resnet18)" in limitations
    assert "data absent from the data root" in limitations and "carpet" in limitations
    assert "Results pending" in _text(synthetic_book["book"], "intro")
    # Every page carries the commit and CPU of the results it shows.
    assert "Results computed at commit" in _html(synthetic_book["book"], "intro")
    assert "Results computed at commit" in _html(synthetic_book["book"], "claims")


def test_generated_fragments_follow_the_results(synthetic_book: dict, tmp_path: Path) -> None:
    """The scope, headline and claims are rewritten from the results on every build: a synthetic category is no
    MVTec AD category, so there is no headline, and every claim says what it lacks."""
    results = synthetic_book["tmp"] / "results"
    (tmp_path / "_generated").mkdir()
    (tmp_path / "_generated" / "headline.md").write_text("stale\n")
    write_generated(results, tmp_path)
    generated = tmp_path / "_generated"
    assert "no MVTec AD category has been run yet" in (generated / "headline.md").read_text()
    assert "on **0 of the 15** MVTec AD categories" in (generated / "scope.md").read_text()
    claims = (generated / "claims.md").read_text()
    assert len(re.findall(r"^## C\d\. ", claims, re.M)) == 8 and "not testable here" in claims
    assert "1 of 16" in (generated / "coverage.md").read_text()
    write_generated(tmp_path / "none", tmp_path)
    assert "no `make reproduce` has been run yet" in (generated / "scope.md").read_text()


def test_book_before_any_run(tmp_path: Path) -> None:
    """Without results the book still builds, and its results page says they are pending and how to get them."""
    book = copy_book_sources(tmp_path / "book", short_api=True)
    assert build_book(tmp_path / "no-results", book) == 0
    pending = _text(book, "results_pending")
    assert "Results pending" in pending and "make reproduce" in pending
    assert "Results pending" in _text(book, "intro")
    assert "Coverage pending" in _text(book, "limitations")
    assert not (book / "_build" / "html" / "results").exists()


def test_broken_reference_or_unreadable_table_fails_the_build(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """A reference to a padim_repro function that does not exist is an error, not a silent plain-text fallback; so
    is a rendered table cell showing NaN or scientific notation (one build checks both)."""
    book = copy_book_sources(tmp_path / "book", short_api=True)
    with open(book / "rerun.md", "a") as fh:
        fh.write("\nSee {py:func}`padim_repro.scoring.no_such_function`.\n\n| a | b |\n|---|---|\n| nan | 8.0e-02 |\n")
    assert build_book(tmp_path / "no-results", book) != 0
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == 1 and "reference target not found: padim_repro.scoring.no_such_function" in warnings[0]
    bad = [line for line in lines if line.startswith("error: unreadable table cell")]
    assert len(bad) == 2 and "rerun" in bad[0] and any("8.0e-02" in line for line in bad)


# -- browser ------------------------------------------------------------------------------------------------------
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000"]  # fmt: skip
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=90)


def test_pages_render_in_a_browser(synthetic_book: dict, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: run `make browser-deps` (apt-get install chromium)")
    assert synthetic_book["code"] == 0
    site = synthetic_book["book"] / "_build" / "html"
    profile = tmp_path / "chromium-profile"

    index = _chromium(["--dump-dom", (site / "index.html").as_uri()], profile)
    assert index.returncode == 0, index.stderr[-2000:]
    assert "PaDiM: a reproduction report" in index.stdout

    page = _chromium(["--dump-dom", (site / "results" / "synthetic_resnet18.html").as_uri()], profile)
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert "<table" in dom  # the metrics table
    images = [src for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', dom)
              if src.startswith("data:image/png") or src.endswith(".png")]  # fmt: skip
    assert images, "no figure on the category page"
    for src in images:
        if not src.startswith("data:"):
            assert (site / "results" / src).resolve().is_file(), src

    screenshot = synthetic_book["book"] / "_build" / "screenshot.png"
    shot = _chromium([f"--screenshot={screenshot}", "--window-size=1280,1600",
                      (site / "results" / "synthetic_resnet18.html").as_uri()], profile)  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_method_math_renders_in_a_browser(synthetic_book: dict, tmp_path: Path) -> None:
    """The Method page's equations are typeset offline (MathJax 3 from _static/mathjax/): no raw TeX is left."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: run `make browser-deps` (apt-get install chromium)")
    if mathjax_source() is None:
        pytest.skip("django-static-mathjax not installed: the book loads MathJax from its CDN, unreachable offline")
    assert synthetic_book["code"] == 0
    site = synthetic_book["book"] / "_build" / "html"
    page = _chromium(["--dump-dom", (site / "method.html").as_uri()], tmp_path / "chromium-profile")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    source = _html(synthetic_book["book"], "method")
    n_math = source.count('class="math notranslate nohighlight"')  # inline and display, as Sphinx wrote them
    assert n_math > 10
    assert dom.count("<mjx-container") == n_math  # every one typeset
    assert '<g data-mml-node="merror"' not in dom  # no TeX error
    text = re.sub(r"<[^>]+>", "", re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S))
    assert "\\(" not in text and "\\[" not in text  # no delimiter of untypeset TeX left
