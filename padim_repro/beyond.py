"""Experiments beyond the paper's main tables, each an executed notebook of the book (``make beyond``).

1. ``nonaligned``: PaDiM on non-aligned MVTec AD (the paper's Table VI protocol, :mod:`padim_repro.augment`),
   five seeded versions of the data, against the aligned protocol.
2. ``efficientnet``: PaDiM with an ImageNet EfficientNet backbone (the paper's best image-level model uses
   EfficientNet-B5, not available offline; here EfficientNet-Lite0, :mod:`padim_repro.efficientnet`) beside
   PaDiM-R18-Rd100.
3. ``magnetic_tile``: PaDiM-R18-Rd100 on the Magnetic Tile Defect dataset (:mod:`padim_repro.magnetic_tile`), a
   second real dataset with pixel masks, overall and per defect type.

Each experiment function does the heavy work once and keeps its results as CSV files under ``RESULTS/beyond/``
(with a JSON of its configuration, timings and provenance): called again it only reads them back, unless
``force``. The non-aligned experiment also resumes after an interruption (one row per finished run). Aligned
ResNet-18 and EfficientNet runs are ordinary runs of :func:`padim_repro.report.run_or_load`, shared with
``make reproduce`` (same folders, same cache). :func:`run_beyond` executes the three notebooks with papermill
into ``book/beyond/``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import reference
from .artifacts import atomic_write, provenance, write_json, write_npz
from .config import PadimConfig
from .data import list_categories
from .metrics import aupro, per_defect_image_auroc, pixel_auroc
from .report import METRICS, run_or_load
from .runner import fit_evaluate

BEYOND = "beyond"
#: Experiment name -> notebook (``notebooks/NAME.ipynb``, executed into ``book/beyond/NAME.ipynb``).
NOTEBOOKS = {"nonaligned": "beyond_nonaligned", "efficientnet": "beyond_efficientnet",
             "magnetic_tile": "beyond_magnetic_tile"}  # fmt: skip
#: The paper's seeds count for the non-aligned protocol here: five versions of the dataset.
NONALIGNED_SEEDS = (0, 1, 2, 3, 4)
#: The paper's non-aligned model, and its aligned counterpart.
PAPER_NONALIGNED_MODEL = "PaDiM-WR50-Rd550 on non-aligned MVTec"
PAPER_ALIGNED_MODEL = "PaDiM-WR50-Rd550"


def beyond_dir(results_root: str | Path) -> Path:
    return Path(results_root) / BEYOND


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda fh: fh.write(df.to_csv(index=False).encode()))


def _read_csv(path: Path) -> pd.DataFrame:
    """A results CSV; hashes stay strings (a key of digits only must not turn into a number)."""
    return pd.read_csv(path, dtype={"config_key": str, "weights_id": str})


def _categories(data_root: str | Path, categories: Sequence[str] | str | None) -> list[str]:
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
    (image AUROC by :func:`~padim_repro.metrics.per_defect_image_auroc`); fractions, one row per type."""
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


# -- 1. non-aligned MVTec AD -----------------------------------------------------------------------------------------
def nonaligned_experiment(data_root: str | Path, results_root: str | Path, weights: str,
                          categories: Sequence[str] | str | None = None, seeds: Sequence[int] = NONALIGNED_SEEDS,
                          force: bool = False, progress: bool | None = None, **config: Any
                          ) -> pd.DataFrame:  # fmt: skip
    """PaDiM (default R18-Rd100; ``config`` overrides :class:`~padim_repro.config.PadimConfig` fields) on each category, aligned and
    in each non-aligned version ``seeds``; one row per (category, protocol, seed), metrics as fractions.

    Rows are written to ``RESULTS/beyond/nonaligned.csv`` as runs finish (so an interrupted call resumes where it
    stopped); existing rows (same category, protocol, seed and config key) are kept and not recomputed unless
    ``force``, rows of other categories or configurations are left alone. The aligned rows come from the ordinary
    (cached) runs of :func:`~padim_repro.report.run_or_load`. Returns the rows of this call's categories and seeds.
    """
    from .augment import MAX_ANGLE, load_nonaligned

    cfg = PadimConfig(weights=weights, **config)
    key = cfg.key()
    out = beyond_dir(results_root) / "nonaligned.csv"
    rows = {(r["category"], r["protocol"], int(r["seed"]), r["config_key"]): r
            for r in (_read_csv(out).to_dict("records") if out.is_file() else [])}  # fmt: skip
    common = {"config_key": key}
    wanted = []
    t_start = time.perf_counter()
    for category in _categories(data_root, categories):
        row_id = (category, "aligned", -1, key)
        wanted.append(row_id)
        if force or row_id not in rows:
            record, _, run_dir = run_or_load(category, data_root, results_root, cfg, force=force)
            rows[row_id] = {"category": category, "protocol": "aligned", "seed": -1,
                            **{m: record[m] for m in METRICS}, "fit_s": record["timings"]["fit_s"],
                            "predict_s": record["timings"]["predict_s"], **common,
                            "weights_id": record["weights"]["fingerprint"]}  # fmt: skip
            _write_csv(out, pd.DataFrame(list(rows.values())))
        for seed in seeds:
            row_id = (category, "non-aligned", int(seed), key)
            wanted.append(row_id)
            if row_id in rows and not force:
                continue
            train, test = load_nonaligned(data_root, category, seed, cfg.resize, cfg.crop, cfg.interpolation)
            res = fit_evaluate(cfg, train, test, progress)
            rows[row_id] = {"category": category, "protocol": "non-aligned", "seed": int(seed),
                            **{m: res["metrics"][m] for m in METRICS}, "fit_s": res["timings"]["fit_s"],
                            "predict_s": res["timings"]["predict_s"], **common, "weights_id": res["weights_id"]}
            _write_csv(out, pd.DataFrame(list(rows.values())))
            print(f"non-aligned {category} seed {seed}: " + ", ".join(f"{m} {res['metrics'][m]:.4f}" for m in METRICS),
                  file=sys.stderr)  # fmt: skip
    write_json(out.with_suffix(".json"), {"config": cfg.to_dict(), "config_key": key, "seeds": list(seeds),
               "max_angle": MAX_ANGLE, "data_root": str(data_root), "wall_s_last_call": time.perf_counter() - t_start,
               **provenance()})  # fmt: skip
    return pd.DataFrame([rows[r] for r in wanted])


def nonaligned_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per category (and the mean over the categories run): aligned value, non-aligned mean and std over the
    seeds (sample std, ddof 1), and the drop aligned - non-aligned, all in %."""
    rows = []
    for category, sub in df.groupby("category", sort=False):
        row: dict[str, Any] = {"category": category, "seeds": int((sub.protocol == "non-aligned").sum())}
        for m in METRICS:
            aligned = sub.loc[sub.protocol == "aligned", m]
            non = sub.loc[sub.protocol == "non-aligned", m] * 100
            row[f"{m} aligned"] = 100 * aligned.iloc[0] if len(aligned) else np.nan
            row[f"{m} non-aligned mean"] = non.mean()
            row[f"{m} non-aligned std"] = non.std(ddof=1) if len(non) > 1 else np.nan
            row[f"{m} drop"] = row[f"{m} aligned"] - row[f"{m} non-aligned mean"]
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out) > 1:
        mean = {"category": f"mean of {len(out)} categories", "seeds": int(out.seeds.min())}
        for m in METRICS:
            # Std of the per-seed means over categories: the seeds are common to all categories.
            non = df[df.protocol == "non-aligned"].pivot_table(index="seed", columns="category", values=m)
            per_seed = 100 * non.dropna().mean(axis=1)
            mean[f"{m} aligned"] = out[f"{m} aligned"].mean()
            mean[f"{m} non-aligned mean"] = per_seed.mean()
            mean[f"{m} non-aligned std"] = per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan
            mean[f"{m} drop"] = mean[f"{m} aligned"] - mean[f"{m} non-aligned mean"]
        out = pd.concat([out, pd.DataFrame([mean])], ignore_index=True)
    return out


def nonaligned_paper() -> pd.DataFrame:
    """The paper's non-aligned numbers (Table VI, WR50-Rd550, mean of all 15 categories) beside its aligned ones
    (Table III), and the drop, in %; missing cells are NaN."""
    paper = reference.paper()
    rows = []
    for m in METRICS:
        non = reference.paper_value(paper, PAPER_NONALIGNED_MODEL, "all", m)
        ali = reference.paper_value(paper, PAPER_ALIGNED_MODEL, "all", m)
        rows.append({"metric": m, "model": "PaDiM-WR50-Rd550, all 15 categories",
                     "aligned (Table III)": ali[0] if ali else np.nan, "aligned source": ali[1] if ali else "",
                     "non-aligned (Table VI)": non[0] if non else np.nan, "non-aligned source": non[1] if non else "",
                     "drop": ali[0] - non[0] if ali and non else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


# -- 2. EfficientNet backbone ------------------------------------------------------------------------------------
def efficientnet_experiment(data_root: str | Path, results_root: str | Path, weights_r18: str,
                            effnet_weights: str | None = None, effnet_backbone: str | None = None,
                            effnet_d: Sequence[int | None] = (100, 0), categories: Sequence[str] | str | None = None,
                            force: bool = False, **config: Any) -> pd.DataFrame:  # fmt: skip
    """PaDiM-R18-Rd100 and PaDiM-EfficientNet (the paper's levels 2, 4, 5; ``effnet_d`` kept channels each, 0 =
    all) on each category, as ordinary runs (:func:`~padim_repro.report.run_or_load`); one row per
    (category, model) in ``RESULTS/beyond/efficientnet.csv``, metrics as fractions. Rows already there (same
    category and config key) are kept and not recomputed unless ``force``; the JSON beside the CSV records the
    configurations of the last call.

    Defaults: the local EfficientNet-Lite0 ImageNet weights in ``tf_efficientnet_lite0``.
    """
    from . import efficientnet as E

    backbone = effnet_backbone or E.LITE0_BACKBONE
    weights = effnet_weights or E.lite0_weights_spec()
    out = beyond_dir(results_root) / "efficientnet.csv"
    configs = [("PaDiM-R18-Rd100", PadimConfig(weights=weights_r18, **config))]
    for d in effnet_d:
        c = PadimConfig(backbone=backbone, layers=E.paper_layers(backbone), d=d, weights=weights, **config)
        configs.append((f"PaDiM-{backbone}-{'Rd' + str(c.resolved_d) if c.resolved_d else 'all'}", c))
    wanted = [(category, name, c) for category in _categories(data_root, categories) for name, c in configs]
    rows = _read_csv(out).to_dict("records") if out.is_file() else []
    have = {(r["category"], r["config_key"]) for r in rows}
    t_start = time.perf_counter()
    for category, name, c in wanted:
        if (category, c.key()) in have and not force:
            continue
        record, _, run_dir = run_or_load(category, data_root, results_root, c, force=force)
        rows = [r for r in rows if (r["category"], r["config_key"]) != (category, c.key())]
        rows.append({"category": category, "model": name, "backbone": c.backbone, "layers": ",".join(c.layers),
                     "d": record["d"], "n_channels_total": record["n_channels_total"],
                     **{m: record[m] for m in METRICS}, "fit_s": record["timings"]["fit_s"],
                     "predict_per_image_s": record["timings"]["predict_per_image_s"],
                     "weights_id": record["weights"]["fingerprint"], "config_key": c.key(),
                     "run_dir": str(Path(run_dir).relative_to(results_root))})  # fmt: skip
        _write_csv(out, pd.DataFrame(rows))
    write_json(out.with_suffix(".json"), {"configs": {n: c.to_dict() for n, c in configs},
               "wall_s_last_call": time.perf_counter() - t_start, **provenance()})  # fmt: skip
    by_key = {(r["category"], r["config_key"]): r for r in rows}
    return pd.DataFrame([by_key[(category, c.key())] for category, _, c in wanted])


def kept_channels_per_layer(backbone: str, layers: Sequence[str], d: int | None, seed: int = 1024) -> pd.Series:
    """How many of the ``d`` randomly kept channels (PaDiM's seeded selection) come from each layer."""
    import timm

    from .features import layer_indices, select_channels

    with torch.device("meta"):
        probe = timm.create_model(backbone, features_only=True, pretrained=False,
                                  out_indices=layer_indices(backbone, layers))  # fmt: skip
    channels = list(probe.feature_info.channels())
    kept = select_channels(sum(channels), d or None, seed).numpy()
    edges = np.cumsum([0] + channels)
    return pd.Series({f"{name} ({c})": int(((kept >= lo) & (kept < hi)).sum()) for name, c, lo, hi
                      in zip(layers, channels, edges[:-1], edges[1:])})  # fmt: skip


# -- 3. Magnetic Tile ------------------------------------------------------------------------------------------------
def magnetic_tile_experiment(mt_root: str | Path, results_root: str | Path, weights: str, split_seed: int | None = None,
                             train_fraction: float | None = None, size: int = 224, force: bool = False,
                             progress: bool | None = None, n_examples: int = 4, **config: Any
                             ) -> dict[str, Any]:  # fmt: skip
    """PaDiM (default R18-Rd100) on the seeded Magnetic Tile split, images resized to ``size`` x ``size``.

    Writes ``RESULTS/beyond/magnetic_tile.csv`` (one row for all defects, one per defect type: image AUROC, pixel
    AUROC, PRO as fractions), ``magnetic_tile_scores.csv`` (every test image's score), ``magnetic_tile.json``
    (config, split, timings, provenance) and ``magnetic_tile_examples.npz`` (maps and masks of a few test images
    for figures). Returns ``{"metrics": DataFrame, "scores": DataFrame, "info": dict, "examples": dict}``.
    """
    from . import magnetic_tile as MT
    from .plots import select_examples

    split_seed = MT.SPLIT_SEED if split_seed is None else split_seed
    train_fraction = MT.TRAIN_FRACTION if train_fraction is None else train_fraction
    folder = beyond_dir(results_root)
    files = {k: folder / f"magnetic_tile{s}" for k, s in
             (("metrics", ".csv"), ("scores", "_scores.csv"), ("info", ".json"), ("examples", "_examples.npz"))}
    if force or not all(p.is_file() for p in files.values()):
        cfg = PadimConfig(weights=weights, resize=size, crop=size, **config)
        train, test, split = MT.load_magnetic_tile(mt_root, split_seed, train_fraction, size, cfg.interpolation)
        t0 = time.perf_counter()
        res = fit_evaluate(cfg, train, test, progress)
        wall = time.perf_counter() - t0
        overall = {"scope": "all defects", "n defective": int(res["labels"].sum()),
                   "n good": int((res["labels"] == 0).sum()), **{m: res["metrics"][m] for m in METRICS}}  # fmt: skip
        per = per_defect_metrics(res["maps"], res["masks"], res["scores"], res["labels"], res["defect_types"])
        _write_csv(files["metrics"], pd.concat([pd.DataFrame([overall]), per], ignore_index=True))
        _write_csv(files["scores"], pd.DataFrame({
            "image": [str(s.image_path.relative_to(Path(mt_root))) for s in test.samples],
            "defect_type": res["defect_types"], "label": res["labels"], "score": res["scores"]}))
        pred = {"scores": res["scores"], "labels": res["labels"]}
        idx = np.unique(np.concatenate(list(select_examples(pred, n_examples).values())))
        write_npz(files["examples"], index=idx, maps=res["maps"][idx].astype(np.float16),
                  masks=res["masks"][idx], vmin=np.percentile(res["maps"][res["labels"] == 0], 1))
        write_json(files["info"], {
            "config": cfg.to_dict(), "config_key": cfg.key(), "weights_id": res["weights_id"],
            "d": res["d"], "n_channels_total": res["n_channels_total"], "mt_root": str(mt_root),
            "split": {"seed": split_seed, "train_fraction": train_fraction, "n_train": len(train),
                      "n_test": len(test), "counts": split.summary().to_dict("records")},
            "preprocessing": f"every image resized to {size}x{size} (bicubic; masks nearest), no crop",
            "timings": {**res["timings"], "wall_s": wall}, "citation": MT.CITATION, **provenance()})  # fmt: skip
    ex = np.load(files["examples"])
    return {"metrics": pd.read_csv(files["metrics"]), "scores": pd.read_csv(files["scores"]),
            "info": json.loads(files["info"].read_text()), "examples": {k: ex[k] for k in ex.files}}  # fmt: skip


# -- driver --------------------------------------------------------------------------------------------------------
def run_beyond(data_root: str | Path, results_root: str | Path, weights_r18: str, book_dir: str | Path = "book",
               force: bool = False, mt_root: str | Path | None = None,
               experiments: Sequence[str] = tuple(NOTEBOOKS), categories: Sequence[str] | str | None = None,
               seeds: Sequence[int] = NONALIGNED_SEEDS, device: str = "auto",
               effnet_weights: str | None = None, effnet_d: Sequence[int | None] = (100, 0),
               extra_parameters: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """Execute the notebooks of ``experiments`` into ``BOOK_DIR/beyond/NAME.ipynb``; returns name -> status.

    ``mt_root`` defaults to ``magnetic_tile`` beside ``data_root``. An experiment whose data is absent is not run
    (status says why); one that fails does not stop the others (status ``failed: ...``). ``extra_parameters`` are
    passed to every notebook (the tests use them to shrink images).
    """
    from .notebooks import execute
    from .reproduce import _from_repo

    unknown = sorted(set(experiments) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; choose from {list(NOTEBOOKS)}")
    data_root, results_root = Path(data_root), Path(results_root)
    mt_root = Path(mt_root) if mt_root else data_root.parent / "magnetic_tile"
    cats = ",".join(categories) if isinstance(categories, (list, tuple)) else (categories or "")
    common = {"results_root": _from_repo(results_root), "weights": weights_r18 if weights_r18 in ("tv_in1k", "none")
              else _from_repo(weights_r18), "device": device, "force": force, **(extra_parameters or {})}  # fmt: skip
    params = {
        "nonaligned": {"data_root": _from_repo(data_root), "categories": cats, "seeds": ",".join(map(str, seeds))},
        "efficientnet": {"data_root": _from_repo(data_root), "categories": cats, "effnet_weights": effnet_weights or "",
                         "effnet_d": ",".join("0" if d is None else str(d) for d in effnet_d)},
        "magnetic_tile": {"mt_root": _from_repo(mt_root)},
    }  # fmt: skip
    status: dict[str, str] = {}
    for name in experiments:
        root = mt_root if name == "magnetic_tile" else data_root
        if not root.is_dir():
            status[name] = f"not run: data absent ({root} does not exist)"
            print(f"{name}: {status[name]}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        try:
            execute(NOTEBOOKS[name], Path(book_dir) / BEYOND / f"{NOTEBOOKS[name]}.ipynb", {**common, **params[name]})
            status[name] = "ran"
        except Exception as exc:  # one failing experiment must not stop the others
            status[name] = f"failed: {type(exc).__name__}: {exc}"[:2000]
            traceback.print_exc()
        print(f"{name}: {status[name]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return status
