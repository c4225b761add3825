"""Claim C8 of the Claims page: what the paper claims about cost (Tables VII, VIII), read as ratios of its own
figures, against the same ratios measured here on one machine (``make bench``); the absolute figures of both, on
their different hardware, are shown beside them without a verdict.
"""

from __future__ import annotations

import pandas as pd

from . import reference
from .claim import PENDING, Claim
from .cost import paper_cost_rows, paper_cost_shown
from .display import DASH, markdown_table, number
from .evidence import Evidence
from .verdicts import NOT_TESTABLE, RATIO_FACTOR, combine, ratio_verdict, scoped

#: What the paper claims about cost, as ratios of its own figures (Tables VII, VIII): (label, model over, model
#: under, quantity). SPADE is not implemented here, so its ratios are not testable.
COST_RATIOS = (
    ("inference time, WR50-Rd550 / R18-Rd100", "PaDiM-WR50-Rd550", "PaDiM-R18-Rd100", "inference_time_per_image"),
    ("model memory, WR50-Rd550 / R18-Rd100", "PaDiM-WR50-Rd550", "PaDiM-R18-Rd100", "model_memory_mvtec"),
    ("inference time, SPADE-WR50 / PaDiM-WR50-Rd550", "SPADE-WR50", "PaDiM-WR50-Rd550", "inference_time_per_image"),
    ("model memory, SPADE-WR50 / PaDiM-WR50-Rd550", "SPADE-WR50", "PaDiM-WR50-Rd550", "model_memory_mvtec"),
)  # fmt: skip


def _ours_cost(rows: pd.DataFrame, model: str, quantity: str) -> float | None:
    """Our figure for the paper's (model, quantity) from the Cost page's rows (:func:`paper_cost_rows`)."""
    short = {"PaDiM-R18-Rd100": "R18-Rd100", "PaDiM-WR50-Rd550": "WR50-Rd550"}.get(model)
    kind = {"inference_time_per_image": "inference per image", "model_memory_mvtec": "model size"}[quantity]
    hit = rows[rows.quantity.str.startswith(f"{kind}, {short}")] if short else rows.iloc[:0]
    return None if hit.empty or pd.isna(hit.ours.iloc[0]) else float(hit.ours.iloc[0])


def claim_cost(ev: Evidence) -> Claim:
    """Tables VII, VIII: what the paper claims about cost, read as ratios of its own figures (the relative cost of
    its two models, and of PaDiM against SPADE), each set against the same ratio measured here on one machine; the
    absolute figures of both, on their different hardware, are shown beside them without a verdict."""
    cost = reference.paper_cost()

    def fig(model: str, quantity: str) -> tuple[float, str] | None:
        row = cost[(cost.model == model) & (cost.quantity == quantity)]
        return None if row.empty else (float(row.value.iloc[0]), str(row.source.iloc[0]))

    ratios = []
    for label, over, under, quantity in COST_RATIOS:
        a, b = fig(over, quantity), fig(under, quantity)
        ratios.append((label, over, under, quantity, None if not (a and b) else (a[0] / b[0],
                                                                                 reference.weakest(a[1], b[1]))))
    paper = ("The paper sets the cost of its two models against each other and against SPADE's (faster inference, "
             "more memory on MVTec AD): "
             + "; ".join(f"{label} = {r[0]:.1f} ({r[1]})" for label, *_, r in ratios if r)
             + " (ratios of the figures of Tables VII and VIII, each pair measured on one machine) "
             "{cite:p}`defard2021padim`.")
    title = "C8. The cost (Tables VII, VIII)"
    if ev.bench is None:
        return Claim(title, paper, PENDING.format(what="the benchmark", command="make bench"), NOT_TESTABLE,
                     "not measured")
    rows = paper_cost_rows(ev.bench)
    shown_rows, verdicts = [], []
    for label, over, under, quantity, p in ratios:
        a, b = _ours_cost(rows, over, quantity), _ours_cost(rows, under, quantity)
        ours = a / b if a is not None and b is not None and b > 0 else None
        if p is None or ours is None:
            v, why = NOT_TESTABLE, ("SPADE is not implemented here" if "SPADE" in label else "not measured")
        else:
            v, why = ratio_verdict(ours, p[0])
        verdicts.append(v)
        shown_rows.append({"ratio": label, "paper": DASH if p is None else f"{p[0]:.1f} ({p[1]})",
                           "ours": number(ours, 1), "verdict": v, "why": why})
    shown = paper_cost_shown(rows).rename(columns={"paper: measured on": "paper's hardware",
                                                   "ours: measured on": "our hardware"})
    evidence = (markdown_table(pd.DataFrame(shown_rows)) + f"\nReproduced: our ratio within a factor "
                f"{RATIO_FACTOR:g} of the paper's, either way. Ours: both models timed on the same machine, "
                "WR50-Rd550 with random weights on random images (its ImageNet weights are not available offline; "
                "the cost does not depend on the weight values).\n\nThe absolute figures, for information (no "
                "verdict: the CPUs, the batching and the threads differ):\n\n" + markdown_table(shown)
                + f"\n— : not measured here. Details: {ev.link('cost', 'the Cost page')}.")
    judged = sum(v != NOT_TESTABLE for v in verdicts)
    return Claim(title, paper, evidence, scoped(combine(verdicts), judged, len(verdicts), "ratios"),
                 "judged on ratios measured on one machine (SPADE is not implemented here); the absolute times "
                 "depend on the hardware and are not compared.")
