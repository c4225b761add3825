"""Build the Jupyter Book ``book/`` from whatever results exist (``make book``), without executing anything.

The book's table of contents depends on what has been run: the results notebook executed by
:func:`padim_repro.study.reproduce.reproduce` (``book/results/summary.ipynb``) and one executed category notebook per
category and backbone (``book/results/CATEGORY_BACKBONE.ipynb``), the ablation notebooks (``book/ablations/``,
``make ablations``), the cost notebook (``book/cost.ipynb``) and the experiments beyond the paper
(``book/beyond/``, ``make beyond``). :func:`build_book` writes ``_toc.yml`` from the files present, replacing
each missing part by a page that says which command produces it, writes the generated Markdown fragments the
static pages include (``_generated/coverage.md``; the scope, headline and claims of
:mod:`~padim_repro.study.claims_page`), and runs
``jupyter-book build --warningiserror``: a broken cross-reference (to a page, a section or a ``padim_repro``
function) fails the build.

The equations are typeset by MathJax 3 from the book's own files when the PyPI package ``django-static-mathjax``
(MathJax's static files, Apache-2.0) is installed: this module is also a Sphinx extension (listed in
``_config.yml``) that points ``mathjax_path`` at ``_static/mathjax/`` and copies one file of that package
there, so the book renders its math offline. Without the package the book loads MathJax from its CDN.

Every path is an argument, so the same code builds the repository's book or a copy of it elsewhere (the tests
build into a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import MVTEC_CATEGORIES
from ..storage import write_text
from .claims_page import write_claims
from .html_check import table_problems
from .report import DONE, coverage_table, load_status, runs_frame

#: Display names of the backbones, for page titles.
BACKBONE_TITLES = {"resnet18": "ResNet-18", "wide_resnet50_2": "Wide-ResNet-50-2"}
#: Order of the backbones in the table of contents (others follow, sorted by name).
BACKBONE_ORDER = ("resnet18", "wide_resnet50_2")

#: The API pages (``api/NAME.md``, one per module or subpackage), method first, then the study.
API_PAGES = ("config", "data", "backbones", "features", "gaussian", "scoring", "model", "metrics", "memory", "storage",
             "tiling", "images", "study", "runs", "own_images", "identity", "uncertainty", "reproduce", "download",
             "ablations", "beyond", "report", "claims", "evidence", "verdicts", "cost", "display", "plots", "book",
             "html_check", "provenance", "cli")  # fmt: skip

TOC_FILE = "_toc.yml"
COVERAGE_FILE = Path("_generated") / "coverage.md"

COVERAGE_PENDING = (
    "_Coverage pending: no `make reproduce` has been run yet (there is no `results/status.json`), so nothing "
    "has been computed. See {doc}`rerun` for the commands._\n"
)


@dataclass
class Page:
    """One entry of the table of contents: a source file (without suffix), its title and its subsections."""

    file: str
    title: str | None = None
    sections: list[Page] = field(default_factory=list)


# -- what exists -----------------------------------------------------------------------------------------------
def _executed_notebooks(folder: Path) -> list[Path]:
    """Finished notebooks in ``folder`` (hidden ``.*.partial.ipynb`` files are executions still running)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def notebook_title(path: Path) -> str | None:
    """The text of the first level-1 Markdown heading of a notebook, or None."""
    for cell in _read_notebook(path).get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        for line in (source if isinstance(source, str) else "".join(source)).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return None


def category_title(category: str, backbone: str) -> str:
    """Page title of a category notebook, e.g. ``bottle — ResNet-18``."""
    return f"{category} — {BACKBONE_TITLES.get(backbone, backbone)}" if backbone else category


def category_pages(book_dir: Path, results: str | Path) -> list[Page]:
    """The pages of the runs the last ``make reproduce`` computed or reused (``RESULTS/status.json``), by backbone
    then in MVTec AD order: a failed run's page, or a stray notebook, is never listed."""

    status = load_status(results) or {"runs": []}
    pages = []
    for run in status["runs"]:
        path = book_dir / run["notebook"] if run.get("notebook") else None
        if run["status"] not in DONE or path is None or not path.is_file():
            continue
        category, backbone = run["category"], run["backbone"]
        b_rank = BACKBONE_ORDER.index(backbone) if backbone in BACKBONE_ORDER else len(BACKBONE_ORDER)
        c_rank = MVTEC_CATEGORIES.index(category) if category in MVTEC_CATEGORIES else len(MVTEC_CATEGORIES)
        key = (b_rank, backbone, c_rank, category)
        pages.append((key, Page(Path(run["notebook"]).with_suffix("").as_posix(), category_title(category, backbone))))
    return [page for _, page in sorted(pages, key=lambda kp: kp[0])]


def toc_pages(book_dir: str | Path, results: str | Path) -> list[tuple[str, list[Page]]]:
    """The parts of the book (caption, chapters) given the files present in ``book_dir`` and the status of the runs
    in ``results``."""
    book_dir = Path(book_dir)
    categories = category_pages(book_dir, results)
    if (book_dir / "results" / "summary.ipynb").is_file():
        results = Page("results/summary", "Results against the paper", categories)
    else:
        results = Page("results_pending", "Results (pending)", categories)
    ablations = [Page(f"ablations/{p.stem}", notebook_title(p) or p.stem.replace("_", " "))
                 for p in _executed_notebooks(book_dir / "ablations")]  # fmt: skip
    if (book_dir / "cost.ipynb").is_file():
        cost = Page("cost", notebook_title(book_dir / "cost.ipynb") or "Cost: time and memory")
    else:
        cost = Page("cost_pending", "Cost (pending)")
    beyond = [Page(f"beyond/{p.stem}", notebook_title(p) or p.stem.replace("_", " "))
              for p in _executed_notebooks(book_dir / "beyond")]  # fmt: skip
    howto = [Page(f"howto/{p.stem}", notebook_title(p) or p.stem.replace("_", " "))
             for p in _executed_notebooks(book_dir / "howto")]  # fmt: skip
    return [
        ("Report", [Page("claims", "Claims and verdicts")]),
        ("Method", [Page("method", "Method"), Page("protocol", "Protocol")]),
        ("Results", [results]),
        ("Ablations", ablations or [Page("ablations_pending", "Ablations (pending)")]),
        ("Cost", [cost]),
        ("Beyond the paper", beyond or [Page("beyond_pending", "Beyond the paper (pending)")]),
        ("How-to", howto or [Page("howto_pending", "How-to: PaDiM on your own images (pending)")]),
        ("Limits and reruns", [Page("limitations", "Limitations and coverage"), Page("rerun", "Rerun it")]),
        ("Reference", [Page("api/index", "API", [Page(f"api/{name}") for name in API_PAGES]),
                       Page("bibliography", "References")]),
    ]


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _page_yaml(page: Page, indent: int) -> list[str]:
    pad = " " * indent
    lines = [f"{pad}- file: {_q(page.file)}"]
    if page.title:
        lines.append(f"{pad}  title: {_q(page.title)}")
    if page.sections:
        lines.append(f"{pad}  sections:")
        for sub in page.sections:
            lines += _page_yaml(sub, indent + 4)
    return lines


def toc_yaml(book_dir: str | Path, results: str | Path) -> str:
    """The text of ``_toc.yml`` (sphinx-external-toc ``jb-book`` format) for the files present in ``book_dir``."""
    lines = [
        "# Written by padim_repro.study.book.build_book (`make book`) from the pages present; do not edit by hand.",
        "format: jb-book",
        "root: intro",
        "parts:",
    ]
    for caption, chapters in toc_pages(book_dir, results):
        lines += [f"  - caption: {_q(caption)}", "    chapters:"]
        for page in chapters:
            lines += _page_yaml(page, 6)
    return "\n".join(lines) + "\n"


def write_toc(book_dir: str | Path, results: str | Path) -> Path:
    """Write ``book_dir/_toc.yml`` atomically; returns its path."""
    return write_text(Path(book_dir) / TOC_FILE, toc_yaml(book_dir, results))


# -- generated fragments -----------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|$~])")


def _md(text: Any) -> str:
    """Plain text made inert in MyST Markdown (every markup character backslash-escaped, one line)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _code(text: Any) -> str:
    """Text as an inline code span (no markup is parsed inside one; backticks are dropped)."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def coverage_markdown(results: str | Path) -> str | None:
    """The coverage section of the limitations page from ``RESULTS/status.json``; None before any reproduction.

    A category x backbone grid of what ran and why the rest did not, with the data root, the weights and the
    commit the statuses were written at. Every cell comes from the status file; nothing is filled in.
    """

    status = load_status(results)
    if status is None:
        return None
    runs = runs_frame(results)
    done = runs[runs.status.isin(list(DONE))]
    grid = coverage_table(runs)
    lines = [
        f"Written from {_code(Path(results) / 'status.json')} by `make book`. The last `make reproduce` used the "
        f"data root {_code(status.get('data_root', '?'))} and the weights "
        + ", ".join(f"{_md(b)}: {_code(w)}" for b, w in status.get("weights", {}).items())
        + f" (commit {_code(status.get('git_commit') or 'unknown')}).",
        "",
        f"**{len(done)} of {len(runs)}** (category, backbone) pairs were computed"
        + (": " + ", ".join(f"{_md(r.category)} ({_md(r.backbone)})" for r in done.itertuples()) + "." if len(done)
           else "."),  # fmt: skip
        "",
    ]
    if not grid.empty:
        backbones = list(grid.columns)
        lines += ["| category | " + " | ".join(_md(b) for b in backbones) + " |",
                  "|---|" + "---|" * len(backbones)]  # fmt: skip
        for category, row in grid.iterrows():
            # "not run: data absent (no carpet under ROOT)": the root is given above, the category on the left.
            cells = [_md(re.sub(r" \(no \S+ under .*\)$", "", row[b])) if isinstance(row[b], str) else "—"
                     for b in backbones]  # fmt: skip
            lines.append(f"| {_md(category)} | " + " | ".join(cells) + " |")
        lines.append("")
    not_done = runs[~runs.status.isin(list(DONE))]
    if len(not_done):
        # One line per backbone, status and reason; "data absent (no carpet under ROOT)" differs only by category.
        groups: dict[tuple[str, str, str], list[str]] = {}
        for r in not_done.itertuples():
            reason = "data absent from the data root" if r.reason.startswith("data absent") else r.reason
            groups.setdefault((r.backbone, r.status, reason), []).append(r.category)
        lines += ["Reasons, as recorded:", ""]
        for (backbone, status, reason), categories in groups.items():
            reason = reason if len(reason) <= 300 else reason[:300] + " …"
            lines.append(f"- {_md(backbone)}, {_md(status)} ({', '.join(_md(c) for c in categories)}): {_md(reason)}")
        lines.append("")
    return "\n".join(lines)


def write_generated(results: str | Path, book_dir: str | Path) -> None:
    """Write the fragments the static pages include, from the results as they are now: the coverage (from the
    status file, or a placeholder before any reproduction), and the scope, headline and claims
    (:func:`padim_repro.study.claims_page.write_claims`)."""
    book_dir = Path(book_dir)
    coverage = coverage_markdown(results)
    if coverage is not None:
        write_text(book_dir / COVERAGE_FILE, coverage)
    elif not (book_dir / COVERAGE_FILE).is_file():
        write_text(book_dir / COVERAGE_FILE, COVERAGE_PENDING)
    write_claims(results, book_dir)


# -- MathJax, offline ------------------------------------------------------------------------------------------
#: The PyPI distribution that ships MathJax 3's files (``pip install django-static-mathjax``), and the file of it
#: the book loads: the TeX input with every TeX extension (nothing is loaded on demand) and SVG output (glyphs as
#: paths, no font files), self-contained.
MATHJAX_DISTRIBUTION = "django-static-mathjax"
MATHJAX_FILE = "tex-svg-full.js"
#: Where the file lands in the built HTML, relative to ``_static`` (Sphinx's ``mathjax_path``).
MATHJAX_PATH = f"mathjax/{MATHJAX_FILE}"
MATHJAX_NOTE = (f"note: {MATHJAX_DISTRIBUTION} is not installed, so the book loads MathJax from its CDN and shows "
                f"raw TeX offline (pip install {MATHJAX_DISTRIBUTION})")  # fmt: skip


def mathjax_source() -> Path | None:
    """The installed MathJax file the book serves (``es5/tex-svg-full.js`` of ``django-static-mathjax``), or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MATHJAX_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(f"mathjax/static/mathjax/es5/{MATHJAX_FILE}")))
    return path if path.is_file() else None


def _use_local_mathjax(app: Any, config: Any) -> None:
    # Only the default (CDN) path is replaced: a mathjax_path set in _config.yml wins.
    from sphinx.ext.mathjax import MATHJAX_URL

    if config.mathjax_path == MATHJAX_URL and mathjax_source() is not None:
        config.mathjax_path = MATHJAX_PATH


def _copy_mathjax(app: Any, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html" or app.config.mathjax_path != MATHJAX_PATH:
        return
    source = mathjax_source()
    if source is None:  # uninstalled between config-inited and the end of the build
        raise RuntimeError(MATHJAX_NOTE)
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target / MATHJAX_FILE)
    licence = source.parent.parent / "LICENSE"  # Apache-2.0: the licence travels with the file
    if licence.is_file():
        shutil.copyfile(licence, target / "LICENSE")


#: Environment variable through which :func:`build_book` hands the provenance footer to the Sphinx extension.
FOOTER_ENV = "PADIM_BOOK_FOOTER"


def provenance_footer(results: str | Path) -> str:
    """The footer every page carries: the commit and the CPU of the last ``make reproduce`` (escaped HTML); empty
    before any reproduction."""
    import html

    status = load_status(results)
    if status is None:
        return ""
    commit = status.get("git_commit") or "unknown commit"
    cpu = status.get("machine", {}).get("cpu") or "unknown CPU"
    return (f"<p>Results computed at commit <code>{html.escape(commit)}</code> on {html.escape(cpu)} "
            f"({html.escape(str(status.get('machine', {}).get('cpu_count', '?')))} logical CPUs).</p>")


def _provenance_footer(app: Any, config: Any) -> None:
    footer = os.environ.get(FOOTER_ENV)
    if footer:
        config.html_theme_options = {**(config.html_theme_options or {}), "extra_footer": footer}


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension: serve MathJax from the book's ``_static/mathjax/`` when its package is installed.

    Sets ``mathjax_path`` to ``mathjax/tex-svg-full.js`` (unless ``_config.yml`` sets another path) and copies
    that file, with MathJax's licence, from the installed ``django-static-mathjax`` into the HTML output; without
    the package the default CDN path is left as it is. Also puts the provenance footer of :func:`build_book`
    (commit and CPU of the results) on every page.
    """
    app.connect("config-inited", _use_local_mathjax)
    app.connect("config-inited", _provenance_footer)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# -- build -------------------------------------------------------------------------------------------------------
def build_book(results: str | Path = "results", book_dir: str | Path = "book") -> int:
    """Write the table of contents and generated fragments, then build the HTML book; returns the exit code.

    Runs ``jupyter-book build BOOK_DIR --warningiserror --keep-going --all``: nothing is executed (the config
    turns execution off), every page is re-read (so a stale page cannot hide a warning), and any warning, such as
    a reference to a missing page, label or ``padim_repro`` object, makes the exit code non-zero, and so does a
    table cell that shows NaN or scientific notation (:func:`padim_repro.study.html_check.table_problems`). The HTML
    lands
    in ``BOOK_DIR/_build/html``, with MathJax in ``_static/mathjax/`` when :func:`mathjax_source` finds it (a
    note is printed otherwise, and the pages load MathJax from its CDN).
    """
    book_dir = Path(book_dir).resolve()
    if not (book_dir / "_config.yml").is_file():
        print(f"error: {book_dir} has no _config.yml: not a Jupyter Book folder", file=sys.stderr)
        return 2
    write_generated(results, book_dir)
    write_toc(book_dir, results)
    if mathjax_source() is None:
        print(MATHJAX_NOTE, file=sys.stderr)
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(book_dir), "--warningiserror", "--keep-going", "--all"]  # fmt: skip
    env = {**os.environ, FOOTER_ENV: provenance_footer(results)}
    code = subprocess.run(cmd, cwd=book_dir, env=env).returncode
    html = book_dir / "_build" / "html"
    problems = table_problems(html) if html.is_dir() else []
    for problem in problems:
        print(f"error: unreadable table cell: {problem}", file=sys.stderr)
    code = code or (1 if problems else 0)
    if code == 0:
        print(f"book: {book_dir / '_build' / 'html' / 'index.html'}", file=sys.stderr)
    return code
