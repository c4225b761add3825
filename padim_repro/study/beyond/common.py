"""What the experiments beyond the paper share: their results folder, CSV files, categories, per-defect metrics,
and how their notebooks show a configuration and the provenance of their results."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data import list_categories
from ...metrics import aupro, per_defect_image_auroc, pixel_auroc
from ...storage import atomic_write
from ..display import DASH, Table, dash_note, is_missing, noted, table

BEYOND = "beyond"


def beyond_dir(results_root: str | Path) -> Path:
    """``RESULTS/beyond``, where every experiment beyond the paper keeps its CSV and JSON files."""
    return Path(results_root) / BEYOND


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    """Atomically write ``df`` as CSV without its index."""
    return atomic_write(path, lambda fh: fh.write(df.to_csv(index=False).encode()))


def present_categories(data_root: str | Path, categories: Sequence[str] | str | None) -> list[str]:
    """The asked categories (all present by default) that exist under ``data_root``; the absent ones are named."""
    present = list_categories(data_root)
    if not categories:
        return present
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    absent = [c for c in categories if c not in present]
    if absent:
        print(f"not run (absent under {data_root}): {', '.join(absent)}", file=sys.stderr)
    return [c for c in categories if c in present]


def per_defect_metrics(maps: np.ndarray, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                       defect_types: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """Image AUROC, pixel AUROC and PRO of each defect type, each on that type's images plus all good images
    (image AUROC by :func:`~padim_repro.metrics.roc.per_defect_image_auroc`); fractions, one row per type."""
    types = np.asarray(defect_types, dtype=object)
    good = types == "good"
    image = per_defect_image_auroc(scores, labels, list(types))
    rows = []
    for defect in sorted(image):
        sel = good | (types == defect)
        rows.append({"scope": defect, "n defective": int((types == defect).sum()), "n good": int(good.sum()),
                     "image_auroc": image[defect], "pixel_auroc": pixel_auroc(maps[sel], masks[sel]),
                     "pro": aupro(maps[sel], masks[sel])})  # fmt: skip
    return pd.DataFrame(rows)


def config_text(config: Mapping[str, Any]) -> str:
    """A :class:`~padim_repro.config.PadimConfig` dict in one line, the settings that make the numbers."""
    c, d = config, config.get("d")
    kept = "the backbone's default d" if d is None else ("all channels" if d == 0 else f"d = {d}")
    return (f"{c.get('backbone')}, layers {', '.join(c.get('layers', []))}, {kept} (seed {c.get('seed')}), "
            f"epsilon {c.get('epsilon')}, sigma {c.get('sigma'):g}, resize {c.get('resize')}, crop {c.get('crop')} "
            f"({c.get('interpolation')}), batch size {c.get('batch_size')}")


def provenance_rows(info: Mapping[str, Any]) -> dict[str, Any]:
    """The rows every experiment's provenance shows: commit, CPU model, logical CPUs, package versions."""
    machine = info.get("machine") or {}
    return {"commit": info.get("git_commit"), "CPU": machine.get("cpu"), "logical CPUs": machine.get("cpu_count"),
            "versions": ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items())}  # fmt: skip


def info_table(rows: Mapping[str, Any]) -> Table:
    """A 2-column table (what, value) of provenance or settings; a missing value is "—", explained under it."""
    values = [DASH if is_missing(v) else str(v) for v in rows.values()]
    styler = table(pd.DataFrame({"item": list(rows), "value": values}))
    return noted(styler, dash_note(styler, {"value": "not recorded (results from before this field was)"}))
