"""The Magnetic Tile Defect dataset (Y. Huang et al., "Saliency of magnetic tile surface defects", 2018; see
:data:`CITATION`), as a second real dataset with pixel masks for PaDiM.

Layout: ``ROOT/MT_{Blowhole,Break,Crack,Fray,Uneven}/Imgs/*.jpg`` are defective tiles, ``ROOT/MT_Free/Imgs/*.jpg``
defect-free ones; every image has a same-named ``.png`` mask (defect pixels bright; the masks have soft borders,
and a pixel is a defect pixel above 127, :data:`MASK_THRESHOLD`). Images are grayscale and of many sizes and aspect
ratios (about 0.4 to 2.7).

There is no official split; :func:`split_samples` defines one, seeded and documented: the defect-free images,
sorted by file name, are shuffled with ``numpy.random.default_rng(seed).permutation`` and the first
``round(train_fraction * n)`` are the training set; the test set is the other defect-free images plus **every**
defective image. The split depends only on the seed, the fraction and the set of file names.

Preprocessing: MVTec AD's protocol (shorter side to 256, center crop 224) would crop away the ends of the elongated
tiles, and with them many defects (breaks and frays lie at the tile's edges; :func:`crop_loss` measures how much
each option would lose). Here each image is instead resized to ``size`` x ``size`` (default 224, bicubic; masks
nearest), distorting the aspect ratio but keeping the whole tile; the network then sees a 224 x 224 input as in
the paper and PaDiM's embedding grid is the same (56 x 56 for ResNet-18). The datasets are
:class:`~padim_repro.data.MVTecDataset` objects over :class:`~padim_repro.data.Sample` records, validated by
:func:`~padim_repro.data.checked_sample` (an unreadable image, a missing mask or a mask of another size is a
:class:`~padim_repro.data.DataError` naming the file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ...config import PadimConfig
from ...data import DataError, MVTecDataset, Sample, checked_sample, mask_defects, open_image
from ...model import Padim
from ...storage import write_json, write_npz
from ..display import Table, dash_note, noted, number, percent, table
from ..identity import code_fingerprint, data_fingerprint, identity_key, sample_files
from ..plots import select_examples
from ..provenance import provenance
from ..report import METRIC_LABEL, METRICS
from ..runs import fit_evaluate, is_complete, replace_outputs, settings, start_outputs, write_manifest
from .common import beyond_dir, config_text, info_table, per_defect_metrics, provenance_rows, write_csv

#: The dataset's defect folders (without the ``MT_`` prefix) and the defect-free one.
DEFECT_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
FREE = "Free"
#: The masks have soft borders: a defect pixel is one above this value (MVTec AD's rule, any non-zero pixel,
#: would grow every defect by its blurred border).
MASK_THRESHOLD = 127
#: The study modules whose code, with the method's, computes the experiment.
CODE = ("study/runs.py", "study/beyond/magnetic_tile.py", "study/beyond/common.py")
#: Default split: seed and fraction of the defect-free images used for training.
SPLIT_SEED = 0
TRAIN_FRACTION = 0.5
#: How to cite the dataset.
CITATION = (
    'Y. Huang et al., "Saliency of magnetic tile surface defects", 2018 (the title the dataset\'s README gives; '
    'published at IEEE CASE 2018 as "Surface Defect Saliency of Magnetic Tile"). '
    "Data: https://github.com/abin24/Magnetic-tile-defect-datasets"
)


def _folder(root: Path, kind: str) -> Path:
    return root / f"MT_{kind}" / "Imgs"


def find_tile_samples(root: str | Path, kind: str) -> list[Sample]:
    """The samples of one folder (``Free`` or a defect type), sorted by file name, each checked.

    Defect-free images get defect type ``good`` and no mask path (their masks are checked to exist, be readable
    and have the image's size, but are empty by construction and not read again).
    """
    root = Path(root)
    folder = _folder(root, kind)
    if not folder.is_dir():
        present = sorted(p.name for p in root.glob("MT_*")) if root.is_dir() else []
        raise DataError(f"folder {folder} is missing (under {root}: {', '.join(present) or 'no MT_* folder'})")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
    if not images:
        raise DataError(f"no .jpg image in {folder}")
    samples = []
    for img in images:
        sample = checked_sample(img, kind, img.with_suffix(".png"))  # checks the image and its mask
        samples.append(sample if kind != FREE else Sample(img, 0, "good", None))
    return samples


@dataclass(frozen=True)
class TileSplit:
    """A train / test split of the Magnetic Tile data: the samples and how they were chosen."""

    train: list[Sample]
    test: list[Sample]
    seed: int
    train_fraction: float

    def summary(self) -> pd.DataFrame:
        """Counts per split and defect type."""
        rows = [{"split": name, "defect type": s.defect_type} for name, part in (("train", self.train),
                ("test", self.test)) for s in part]  # fmt: skip
        return pd.DataFrame(rows).value_counts().rename("images").reset_index().sort_values(["split", "defect type"])


def present_defect_types(root: str | Path) -> list[str]:
    """The defect folders under ``root`` (``MT_X/Imgs`` for every X but ``Free``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Magnetic Tile root {root} does not exist or is not a folder")
    return sorted(p.name[3:] for p in root.glob("MT_*") if (p / "Imgs").is_dir() and p.name != f"MT_{FREE}")


def split_samples(root: str | Path, seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION,
                  defect_types: Sequence[str] | None = None) -> TileSplit:  # fmt: skip
    """The seeded split described in the module doc: part of ``MT_Free`` to train, the rest and all defects to test.

    ``defect_types``: the defect folders to test on (default: every one present, the dataset's five).
    """
    if defect_types is None:
        defect_types = present_defect_types(root)
        if not defect_types:
            raise DataError(f"no defect folder (MT_{{type}}/Imgs) under {root}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    free = find_tile_samples(root, FREE)
    n_train = round(train_fraction * len(free))
    if not 0 < n_train < len(free):
        raise DataError(f"{len(free)} defect-free images cannot be split with train_fraction {train_fraction}")
    order = np.random.default_rng(seed).permutation(len(free))
    train = [free[i] for i in sorted(order[:n_train])]
    test = [free[i] for i in sorted(order[n_train:])]
    for kind in defect_types:
        test += find_tile_samples(root, kind)
    return TileSplit(train, test, seed, train_fraction)


class MagneticTileDataset(MVTecDataset):
    """Magnetic Tile images resized to ``size`` x ``size`` without cropping (see the module doc); items as
    :class:`~padim_repro.data.MVTecDataset`'s: (image (3, size, size) float32, mask (size, size) bool, label)."""

    def __init__(self, samples: Sequence[Sample], size: int = 224, interpolation: str = "bicubic"):
        # The dataset's masks have soft borders (a defect pixel is one above 127) and four of its defect images
        # have empty masks (kept: they are defect images the ground truth does not localise).
        super().__init__(samples, resize=(size, size), crop=size, interpolation=interpolation,  # type: ignore[arg-type]
                         mask_threshold=MASK_THRESHOLD, allow_empty_masks=True)  # fmt: skip
        self.size = size


def load_magnetic_tile(root: str | Path, seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION,
                       size: int = 224, interpolation: str = "bicubic"
                       ) -> tuple[MagneticTileDataset, MagneticTileDataset, TileSplit]:  # fmt: skip
    """The (train, test) datasets of the seeded split, and the split itself."""
    split = split_samples(root, seed, train_fraction)
    return (MagneticTileDataset(split.train, size, interpolation), MagneticTileDataset(split.test, size, interpolation),
            split)  # fmt: skip


def crop_loss(samples: Sequence[Sample], resize: int = 256, crop: int = 224) -> pd.DataFrame:
    """Share of each defect image's defect pixels that a center crop would remove, under two resize options.

    ``shorter side``: MVTec AD's protocol (shorter side to ``resize``, center crop ``crop``): the kept region is a
    centered square of side ``crop * min(w, h) / resize`` in the original image. ``squash``: both sides to
    ``resize``, then the center crop: a centered box of ``crop / resize`` of each side. (Resizing straight to
    ``crop`` x ``crop``, as :class:`MagneticTileDataset` does, removes nothing.) Computed on the original masks.
    """
    rows = []
    for s in samples:
        if s.mask_path is None:
            continue
        m = mask_defects(open_image(s.mask_path, mask=True), MASK_THRESHOLD)
        h, w = m.shape
        total = int(m.sum())
        row = {"defect type": s.defect_type, "image": s.image_path.name, "width": w, "height": h,
               "defect pixels": total}  # fmt: skip
        side = crop * min(w, h) / resize
        for name, (bh, bw) in {"shorter side": (side, side), "squash": (h * crop / resize, w * crop / resize)}.items():
            top, left = int(round((h - bh) / 2)), int(round((w - bw) / 2))
            kept = int(m[top: top + int(round(bh)), left: left + int(round(bw))].sum())
            row[f"lost, {name}"] = 1 - kept / total if total else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def display_tile(path: str | Path, size: int = 224) -> np.ndarray:
    """A tile image as the model saw it, before normalisation: uint8 (size, size, 3), for figures."""
    from ...data import resize_image

    return np.asarray(resize_image(open_image(Path(path)), (size, size)))


def empty_masks(samples: Sequence[Sample]) -> list[str]:
    """Names of the defect images whose mask has no pixel above 127 (they count as defective images but add no
    defect pixel)."""
    return [s.image_path.name for s in samples if s.mask_path is not None
            and not mask_defects(open_image(s.mask_path, mask=True), MASK_THRESHOLD).any()]  # fmt: skip


def make_synthetic_magnetic_tile(root: str | Path, n_free: int = 12, n_defect: int = 3,
                                 defect_types: Sequence[str] = ("Blowhole", "Crack"),
                                 sizes: Sequence[tuple[int, int]] = ((64, 40), (48, 72), (56, 56)),
                                 seed: int = 0) -> Path:  # fmt: skip
    """Write a small grayscale dataset in the Magnetic Tile layout under ``root`` (for tests and demos): images of
    the given (width, height) sizes in turn, each defect image with a bright or dark ellipse and its 0/255 mask,
    every image with a same-named ``.png`` mask (empty for ``MT_Free``). Returns ``root``."""
    from ..synthetic import _texture

    root = Path(root)
    rng = np.random.default_rng(seed)
    freqs = np.column_stack([rng.integers(1, 4, 3), rng.integers(1, 4, 3), rng.uniform(0.5, 1.0, 3)])

    def write(kind: str, i: int, defect: bool) -> None:
        w, h = sizes[i % len(sizes)]
        img = _texture(rng, max(w, h), freqs)[:h, :w].mean(-1)
        mask = np.zeros((h, w), bool)
        if defect:
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
            ry, rx = max(2, h // 8), max(2, w // 8)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[mask] = 250.0 if rng.random() < 0.5 else 10.0
        folder = _folder(root, kind)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8), "L").save(folder / f"tile_{i:03d}.jpg", quality=95)
        Image.fromarray((mask * 255).astype(np.uint8), "L").save(folder / f"tile_{i:03d}.png")

    for i in range(n_free):
        write(FREE, i, False)
    for kind in defect_types:
        for i in range(n_defect):
            write(kind, i, True)
    return root


def magnetic_tile_experiment(mt_root: str | Path, results_root: str | Path, weights: str, split_seed: int | None = None,
                             train_fraction: float | None = None, size: int = 224, force: bool = False,
                             progress: bool | None = None, n_examples: int = 4, **config: Any
                             ) -> dict[str, Any]:  # fmt: skip
    """PaDiM (default R18-Rd100) on the seeded Magnetic Tile split, images resized to ``size`` x ``size``.

    Writes, in ``RESULTS/beyond/magnetic_tile/``: ``metrics.csv`` (one row for all defects, one per defect type:
    image AUROC, pixel AUROC, PRO as fractions), ``scores.csv`` (every test image's score), ``info.json`` (config,
    split, timings, provenance), ``examples.npz`` (maps and masks of a few test images for figures) and, last, the
    ``manifest.json`` of :func:`~padim_repro.study.runs.write_manifest`: the outputs are reused only when it names
    the same settings, split, data (every file's content), weights and code (unless ``force``). Returns
    ``{"metrics": DataFrame, "scores": DataFrame, "info": dict, "examples": dict}``.
    """
    split_seed = SPLIT_SEED if split_seed is None else split_seed
    train_fraction = TRAIN_FRACTION if train_fraction is None else train_fraction
    folder = beyond_dir(results_root) / "magnetic_tile"
    files = {k: folder / name for k, name in (("metrics", "metrics.csv"), ("scores", "scores.csv"),
                                              ("info", "info.json"), ("examples", "examples.npz"))}  # fmt: skip
    cfg = PadimConfig(weights=weights, resize=size, crop=size, **config)
    train, test, split = load_magnetic_tile(mt_root, split_seed, train_fraction, size, cfg.interpolation)
    model = Padim(cfg, progress=progress)
    data = data_fingerprint(mt_root, sample_files(train.samples + test.samples))
    identity = {"settings": settings(cfg, model.device.type), "split": [split_seed, train_fraction, size],
                "data": data["sha256"], "weights": model.extractor.weights_id, "code": code_fingerprint(CODE)}
    if force or not is_complete(folder, identity, required=tuple(p.name for p in files.values())):
        start_outputs(folder)
        t0 = time.perf_counter()
        res = fit_evaluate(cfg, train, test, progress, model=model)
        wall = time.perf_counter() - t0
        overall = {"scope": "all defects", "n defective": int(res["labels"].sum()),
                   "n good": int((res["labels"] == 0).sum()), **{m: res["metrics"][m] for m in METRICS}}  # fmt: skip
        per = per_defect_metrics(res["maps"], res["masks"], res["scores"], res["labels"], res["defect_types"])
        replace_outputs(folder)
        write_csv(files["metrics"], pd.concat([pd.DataFrame([overall]), per], ignore_index=True))
        write_csv(files["scores"], pd.DataFrame({
            "image": [str(s.image_path.relative_to(Path(mt_root))) for s in test.samples],
            "defect_type": res["defect_types"], "label": res["labels"], "score": res["scores"]}))
        pred = {"scores": res["scores"], "labels": res["labels"]}
        idx = np.unique(np.concatenate(list(select_examples(pred, n_examples).values())))
        write_npz(files["examples"], index=idx, maps=res["maps"][idx].astype(np.float16),
                  masks=res["masks"][idx], vmin=np.percentile(res["maps"][res["labels"] == 0], 1))
        prov = provenance()
        write_json(files["info"], {
            "config": cfg.to_dict(), "weights_id": res["weights_id"],
            "d": res["d"], "n_channels_total": res["n_channels_total"], "mt_root": str(mt_root),
            "split": {"seed": split_seed, "train_fraction": train_fraction, "n_train": len(train),
                      "n_test": len(test), "counts": split.summary().to_dict("records")},
            "preprocessing": f"every image resized to {size}x{size} (bicubic; masks nearest), no crop",
            "timings": {**res["timings"], "wall_s": wall}, "citation": CITATION, **prov})  # fmt: skip
        write_manifest(folder, identity_key(identity), identity, list(files.values()), git_commit=prov["git_commit"],
                       data_files=data["files"])  # fmt: skip
    ex = np.load(files["examples"])
    return {"metrics": pd.read_csv(files["metrics"]), "scores": pd.read_csv(files["scores"]),
            "info": json.loads(files["info"].read_text()), "examples": {k: ex[k] for k in ex.files}}  # fmt: skip


# -- display -------------------------------------------------------------------------------------------------------
def split_table(split: TileSplit) -> Table:
    """Images per defect type in the training and the test set."""
    counts = split.summary().pivot_table(index="defect type", columns="split", values="images", fill_value=0)
    frame = counts.reindex(columns=["train", "test"], fill_value=0).astype(int).reset_index()
    frame.columns.name = None
    return noted(table(frame))


def crop_loss_table(loss: pd.DataFrame) -> Table:
    """:func:`crop_loss` per defect type: the defect images, and for each cropping option the mean share of their
    defect pixels it would remove (%) and how many images would lose their whole defect."""
    cols: dict[tuple[str, str], list[Any]] = {("defect type", ""): [], ("images", ""): []}
    options = [c.removeprefix("lost, ") for c in loss.columns if c.startswith("lost, ")]
    for defect, sub in loss.groupby("defect type"):
        cols[("defect type", "")].append(defect)
        cols[("images", "")].append(len(sub))
        for option in options:
            lost = sub[f"lost, {option}"]
            cols.setdefault((f"crop, {option}", "defect pixels lost (%)"), []).append(percent(lost.mean()))
            cols.setdefault((f"crop, {option}", "images losing all"), []).append(int((lost > 0.999).sum()))
    styler = table(pd.DataFrame(cols))
    return noted(styler, dash_note(styler, {"defect pixels lost (%)": "every mask of this type is empty"}),
                 "shorter side: MVTec AD's protocol (shorter side to 256, center crop 224); squash: both sides to "
                 "256, then the center crop.")  # fmt: skip


def results_table(metrics: pd.DataFrame) -> Table:
    """The experiment's metrics (``metrics.csv``) in %: all defects pooled, then each defect type (that type's
    images and all good test images), with the image counts."""
    frame = pd.DataFrame({"scope": metrics.scope, **{METRIC_LABEL[m]: metrics[m].map(percent) for m in METRICS},
                          "defective images": metrics["n defective"], "good images": metrics["n good"]})  # fmt: skip
    styler = table(frame)
    reason = "undefined: no defect pixel in this type's masks"
    return noted(styler, dash_note(styler, {METRIC_LABEL[m]: reason for m in METRICS[1:]}))


def defect_share_table(dataset: MagneticTileDataset) -> Table:
    """How the test set's defect pixels and defect regions (8-connected, at the model's resolution) divide among
    the defect types, in % of all."""
    from scipy import ndimage

    defective = [i for i, s in enumerate(dataset.samples) if s.label]
    masks = [dataset[i][1].numpy() for i in defective]
    share = pd.DataFrame({"defect type": [dataset.samples[i].defect_type for i in defective],
                          "defect pixels (% of all)": [int(m.sum()) for m in masks],
                          "defect regions (% of all)": [ndimage.label(m, np.ones((3, 3)))[1] for m in masks]})
    totals = share.groupby("defect type").sum()
    return noted(table((totals / totals.sum()).reset_index(), {c: percent for c in totals.columns}))


def info_rows(info: dict[str, Any]) -> Table:
    """The experiment's settings, split, timings and provenance (``info.json``) as a 2-column table."""
    split, t = info.get("split", {}), info.get("timings", {})
    seconds = ", ".join(f"{number(t.get(k))} s" for k in ("fit_s", "predict_s", "wall_s"))
    return info_table({
        "configuration": config_text(info["config"]), "weights fingerprint": info.get("weights_id"),
        "split": f"seed {split.get('seed')}, {percent(split.get('train_fraction'), 0)} % of the defect-free images "
                 f"to train: {split.get('n_train')} training, {split.get('n_test')} test images",
        "preprocessing": info.get("preprocessing"),
        "fit, inference, whole experiment": seconds,
        **provenance_rows(info)})  # fmt: skip
