"""Beyond the paper: PaDiM with an ImageNet EfficientNet backbone beside PaDiM-R18-Rd100.

The paper's best image-level model uses EfficientNet-B5 (Table V), whose weights cannot be had offline; here the
local EfficientNet-Lite0 weights (:func:`padim_repro.backbones.lite0_checkpoint`) in timm's
``tf_efficientnet_lite0``, with the paper's levels 2, 4 and 5 (:func:`padim_repro.backbones.paper_layers`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm
import torch

from ... import backbones as B
from ...config import PadimConfig
from ...features import select_channels
from .. import reference
from ..display import Table, Tables, dash_note, noted, number, percent, signed, sourced, table
from ..provenance import provenance
from ..report import METRIC_LABEL, METRICS, SOURCE_NOTE
from ..rows import RowStore
from ..runs import run_or_load
from .common import beyond_dir, config_text, info_table, present_categories, provenance_rows

#: The model the EfficientNet variants are compared with.
R18_MODEL = "PaDiM-R18-Rd100"


def describe_levels(backbone: str, levels: Sequence[int] = B.PAPER_LEVELS) -> pd.DataFrame:
    """One row per level used: timm module, stage, the blocks it ends with (flat index, 0-based, over all MBConv
    blocks as the ``efficientnet_pytorch`` packages number them), channels and stride, read from the model."""
    with torch.device("meta"):
        model = timm.create_model(backbone, pretrained=False)
        probe = timm.create_model(backbone, features_only=True, pretrained=False)
    depths = [len(stage) for stage in model.blocks]
    info = {m: (c, r) for m, c, r in zip(probe.feature_info.module_name(), probe.feature_info.channels(),
                                          probe.feature_info.reduction())}  # fmt: skip
    rows = []
    for level, module in zip(levels, B.paper_layers(backbone, levels)):
        stage = int(module.split(".")[1])
        first = sum(depths[:stage])
        channels, stride = info[module]
        rows.append({"level": level, "timm module": module, "stage (0-based, of 7)": stage,
                     "blocks of the stage (flat, 0-based)": f"{first}-{first + depths[stage] - 1}",
                     "output = end of block": first + depths[stage] - 1, "channels": channels, "stride": stride,
                     "grid at 224": 224 // stride})  # fmt: skip
    return pd.DataFrame(rows)


def lite0_weights_spec() -> str:
    """:func:`~padim_repro.backbones.lite0_checkpoint` as a ``weights`` spec: relative to the working folder when
    inside it (a virtual environment in the repository gives the same spec, hence the same run keys, on every
    machine), else absolute."""
    path = B.lite0_checkpoint().resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def efficientnet_experiment(data_root: str | Path, results_root: str | Path, weights_r18: str,
                            effnet_weights: str | None = None, effnet_backbone: str | None = None,
                            effnet_d: Sequence[int | None] = (100, 0), categories: Sequence[str] | str | None = None,
                            force: bool = False, **config: Any) -> pd.DataFrame:  # fmt: skip
    """PaDiM-R18-Rd100 and PaDiM-EfficientNet (the paper's levels 2, 4, 5; ``effnet_d`` kept channels each, 0 =
    all) on each category, as ordinary runs (:func:`~padim_repro.study.runs.run_or_load`: reused when complete,
    unless ``force``, which does not apply to the R18-Rd100 runs: those are the runs step's); one row per (category,
    model) in ``RESULTS/beyond/efficientnet.csv``, keyed by its run,
    metrics as fractions.

    Defaults: the local EfficientNet-Lite0 ImageNet weights in ``tf_efficientnet_lite0``.
    """
    backbone = effnet_backbone or B.LITE0_BACKBONE
    weights = effnet_weights or lite0_weights_spec()
    rows_store = RowStore(beyond_dir(results_root), "efficientnet")
    configs = [(R18_MODEL, PadimConfig(weights=weights_r18, **config))]
    for d in effnet_d:
        c = PadimConfig(backbone=backbone, layers=B.paper_layers(backbone), d=d, weights=weights, **config)
        configs.append((f"PaDiM-{backbone}-{'Rd' + str(c.resolved_d) if c.resolved_d else 'all'}", c))
    out = []
    t_start = time.perf_counter()
    for category in present_categories(data_root, categories):
        for name, c in configs:
            # The R18-Rd100 runs are the runs step's (make reproduce computes them first): forced again here, their
            # category pages would show an older run than their metrics.json.
            run = run_or_load(category, data_root, results_root, c, force=force and name != R18_MODEL)
            record = run.record
            row = pd.DataFrame([{
                "category": category, "model": name, "backbone": c.backbone, "layers": ",".join(c.layers),
                "d": record["d"], "n_channels_total": record["n_channels_total"], **{m: record[m] for m in METRICS},
                "fit_s": record["timings"]["fit_s"], "predict_per_image_s": record["timings"]["predict_per_image_s"],
                "weights_id": record["weights"]["fingerprint"],
                "run_dir": run.run_dir.relative_to(results_root).as_posix()}])  # fmt: skip
            group, key = f"{category}/{name}", run.manifest_sha256
            done = rows_store.done(group, key)
            out.append(done if done is not None else rows_store.put(group, key, row))
    rows_store.note(configs={n: c.to_dict() for n, c in configs}, wall_s_last_call=time.perf_counter() - t_start,
                    **provenance())  # fmt: skip
    return pd.concat(out, ignore_index=True).drop(columns=["group", "run_key"])


def kept_channels_per_layer(backbone: str, layers: Sequence[str], d: int | None, seed: int = 1024) -> pd.Series:
    """How many of the ``d`` randomly kept channels (PaDiM's seeded selection) come from each layer."""
    with torch.device("meta"):
        probe = timm.create_model(backbone, features_only=True, pretrained=False,
                                  out_indices=B.layer_indices(backbone, layers))  # fmt: skip
    channels = list(probe.feature_info.channels())
    kept = select_channels(sum(channels), d or None, seed).numpy()
    edges = np.cumsum([0] + channels)
    return pd.Series({f"{name} ({c})": int(((kept >= lo) & (kept < hi)).sum()) for name, c, lo, hi
                      in zip(layers, channels, edges[:-1], edges[1:])})  # fmt: skip


# -- display -------------------------------------------------------------------------------------------------------
def levels_table(backbones: Sequence[str]) -> Table:
    """:func:`describe_levels` of each backbone, one row per (model, level)."""
    levels = pd.concat([describe_levels(b).assign(model=b) for b in dict.fromkeys(backbones)], ignore_index=True)
    return noted(table(levels[["model", *[c for c in levels.columns if c != "model"]]]))


def top_classes_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The ImageNet check: per image (``image``), its top classes (``classes``) and their probabilities
    (``probabilities``, fractions), shown in %."""
    df = pd.DataFrame([{"image": r["image"], "top-3 ImageNet classes": ", ".join(map(str, r["classes"])),
                        "their probabilities (%)": ", ".join(percent(p) for p in r["probabilities"])}
                       for r in rows])  # fmt: skip
    return noted(table(df))


def _short(model: str) -> str:
    """A model's name as a column header: ``PaDiM-tf_efficientnet_lite0-Rd100`` -> ``EfficientNet-lite0-Rd100``."""
    return model.removeprefix("PaDiM-").replace("tf_efficientnet_", "EfficientNet-")


def comparison_tables(df: pd.DataFrame) -> Tables:
    """:func:`efficientnet_experiment`'s rows as one table per metric (in %): per category each model, and for
    every EfficientNet model its Δ to PaDiM-R18-Rd100 in signed points; the last row is the mean over the
    categories."""
    models = list(dict.fromkeys(df.model))
    tables = []
    for m in METRICS:
        wide = 100 * df.pivot_table(index="category", columns="model", values=m, sort=False)[models]
        wide.loc[f"mean of {len(wide)}"] = wide.mean(skipna=False)  # over the same categories for every model
        cols: dict[tuple[str, str], list[str]] = {("category", ""): wide.index.tolist()}
        for model in models:
            cols[(_short(model), "%")] = wide[model].map(number).tolist()
            if model != R18_MODEL and R18_MODEL in wide:
                cols[(_short(model), f"Δ {_short(R18_MODEL)}")] = (wide[model] - wide[R18_MODEL]).map(signed).tolist()
        styler = table(pd.DataFrame(cols), caption=f"{METRIC_LABEL[m]} (%)")
        tables.append(noted(styler, dash_note(styler, {_short(x): "not run on this category" for x in models})))
    tables[-1] = noted(tables[-1].styler, *tables[-1].notes,
                       f"Δ: the model minus {R18_MODEL} on the same category, in percentage points.")
    return Tables(tables)


def paper_table(models: Sequence[str] = ("PaDiM-WR50-Rd550", "PaDiM-EfficientNet-B5")) -> Table:
    """The paper's image AUROC (Table V, mean of all 15 categories) of ``models``, with source marks."""
    paper = reference.paper()
    rows = [{"model": model, "image AUROC, mean of 15 (%)":
             sourced(*(reference.paper_value(paper, model, "all", "image_auroc") or (None, None)))} for model in models]
    styler = table(pd.DataFrame(rows))
    return noted(styler, dash_note(styler, {"image AUROC, mean of 15 (%)": "not available offline"}), SOURCE_NOTE)


def kept_channels_table(configs: dict[str, dict[str, Any]]) -> Table:
    """For each model (``configs``: name -> :class:`~padim_repro.config.PadimConfig` dict), how many of its kept
    channels come from each of its three levels: ``layer (its channels): kept``."""
    rows = []
    for name, cfg in configs.items():
        c = PadimConfig.from_dict(cfg)
        kept = kept_channels_per_layer(c.backbone, c.layers, c.resolved_d, c.seed)
        rows.append({"model": name, "kept channels": int(kept.sum()),
                     **{f"level {i + 1}": f"{layer}: {n}" for i, (layer, n) in enumerate(kept.items())}})  # fmt: skip
    styler = table(pd.DataFrame(rows))
    return noted(styler, dash_note(styler, {"level": "the model has fewer levels"}),
                 "Each level as 'module (its channels): channels kept'.")


def cost_table(df: pd.DataFrame) -> Table:
    """Fitting time (s, to 0.1 s) and time per test image (ms) of every run on this machine, with the embedding
    sizes: each run's own timing (its ``metrics.json``, as on its category page), one pass; the Cost page's
    R18-Rd100 figures are the bench's, in paired rounds in one warm process, so they differ."""
    frame = pd.DataFrame({"category": df.category, "model": df.model, "d": df.d, "channels": df.n_channels_total,
                          "fit (s)": df.fit_s.map(number), "inference per image (ms)":
                          (1e3 * df.predict_per_image_s).map(lambda v: number(v, 0))})  # fmt: skip
    return noted(table(frame), "Each run's own timing, one pass (its metrics.json, as on its category page): the "
                 "Cost page's R18-Rd100 figures are the bench's, in paired rounds in one warm process, and differ.")


def provenance_table(info: dict[str, Any], df: pd.DataFrame) -> Tables:
    """Each model's configuration, the runs (weights and folder of each), and the commit, CPU and versions."""
    configs = info_table({name: config_text(c) for name, c in info.get("configs", {}).items()})
    runs = noted(table(df[["category", "model", "weights_id", "run_dir"]].rename(
        columns={"weights_id": "weights fingerprint", "run_dir": "run folder (under the results)"})))
    return Tables([configs, runs, info_table(provenance_rows(info))])
