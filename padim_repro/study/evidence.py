"""What the Claims page and the introduction read, and the introduction's scope and same-scope headline.

What: :func:`main_runs` reads the finished main runs of one backbone with their 95 % bootstrap intervals, the
interval of their mean over categories (:func:`padim_repro.study.uncertainty.mean_interval`) and the spread over the
random channel subsets of the Table II ablation; :func:`scope_markdown` says in two sentences what was run and what
was not; :func:`headline_markdown` sets ours next to the public reproductions and the paper over exactly the
categories run; :class:`Evidence` loads everything the claims of :mod:`~padim_repro.study.claims` read.

Why: a mean over the four categories run here cannot be set against the paper's mean over fifteen (it would read
PRO 92.1 against 89.4 as beating the paper); every mean here is over the same categories for every source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import MVTEC_CATEGORIES
from . import reference
from .ablations.experiments import load_results
from .ablations.tables import seed_spread
from .display import DASH, interval, markdown_table, number
from .report import DONE, METRIC_LABEL, METRICS, load_status, runs_frame
from .runs import load_bootstrap
from .uncertainty import mean_interval


@dataclass
class MainRuns:
    """The main runs of one backbone: per category, metrics (%), 95 % intervals (%), seed spread (% sd)."""

    backbone: str
    table: pd.DataFrame  # category, metric, ours, low, high, seed_sd, n_seeds
    means: pd.DataFrame  # metric, ours, low, high, seed_sd, n_seeds

    @property
    def categories(self) -> list[str]:
        """The categories run, in MVTec AD order."""
        return list(dict.fromkeys(self.table.category))


def main_runs(results: str | Path, backbone: str = "resnet18") -> MainRuns | None:
    """The finished main runs of ``backbone`` on MVTec AD categories with their intervals, and the spread of the
    category values and of their mean over the random-subset seeds of the ``n_features`` ablation at the run's d
    (None before any run)."""
    runs = runs_frame(results)
    done = runs[(runs.backbone == backbone) & runs.status.isin(list(DONE)) & runs.category.isin(MVTEC_CATEGORIES)
                ] if len(runs) else runs  # fmt: skip
    if done.empty:
        return None
    order = {c: i for i, c in enumerate(MVTEC_CATEGORIES)}
    done = done.sort_values("category", key=lambda s: s.map(order).fillna(len(order)))
    seeds = _seed_rows(results) if backbone == "resnet18" else pd.DataFrame()
    rows, boots = [], {m: [] for m in METRICS}
    for r in done.itertuples():
        rec = json.loads((Path(results) / r.run_dir / "metrics.json").read_text())
        boot = load_bootstrap(Path(results) / r.run_dir)
        sub = seeds[seeds.category == r.category] if len(seeds) else seeds
        spread = seed_spread(sub) if len(sub) else None
        for m in METRICS:
            iv = rec.get("intervals", {}).get(m, {})
            rows.append({"category": r.category, "metric": m, "ours": 100 * rec[m],
                         "low": _pct(iv.get("low")), "high": _pct(iv.get("high")),
                         "seed_sd": spread.loc[m, "std"] if spread is not None else np.nan,
                         "n_seeds": int(spread.n_seeds.iloc[0]) if spread is not None else 0})  # fmt: skip
            boots[m].append(boot.get(m))
    table = pd.DataFrame(rows)
    spread = seed_spread(seeds[seeds.category.isin(done.category)]) if len(seeds) else None
    means = []
    for m in METRICS:
        sub = table[table.metric == m]
        ok = all(b is not None for b in boots[m])
        iv = mean_interval(sub.ours / 100, np.stack(boots[m])) if ok else {"low": None, "high": None}
        means.append({"metric": m, "ours": sub.ours.mean(), "low": _pct(iv["low"]), "high": _pct(iv["high"]),
                      "seed_sd": spread.loc[m, "std"] if spread is not None else np.nan,
                      "n_seeds": int(spread.n_seeds.iloc[0]) if spread is not None else 0})  # fmt: skip
    return MainRuns(backbone, table, pd.DataFrame(means))


def _pct(x: float | None) -> float:
    return np.nan if x is None else 100 * float(x)


def _seed_rows(results: str | Path, d: int = 100) -> pd.DataFrame:
    """Rd``d`` rows of the ``n_features`` ablation: one per category and random-subset seed."""
    nf = load_results(results, "n_features")
    return nf[(nf.method == "random") & (nf.d == d)] if len(nf) else nf


def reproduction_mean(short: str, backbone: str, categories: Sequence[str], metric: str) -> float | None:
    """A reproduction's mean (%) over exactly ``categories``, or None when it lacks any of them."""
    table = reference.reproductions()
    values = [reference.repro_value(table, short, backbone, c, metric) for c in categories]
    return None if any(v is None for v in values) else 100 * float(np.mean(values))


def paper_mean(backbone: str, categories: Sequence[str], metric: str) -> tuple[float, str] | None:
    """The paper's mean (%) over exactly ``categories`` with the weakest source mark of its cells, or None when the
    paper (as available offline) lacks any of them."""
    table = reference.paper()
    cells = [reference.paper_value(table, reference.PAPER_MODEL[backbone], c, metric) for c in categories]
    if any(c is None for c in cells):
        return None
    return float(np.mean([c[0] for c in cells])), reference.weakest(*(c[1] for c in cells))


# -- scope and headline ----------------------------------------------------------------------------------------
def scope_markdown(results: str | Path) -> str:
    """Two sentences: what was run (categories, backbone) and what was not, and why, from ``status.json``."""
    status = load_status(results)
    if status is None:
        return "_Scope pending: no `make reproduce` has been run yet, so nothing has been computed._\n"
    runs = runs_frame(results)
    runs = runs[runs.category.isin(MVTEC_CATEGORIES)]
    done = runs[runs.status.isin(list(DONE))]
    n_total = len(MVTEC_CATEGORIES)
    ran = sorted(set(done.category), key=MVTEC_CATEGORIES.index)
    backbones = [reference.PAPER_MODEL.get(b, b) for b in dict.fromkeys(done.backbone)]
    missing = [b for b in dict.fromkeys(runs.backbone) if b not in set(done.backbone)]
    why = []
    for b in missing:
        reasons = runs[(runs.backbone == b) & runs.category.isin(ran)].reason
        first = reasons.iloc[0].split(":")[0] if len(reasons) else "not run"
        name = reference.PAPER_MODEL.get(b, b)
        why.append(f"{name} was not run ({first}: its ImageNet weights could not be had offline)" if "weights" in first
                   else f"{name} was not run ({first})")
    absent = n_total - len(ran)
    listed = f" ({', '.join(ran)}), the ones present in the data root" if ran and absent else ""
    first = (f"This reproduction ran {' and '.join(backbones) or 'PaDiM'} on **{len(ran)} of the {n_total}** MVTec AD "
             f"categories{listed}" + (f"; {'; '.join(why)}" if why else "") + ".")
    second = ("The paper's numbers are from secondary sources (its tables could not be read offline), each with a "
              "source mark, and are compared only over the same categories: the paper's means over all 15 are "
              "not comparable with ours over "
              f"{len(ran)}." if absent else "The paper's numbers are from secondary sources, each with a source mark.")
    return f"{first} {second}\n"


def headline_markdown(results: str | Path) -> str:
    """The same-scope headline: means over exactly the categories run, ours (95 % interval, seed spread) next to
    the public reproductions and the paper (where it gives every one of those categories), in %."""
    main = main_runs(results)
    if main is None:
        return ("_Results pending: no MVTec AD category has been run yet, so there is no headline table. "
                "`make reproduce` runs every category and rebuilds this book (see {doc}`rerun`)._\n")
    cats, notes = main.categories, []
    rows = [{"": "ours, mean", **{METRIC_LABEL[m]: f"{r.ours:.1f}" for r in main.means.itertuples()
                                  for m in [r.metric]}}]  # fmt: skip
    rows.append({"": "ours, 95 % interval", **{METRIC_LABEL[r.metric]: points_interval(r.low, r.high)
                                               for r in main.means.itertuples()}})  # fmt: skip
    rows.append({"": f"ours, sd over {int(main.means.n_seeds.max())} channel seeds",
                 **{METRIC_LABEL[r.metric]: number(r.seed_sd, 2) for r in main.means.itertuples()}})  # fmt: skip
    for short in reference.REPRO_SHORT.values():
        rows.append({"": short, **{METRIC_LABEL[m]: number(reproduction_mean(short, main.backbone, cats, m))
                                   for m in METRICS}})  # fmt: skip
    paper = {m: paper_mean(main.backbone, cats, m) for m in METRICS}
    rows.append({"": "paper", **{METRIC_LABEL[m]: f"{p[0]:.1f} ({p[1]})" if p else DASH for m, p in paper.items()}})
    notes.append("— : the source gives no value for every one of these categories (the reproductions report no PRO; "
                 "the paper's per-category R18 values available offline are listed on {doc}`claims`).")
    if main.means.n_seeds.max() == 0:
        notes.append("The seed spread needs the Table II ablation (`make ablations`).")
    head = (f"PaDiM-R18-Rd100, means over the **{len(cats)}** categories run ({', '.join(cats)}), in %. "
            "Interval: stratified bootstrap of the test images (1,000 resamples per category). Seed spread: standard "
            "deviation of the mean over the random channel subsets of the Table II ablation.\n\n")
    table = pd.DataFrame(rows).rename(columns={"": "source"})
    return head + markdown_table(table) + "\n" + "\n".join(notes) + "\n"


def points_interval(low: float, high: float) -> str:
    """An interval already in points (%), as :func:`~padim_repro.study.display.interval` shows fractions."""
    return interval(low / 100, high / 100)


class Evidence:
    """Everything the claims read, loaded once: main runs, ablation rows, beyond-the-paper rows, benchmarks."""

    def __init__(self, results: str | Path, book_dir: str | Path):
        self.results, self.book_dir = Path(results), Path(book_dir)
        self.status = load_status(results)
        self.main = main_runs(results)
        self.ablations = {name: load_results(results, name) for name in ("n_features", "pca", "layers", "sigma")}
        nonaligned = self.results / "beyond" / "nonaligned.csv"
        self.nonaligned = pd.read_csv(nonaligned) if nonaligned.is_file() else pd.DataFrame()
        core = self.results / "bench" / "core.json"
        self.bench = json.loads(core.read_text()) if core.is_file() else None

    def link(self, doc: str, text: str) -> str:
        """A link to a page of the book when it was built, else the text and the command that builds it."""
        present = any((self.book_dir / f"{doc}{s}").is_file() for s in (".ipynb", ".md"))
        return f"{{doc}}`{text} <{doc}>`" if present else f"{text} (not built)"

    def variant_means(self, experiment: str, **selector: Any) -> dict[str, float] | None:
        """Mean over categories and seeds (%) of one variant of an ablation, per metric; None if not run."""
        df = self.ablations[experiment]
        if df.empty:
            return None
        mask = np.ones(len(df), dtype=bool)
        for k, v in selector.items():
            mask &= (df[k] == v).to_numpy()
        sub = df[mask]
        return None if sub.empty else {m: float(seed_spread(sub).loc[m, "mean"]) for m in METRICS}
