"""Result rows that are complete or absent: a CSV of rows in groups, and a manifest written after it.

The ablations and the experiments beyond the paper produce rows (one per variant, seed, ...) in groups (one per
category, or per category and model) that are computed together. :class:`RowStore` keeps them in
``NAME.csv`` and, in ``NAME.json``, a manifest: per group, the key of the inputs that made it (settings, data,
weights, code: :mod:`padim_repro.study.identity`), the sha256 of the group's rows, when and at which commit they
were computed. A group is reused only when its key matches and its rows still hash to what the manifest says; the
CSV is written first and the manifest last, each atomically, so a group interrupted between the two (or edited by
hand) is recomputed, never trusted. A group may keep arrays beside its rows (the ablations' bootstrap resamples, one
row of each array per result row): ``NAME_arrays/GROUP.npz``, written before the CSV, its sha256 in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..storage import sha256_file, write_json, write_npz, write_text
from .provenance import git_commit

#: Columns read as strings (a key made of digits only must not turn into a number).
_STRING_COLUMNS = ("group", "run_key", "weights_id", "embeddings_key")


def _rows_hash(rows: pd.DataFrame) -> str:
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()


class RowStore:
    """Keyed groups of rows in ``FOLDER/NAME.csv`` with their manifest ``FOLDER/NAME.json``."""

    def __init__(self, folder: str | Path, name: str):
        self.csv = Path(folder) / f"{name}.csv"
        self.manifest_path = self.csv.with_suffix(".json")
        self.arrays_dir = Path(folder) / f"{name}_arrays"

    def table(self) -> pd.DataFrame:
        """Every row on disk (with its ``group`` and ``run_key`` columns); empty without a file."""
        if not self.csv.is_file():
            return pd.DataFrame(columns=["group", "run_key"])
        return pd.read_csv(self.csv, dtype={c: str for c in _STRING_COLUMNS})

    def manifest(self) -> dict[str, Any]:
        """The manifest: ``{"groups": {group: {"run_key", "rows_sha256", "n_rows", ...}}, ...}``."""
        if not self.manifest_path.is_file():
            return {"groups": {}}
        return json.loads(self.manifest_path.read_text())

    def done(self, group: str, run_key: str) -> pd.DataFrame | None:
        """The rows of ``group`` if they were computed with ``run_key`` and are intact, else None."""
        entry = self.manifest()["groups"].get(group)
        if not entry or entry.get("run_key") != run_key:
            return None
        table = self.table()
        rows = table[table.group == group].reset_index(drop=True)
        if len(rows) != entry.get("n_rows") or _rows_hash(rows) != entry.get("rows_sha256"):
            return None
        arrays = self._arrays_path(group)
        if entry.get("arrays_sha256") and not (arrays.is_file() and sha256_file(arrays) == entry["arrays_sha256"]):
            return None
        return rows

    def _arrays_path(self, group: str) -> Path:
        return self.arrays_dir / f"{group}.npz"

    def arrays(self, group: str) -> dict[str, np.ndarray]:
        """The arrays kept with ``group``'s rows (name -> array, one row per result row) when they are intact; {}
        when the group has none, or they do not hash to what the manifest recorded."""
        entry = self.manifest()["groups"].get(group) or {}
        path = self._arrays_path(group)
        if not entry.get("arrays_sha256") or not path.is_file() or sha256_file(path) != entry["arrays_sha256"]:
            return {}
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def put(self, group: str, run_key: str, rows: pd.DataFrame, arrays: dict[str, np.ndarray] | None = None,
            **info: Any) -> pd.DataFrame:  # fmt: skip
        """Replace ``group``'s rows by ``rows`` (its ``arrays`` first, then the CSV), then record them in the
        manifest (last); returns the rows as read back."""
        if arrays:
            info["arrays_sha256"] = sha256_file(write_npz(self._arrays_path(group), **arrays))
        rows = rows.assign(group=group, run_key=run_key)
        table = self.table()
        table = pd.concat([table[table.group != group], rows], ignore_index=True) if len(table) else rows
        write_text(self.csv, table.to_csv(index=False))
        stored = self.table()
        stored = stored[stored.group == group].reset_index(drop=True)
        manifest = self.manifest()
        manifest["groups"][group] = {"run_key": run_key, "n_rows": len(stored), "rows_sha256": _rows_hash(stored),
                                     "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "git_commit": git_commit(), **info}  # fmt: skip
        write_json(self.manifest_path, manifest)
        return stored

    def note(self, **info: Any) -> None:
        """Record invocation-wide facts (parameters, timings, provenance) beside the groups."""
        manifest = self.manifest()
        manifest.update(info)
        write_json(self.manifest_path, manifest)
