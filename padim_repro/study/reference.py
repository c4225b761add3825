"""The published numbers this reproduction is compared with, as data (``padim_repro/study/published/*.csv``).

Paper values are in % with a source mark (see ``published/README.md``); the two public reproductions give
fractions. Nothing here is ever estimated: a value the files lack is missing.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

#: Our backbone name -> the paper's model name (Tables III and V) and the reproductions' backbone label.
PAPER_MODEL = {"resnet18": "PaDiM-R18-Rd100", "wide_resnet50_2": "PaDiM-WR50-Rd550"}
REPRO_BACKBONE = {"resnet18": "R18", "wide_resnet50_2": "WR50"}
#: Short names of the reproductions, keyed by the ``implementation`` column.
REPRO_SHORT = {
    "xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master": "xiahaifeng1995",
    "anomalib (openvinotoolkit, Dec 2021 table)": "anomalib",
}


def _read(name: str) -> pd.DataFrame:
    with resources.files("padim_repro.study.published").joinpath(name).open() as fh:
        return pd.read_csv(fh)


def paper() -> pd.DataFrame:
    """The paper's numbers: table, model, category, metric, value_percent, source."""
    return _read("paper_padim.csv")


def paper_cost() -> pd.DataFrame:
    """The paper's time and memory figures (Tables VII, VIII and text) with the hardware."""
    return _read("paper_padim_cost.csv")


def reproductions() -> pd.DataFrame:
    """Two public reproductions' per-category AUROCs (fractions), with a ``short`` name column."""
    df = _read("reproductions_padim.csv")
    df["short"] = df["implementation"].map(REPRO_SHORT).fillna(df["implementation"])
    return df


def paper_value(table: pd.DataFrame, model: str, category: str, metric: str) -> tuple[float, str] | None:
    """(value in %, source mark) of one paper cell, or None when the paper (as available here) lacks it."""
    rows = table[(table.model == model) & (table.category == category) & (table.metric == metric)]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return float(row.value_percent), str(row.source)


#: Source marks from the weakest to the strongest (``published/README.md``): one summary, two or more, quoted
#: identically by two reproductions, the paper's own text.
MARKS = ("S1", "S2", "R", "T")


def weakest(*marks: str) -> str:
    """The weakest of the source marks a value or a difference rests on (a difference of an S2 and an S1 value is
    S1): what it is shown with."""
    return min(marks, key=lambda m: MARKS.index(m) if m in MARKS else -1)


def repro_value(table: pd.DataFrame, short: str, backbone: str, category: str, metric: str) -> float | None:
    """A reproduction's value (fraction) for our ``backbone`` name, or None when it does not report it."""
    rows = table[(table.short == short) & (table.backbone == REPRO_BACKBONE.get(backbone))
                 & (table.category == category) & (table.metric == metric)]  # fmt: skip
    return float(rows.value.iloc[0]) if len(rows) else None
