"""One PaDiM run on one category: fit, predict, evaluate, and write traceable, atomic outputs.

A run folder holds ``metrics.json`` (metrics, config, timings, data counts, weights identity, versions, commit)
and ``predictions.npz`` (image scores, labels, defect types, float16 anomaly maps and bit-packed masks, for
figures). ``metrics.json`` is written last, so its presence means the run finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PadimConfig
from ..data import MVTecDataset, batches, category_group, load_category
from ..metrics import evaluate
from ..model import Padim
from ..storage import sha256_file, write_json, write_npz
from .provenance import provenance

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
MODEL_FILE = "model.pt"


def default_run_dir(results_root: str | Path, category: str, config: PadimConfig) -> Path:
    """``RESULTS/runs/CATEGORY/BACKBONE-dD-KEY``: runs with other settings never share a folder."""
    d = config.resolved_d or "all"
    return Path(results_root) / "runs" / category / f"{config.backbone}-d{d}-{config.key()}"


def weights_record(config: PadimConfig, weights_id: str) -> dict[str, Any]:
    """How the weights were obtained and their content hash (the identity results are keyed by)."""
    rec: dict[str, Any] = {"spec": config.weights, "fingerprint": weights_id}
    if config.weights not in ("tv_in1k", "timm", "none"):
        path = Path(config.weights)
        rec.update(file=path.name, file_sha256=sha256_file(path))
    elif config.weights == "tv_in1k":
        rec["hub_model"] = f"timm/{config.backbone}.tv_in1k"
    elif config.weights == "timm":  # timm's default hub weights (EfficientNets)
        rec["hub_model"] = f"timm/{config.backbone}"
    return rec


def fit_evaluate(config: PadimConfig, train: MVTecDataset, test: MVTecDataset,
                 progress: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit PaDiM on ``train``, score ``test`` and evaluate: metrics, the predictions and timings.

    Returns ``{"metrics": evaluate(...), "maps", "masks", "scores", "labels", "defect_types", "timings",
    "weights_id", "n_channels_total", "d", "model"}`` (arrays as numpy, ``model`` the fitted :class:`~padim_repro.model.Padim`).
    """
    model = Padim(config, progress=progress)
    t0 = time.perf_counter()
    model.fit(batches(train, config.batch_size))
    fit_s = time.perf_counter() - t0
    fit_breakdown = dict(model.timings_)
    masks: list[torch.Tensor] = []

    def images():
        for x, m in batches(test, config.batch_size):
            masks.append(m)
            yield x

    t0 = time.perf_counter()
    maps, scores = model.predict(images())
    predict_s = time.perf_counter() - t0
    mask_arr = torch.cat(masks).numpy()
    labels, types = test.labels, test.defect_types
    t0 = time.perf_counter()
    metrics = evaluate(maps, mask_arr, scores, labels, types)
    metrics_s = time.perf_counter() - t0
    return {
        "metrics": metrics, "maps": maps, "masks": mask_arr, "scores": scores, "labels": labels,
        "defect_types": types, "weights_id": model.weights_id_, "n_channels_total": model.extractor.n_channels,
        "d": config.resolved_d or model.extractor.n_channels,
        "model": model,
        "timings": {"fit_s": fit_s, "fit_breakdown_s": fit_breakdown, "predict_s": predict_s,
                    "predict_per_image_s": predict_s / len(test), "predict_breakdown_s": dict(model.timings_),
                    "metrics_s": metrics_s, "n_train": len(train), "n_test": len(test)},
    }  # fmt: skip


def run_category(
    data_root: str | Path,
    category: str,
    config: PadimConfig,
    out_dir: str | Path,
    save_model: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fit PaDiM on ``category``'s training images, score its test set, evaluate, and write the outputs.

    Returns the record written to ``metrics.json``.
    """
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    train, test = load_category(data_root, category, config.resize, config.crop, config.interpolation)
    res = fit_evaluate(config, train, test, progress)
    maps, mask_arr, scores = res["maps"], res["masks"], res["scores"]
    labels, defect_types = res["labels"], res["defect_types"]
    metrics, timings, model = res["metrics"], res["timings"], res["model"]

    record: dict[str, Any] = {
        **metrics,
        "category": category,
        "group": category_group(category),
        "backbone": config.backbone,
        "config": config.to_dict(),
        "config_key": config.key(),
        "d": res["d"],
        "n_channels_total": res["n_channels_total"],
        "weights": weights_record(config, res["weights_id"]),
        "data": {
            "root": str(data_root),
            "n_train": len(train),
            "n_test": len(test),
            "n_test_defective": int(labels.sum()),
            "defect_types": sorted(set(defect_types) - {"good"}),
        },
        "timings": {k: v for k, v in timings.items() if not k.startswith("n_")}
        | {"total_s": time.perf_counter() - t_start},
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        **provenance(),
    }
    write_npz(
        out_dir / PREDICTIONS_FILE,
        scores=scores.astype(np.float32),
        labels=labels,
        defect_types=np.array(defect_types),
        image_paths=np.array([str(s.image_path.relative_to(Path(data_root))) for s in test.samples]),
        maps=maps.astype(np.float16),
        masks=np.packbits(mask_arr, axis=-1),
        mask_shape=np.array(mask_arr.shape),
    )
    if save_model:
        model.save(out_dir / MODEL_FILE)
    write_json(out_dir / METRICS_FILE, record)
    return record


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read ``predictions.npz`` back: maps as float32 and masks unpacked to bool (N, H, W)."""
    with np.load(Path(run_dir) / PREDICTIONS_FILE) as z:
        out = {k: z[k] for k in z.files}
    shape = tuple(out.pop("mask_shape"))
    out["masks"] = np.unpackbits(out["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
    out["maps"] = out["maps"].astype(np.float32)
    return out


def is_complete(run_dir: str | Path) -> bool:
    """A run is complete when both its metrics and predictions were written."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS_FILE).is_file() and (run_dir / PREDICTIONS_FILE).is_file()


def run_or_load(
    category: str, data_root: str | Path, results_root: str | Path, config: PadimConfig, force: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray], Path]:
    """The record and predictions of ``category`` under ``config``: computed, or read back if already complete."""
    run_dir = default_run_dir(results_root, category, config)
    if force or not is_complete(run_dir):
        run_category(data_root, category, config, run_dir)
    record = json.loads((run_dir / METRICS_FILE).read_text())
    return record, load_predictions(run_dir), run_dir
