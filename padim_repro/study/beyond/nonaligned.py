"""Non-aligned MVTec AD (PaDiM Sec. 4.4, Table VI): random rotations and random crops of train and test images,
and the experiment that runs PaDiM on them (:func:`nonaligned_experiment`).

The paper tests how PaDiM, whose Gaussians are tied to patch positions, copes with objects that are not aligned:
every training and test image is rotated by a random angle in (-10, +10) degrees and a random 224 x 224 crop is
taken from the 256 x 256 resized image (instead of the center crop); the paper builds several such versions of the
dataset and reports the mean.

:class:`NonAlignedDataset` is that transform over the samples of :mod:`padim_repro.data`, reusing its pieces:

1. the first resize (:func:`~padim_repro.data.resize_image`, shorter side to 256, bicubic by default; masks with
   :func:`~padim_repro.data.resize_mask`, nearest neighbour);
2. rotation by ``angle`` degrees (counter-clockwise) about the image center, same size, with bilinear
   interpolation for the image and nearest neighbour for the mask; the corners that come from outside the image
   are black (image) and defect-free (mask);
3. the crop box ``(top, left, 224, 224)``, the same for image and mask;
4. :func:`~padim_repro.data.normalize_image` / :func:`~padim_repro.data.binarize_mask`.

Image and mask go through the same PIL geometry (same rotation center, same box), so they stay aligned.

Determinism: the angle and the box of image ``i`` of ``split`` in dataset version ``seed`` come from
``numpy.random.default_rng([seed, SPLIT_CODE[split], i])``: they depend on (seed, i, split) only, not on the
order in which items are read, on other images or on any global random state.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ...config import PadimConfig
from ...data import MVTecDataset, Sample, binarize_mask, find_samples, normalize_image, resize_image, resize_mask
from .. import reference
from ..display import DASH, Table, dash_note, mean_std, noted, number, signed, sourced, table
from ..identity import code_fingerprint, identity_key
from ..provenance import provenance
from ..report import METRIC_LABEL, METRICS, SOURCE_NOTE
from ..rows import RowStore
from ..runs import fit_evaluate, run_or_load
from .common import beyond_dir, config_text, info_table, present_categories, provenance_rows

#: The paper's rotation range, in degrees (an angle is drawn uniformly in (-MAX_ANGLE, +MAX_ANGLE)).
MAX_ANGLE = 10.0
#: Codes of the splits in the seed of each image's random draws.
SPLIT_CODE = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Placement:
    """Where one image lands: rotation angle in degrees (counter-clockwise) and the crop box's top-left corner."""

    angle: float
    top: int
    left: int


def draw_placement(seed: int, split: str, index: int, height: int, width: int, crop: int,
                   max_angle: float = MAX_ANGLE) -> Placement:  # fmt: skip
    """The placement of image ``index`` of ``split`` in dataset version ``seed``, for a resized image of
    ``height`` x ``width``: angle uniform in (-max_angle, max_angle), box uniform over every position that fits."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got {split!r}")
    if crop > min(height, width):
        raise ValueError(f"crop {crop} does not fit in a {height}x{width} image")
    rng = np.random.default_rng([seed, SPLIT_CODE[split], index])
    angle = float(rng.uniform(-max_angle, max_angle))
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    return Placement(angle, top, left)


class NonAlignedDataset(MVTecDataset):
    """An :class:`~padim_repro.data.MVTecDataset` whose items are randomly rotated and cropped (see module doc).

    Args:
        samples: the samples of one split (``find_samples``).
        split: ``train`` or ``test`` (enters the random draws).
        seed: the dataset version.
        resize, crop, interpolation: as in the aligned protocol (256, 224, bicubic).
        max_angle: half-width of the rotation range in degrees (the paper: 10).
    """

    def __init__(self, samples: Sequence[Sample], split: str, seed: int, resize: int = 256, crop: int = 224,
                 interpolation: str = "bicubic", max_angle: float = MAX_ANGLE):  # fmt: skip
        super().__init__(samples, resize, crop, interpolation)
        if split not in SPLIT_CODE:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODE)}, got {split!r}")
        self.split, self.seed, self.max_angle = split, seed, max_angle

    def placement(self, i: int, height: int, width: int) -> Placement:
        """The placement of item ``i`` given its resized size."""
        return draw_placement(self.seed, self.split, i, height, width, self.crop, self.max_angle)

    def placed(self, i: int) -> tuple[Image.Image, Image.Image | None]:
        """Item ``i`` resized, rotated and cropped: the RGB image and the grayscale mask (None for a good image)."""
        image, mask = self.open_sample(i)
        image = resize_image(image, self.resize, self.interpolation)
        p = self.placement(i, image.height, image.width)
        image = TF.rotate(image, p.angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        image = TF.crop(image, p.top, p.left, self.crop, self.crop)
        if mask is not None:
            mask = TF.rotate(resize_mask(mask, self.resize), p.angle, interpolation=InterpolationMode.NEAREST, fill=0)
            mask = TF.crop(mask, p.top, p.left, self.crop, self.crop)
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, mask = self.placed(i)
        m = torch.zeros(self.crop, self.crop, dtype=torch.bool) if mask is None else binarize_mask(mask)
        return normalize_image(image), m, self.samples[i].label

    def display(self, i: int) -> np.ndarray:
        """Item ``i`` as the model saw it, before normalisation: uint8 (crop, crop, 3), for figures."""
        return np.asarray(self.placed(i)[0])


def load_nonaligned(root, category: str, seed: int, resize: int = 256, crop: int = 224,
                    interpolation: str = "bicubic", max_angle: float = MAX_ANGLE
                    ) -> tuple[NonAlignedDataset, NonAlignedDataset]:  # fmt: skip
    """The (train, test) datasets of ``category`` in non-aligned version ``seed`` (validated like the aligned ones)."""
    return tuple(
        NonAlignedDataset(find_samples(root, category, split), split, seed, resize, crop, interpolation, max_angle)
        for split in ("train", "test")
    )  # type: ignore[return-value]


#: Seeded non-aligned versions of the dataset: three, enough for a spread (the noise a drop is judged against), at
#: three fifths of the compute of five.
NONALIGNED_SEEDS = (0, 1, 2)
#: The paper's non-aligned model, and its aligned counterpart.
PAPER_NONALIGNED_MODEL = "PaDiM-WR50-Rd550 on non-aligned MVTec"
PAPER_ALIGNED_MODEL = "PaDiM-WR50-Rd550"
#: The study modules whose code, with the method's, computes a non-aligned row.
CODE = ("study/runs.py", "study/beyond/nonaligned.py")


def nonaligned_experiment(data_root: str | Path, results_root: str | Path, weights: str,
                          categories: Sequence[str] | str | None = None, seeds: Sequence[int] = NONALIGNED_SEEDS,
                          force: bool = False, progress: bool | None = None, **config: Any
                          ) -> pd.DataFrame:  # fmt: skip
    """PaDiM (default R18-Rd100; ``config`` overrides :class:`~padim_repro.config.PadimConfig` fields) on each
    category, aligned and in each non-aligned version ``seeds``; one row per (category, protocol, seed), metrics as
    fractions.

    The aligned row is the ordinary run of :func:`~padim_repro.study.runs.run_or_load`. Each non-aligned row is a
    group of ``RESULTS/beyond/nonaligned.csv`` keyed by the aligned run's identity (settings, data, weights), the
    seed, the rotation range and the code (:class:`~padim_repro.study.rows.RowStore`), stored as soon as it is
    computed (an interrupted call resumes where it stopped) and reused unless ``force``. Returns this call's rows.
    """
    cfg = PadimConfig(weights=weights, **config)
    rows_store, code = RowStore(beyond_dir(results_root), "nonaligned"), code_fingerprint(CODE)
    out = []
    t_start = time.perf_counter()
    for category in present_categories(data_root, categories):
        # The aligned run is the runs step's (make reproduce computes it first): forced again here, its category
        # page would show an older run than its metrics.json. ``force`` recomputes this experiment's own rows.
        aligned = run_or_load(category, data_root, results_root, cfg, progress=progress)
        rec = aligned.record
        common = {"weights_id": rec["weights"]["fingerprint"], "run_key": aligned.manifest.get("key")}
        out.append({"category": category, "protocol": "aligned", "seed": -1, **{m: rec[m] for m in METRICS},
                    "fit_s": rec["timings"]["fit_s"], "predict_s": rec["timings"]["predict_s"], **common})
        for seed in seeds:
            group = f"{category}/seed{int(seed)}"
            key = identity_key({"aligned": aligned.manifest.get("identity"), "seed": int(seed), "max_angle": MAX_ANGLE,
                                "code": code}, 16)  # fmt: skip
            done = None if force else rows_store.done(group, key)
            if done is None:
                train, test = load_nonaligned(data_root, category, seed, cfg.resize, cfg.crop, cfg.interpolation)
                res = fit_evaluate(cfg, train, test, progress)
                done = rows_store.put(group, key, pd.DataFrame([{
                    "category": category, "protocol": "non-aligned", "seed": int(seed),
                    **{m: res["metrics"][m] for m in METRICS}, "fit_s": res["timings"]["fit_s"],
                    "predict_s": res["timings"]["predict_s"], "weights_id": res["weights_id"]}]))  # fmt: skip
                print(f"non-aligned {category} seed {seed}: "
                      + ", ".join(f"{m} {res['metrics'][m]:.4f}" for m in METRICS), file=sys.stderr)  # fmt: skip
            out.append(done.drop(columns=["group", "run_key"]).iloc[0].to_dict())
    rows_store.note(config=cfg.to_dict(), seeds=list(seeds), max_angle=MAX_ANGLE, data_root=str(data_root), code=code,
                    wall_s_last_call=time.perf_counter() - t_start, **provenance())  # fmt: skip
    return pd.DataFrame(out)


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


# -- display -------------------------------------------------------------------------------------------------------
DROP_NOTE = "Drop: aligned minus the non-aligned mean, in percentage points (positive: worse without alignment)."


def summary_table(summary: pd.DataFrame) -> Table:
    """:func:`nonaligned_summary` as shown: per metric (in %) the aligned value, the non-aligned mean ± std over
    the seeds and the drop in signed points."""
    cols: dict[tuple[str, str], list[Any]] = {("category", ""): summary.category.tolist()}
    seeds = summary.seeds.unique()
    if len(seeds) > 1:
        cols[("seeds", "")] = summary.seeds.tolist()
    for m in METRICS:
        cols[(METRIC_LABEL[m], "aligned")] = summary[f"{m} aligned"].map(number).tolist()
        cols[(METRIC_LABEL[m], "non-aligned")] = [mean_std(v, s) for v, s in zip(summary[f"{m} non-aligned mean"],
                                                                                 summary[f"{m} non-aligned std"])]
        cols[(METRIC_LABEL[m], "drop")] = summary[f"{m} drop"].map(signed).tolist()
    styler = table(pd.DataFrame(cols))
    reasons = {"aligned": "no aligned run", "non-aligned": "no non-aligned version run", "drop": "nothing to compare"}
    over = "the seeds" if len(seeds) > 1 else f"the {seeds[0]} seeds (dataset versions)"
    return noted(styler, dash_note(styler, reasons), f"Non-aligned: mean ± sample standard deviation over {over}; "
                 "for the mean over categories, the standard deviation of the per-seed means.", DROP_NOTE)  # fmt: skip


def paper_table() -> Table:
    """:func:`nonaligned_paper` as shown: per metric the paper's aligned and non-aligned values (source marks) and
    the drop, in %."""
    paper = nonaligned_paper()
    frame = pd.DataFrame({
        "metric": paper.metric.map(METRIC_LABEL), "model": paper.model,
        "aligned (Table III)": [sourced(v, s) for v, s in zip(paper["aligned (Table III)"], paper["aligned source"])],
        "non-aligned (Table VI)": [sourced(v, s) for v, s in zip(paper["non-aligned (Table VI)"],
                                                                 paper["non-aligned source"])],
        "drop": paper["drop"].map(signed)})  # fmt: skip
    styler = table(frame)
    reasons = {"aligned (Table III)": "the paper (as available offline) gives no value",
               "non-aligned (Table VI)": "the paper gives no image-level AUROC for this protocol",
               "drop": "nothing to compare"}  # fmt: skip
    return noted(styler, dash_note(styler, reasons), DROP_NOTE, SOURCE_NOTE)


def drop_lines(summary: pd.DataFrame, model: str = "R18-Rd100") -> str:
    """Markdown: our drop over the categories run beside the paper's, for the metrics the paper reports."""
    last, paper = summary.iloc[-1], nonaligned_paper().set_index("metric")
    return "\n".join(f"- {METRIC_LABEL[m]}: a drop of {signed(last[f'{m} drop'])} points here ({last['category']}, "
                     f"{model}) against {signed(paper.loc[m, 'drop'])} in the paper (all 15 categories, WR50-Rd550)."
                     for m in METRICS if not np.isnan(paper.loc[m, "drop"]))  # fmt: skip


def runs_table(df: pd.DataFrame) -> Table:
    """Every run of :func:`nonaligned_experiment`: category, protocol, seed, fitting and inference time (s)."""
    frame = pd.DataFrame({"category": df.category, "protocol": df.protocol,
                          "seed": [DASH if s < 0 else str(int(s)) for s in df.seed],
                          "fit (s)": df.fit_s.map(number), "inference, test set (s)": df.predict_s.map(number)})
    styler = table(frame)
    return noted(styler, dash_note(styler, {"seed": "the aligned run (center crop) has no seed of the transform"}))


def info_rows(info: dict[str, Any]) -> Table:
    """The experiment's settings and provenance (``nonaligned.json``) as a 2-column table."""
    return info_table({"configuration": config_text(info["config"]),
                       "seeds": ", ".join(map(str, info.get("seeds", []))),
                       "rotation": f"uniform in (−{info.get('max_angle'):g}°, +{info.get('max_angle'):g}°)",
                       "code fingerprint": info.get("code"), **provenance_rows(info)})  # fmt: skip
