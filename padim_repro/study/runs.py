"""One PaDiM run on one category, tied to its exact inputs, and complete or absent.

A run's **identity** is everything that determines its numbers: the settings (every field of the
:class:`~padim_repro.config.PadimConfig` but the weights' spec, with d and the device type resolved and the batch
size included), the data actually read (:func:`~padim_repro.study.identity.data_fingerprint`: every file's path,
size and sha256), the weights' content hash and the code (:func:`~padim_repro.study.identity.code_fingerprint` of
the method and this module). Its folder ``RESULTS/runs/CATEGORY/BACKBONE-dD-KEY`` is keyed by all of it but the code,
so another copy of the data or other weights never share (or overwrite) a folder, and a change of the code
recomputes the run in place.

A folder holds ``metrics.json`` (metrics, settings, timings, data counts, weights, versions, commit),
``predictions.npz`` (image scores, labels, defect types, float16 anomaly maps and bit-packed masks, for figures),
optionally ``model.pt``, and ``manifest.json``: the identity, the data fingerprint and every output with its
sha256. The manifest is removed once every input is read and every number computed, just before the outputs are
written, and written last, atomically, so :func:`is_complete` (the manifest is there, names the same identity, and
every output still has its hash) never trusts a half-written or stale run, while a rerun that fails on its inputs
(an unreadable image, an empty mask) leaves the finished run valid. A run writes only into a new or empty folder or
a run's own (marked ``.padim_repro_run``), never into a folder of the user's; temporary files left by an
interrupted run are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import PadimConfig
from ..data import MVTecDataset, batches, category_group, load_category
from ..metrics import evaluate
from ..model import Padim
from ..storage import sha256_file, write_json, write_npz, write_text
from .identity import code_fingerprint, data_fingerprint, identity_key, sample_files
from .provenance import provenance
from .uncertainty import bootstrap_values, intervals_from_values

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
#: Marks a folder as a run's (:func:`start_outputs`): only such a folder (or an empty one) is written into.
RUN_MARK = ".padim_repro_run"
#: ``model.pt`` of a run being computed, renamed into place with the other outputs (:func:`replace_outputs`).
STAGED_MODEL_FILE = ".model.pt.staged.tmp"
#: The study modules whose code, with the method's, computes a run.
CODE = ("study/runs.py", "study/uncertainty.py")
#: The bootstrap of every run's metrics (:func:`~padim_repro.study.uncertainty.bootstrap_intervals`): resamples,
#: seed and coverage; part of a run's identity.
BOOTSTRAP = {"n_resamples": 1000, "seed": 0, "level": 0.95}
#: The resampled values of each metric (one array per metric name): small, committed with ``metrics.json``, what
#: intervals of means over categories are computed from (:func:`~padim_repro.study.uncertainty.mean_interval`).
BOOTSTRAP_FILE = "bootstrap.npz"


def settings(config: PadimConfig, device_type: str) -> dict[str, Any]:
    """The settings that determine a run's numbers: the config without the weights' spec (their content hash
    stands for them) and with d and the device type resolved; the batch size stays in (it changes float sums)."""
    out = {k: v for k, v in config.to_dict().items() if k not in ("weights", "device")}
    return out | {"d": config.resolved_d, "device": device_type}


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


@dataclass
class PreparedRun:
    """A run about to be computed or reused: its data, its model (backbone built; released by :func:`run_category`
    once it has predicted), identity and folder name."""

    config: PadimConfig
    train: MVTecDataset
    test: MVTecDataset
    model: Padim | None
    identity: dict[str, Any]
    data: dict[str, Any]
    key: str

    def folder(self, results_root: str | Path, category: str) -> Path:
        """``RESULTS/runs/CATEGORY/BACKBONE-dD-KEY``."""
        d = self.config.resolved_d or "all"
        return Path(results_root) / "runs" / category / f"{self.config.backbone}-d{d}-{self.key}"


def prepare(data_root: str | Path, category: str, config: PadimConfig, progress: bool | None = None) -> PreparedRun:
    """List and check ``category``'s data, build the backbone, and fingerprint the data, weights and code.

    Every input error (a missing or unreadable file, unusable weights, an absent device) surfaces here, before
    anything is computed.
    """
    train, test = load_category(data_root, category, *config.geometry, config.interpolation)
    model = Padim(config, progress=progress)
    data = data_fingerprint(data_root, sample_files(train.samples + test.samples))
    identity = {"category": category, "settings": settings(config, model.device.type),
                "data": {"sha256": data["sha256"], "n_files": data["n_files"]},
                "weights": model.extractor.weights_id, "bootstrap": BOOTSTRAP,
                "code": code_fingerprint(CODE)}  # fmt: skip
    key = identity_key({k: v for k, v in identity.items() if k != "code"})
    return PreparedRun(config, train, test, model, identity, data, key)


def fit_predict(config: PadimConfig, train: MVTecDataset, test: MVTecDataset, progress: bool | None = None,
                model: Padim | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit PaDiM on ``train`` and score ``test``: ``{"model", "maps", "masks", "scores", "labels", "defect_types",
    "timings", "weights_id", "n_channels_total", "d"}`` (arrays as numpy, ``model`` the fitted
    :class:`~padim_repro.model.Padim`)."""
    model = model or Padim(config, progress=progress)
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
    return {
        "model": model, "maps": maps, "masks": torch.cat(masks).numpy(), "scores": scores, "labels": test.labels,
        "defect_types": test.defect_types, "weights_id": model.weights_id_,
        "n_channels_total": model.extractor.n_channels, "d": config.resolved_d or model.extractor.n_channels,
        "timings": {"fit_s": fit_s, "fit_breakdown_s": fit_breakdown, "predict_s": predict_s,
                    "predict_per_image_s": predict_s / len(test), "predict_breakdown_s": dict(model.timings_),
                    "n_train": len(train), "n_test": len(test)},
    }  # fmt: skip


def add_metrics(res: dict[str, Any]) -> dict[str, Any]:
    """``res`` of :func:`fit_predict` with ``"metrics"`` (:func:`~padim_repro.metrics.evaluate`) and their time."""
    t0 = time.perf_counter()
    res["metrics"] = evaluate(res["maps"], res["masks"], res["scores"], res["labels"], res["defect_types"])
    res["timings"]["metrics_s"] = time.perf_counter() - t0
    return res


def fit_evaluate(config: PadimConfig, train: MVTecDataset, test: MVTecDataset, progress: bool | None = None,
                 model: Padim | None = None) -> dict[str, Any]:  # fmt: skip
    """:func:`fit_predict`, then the metrics: the result also holds ``"metrics"``."""
    return add_metrics(fit_predict(config, train, test, progress, model))


def check_run_folder(out_dir: str | Path, what: str = "output folder") -> None:
    """Refuse ``out_dir`` (a FileExistsError naming it as ``what``) unless a run may write there: it does not exist
    yet, is empty, or is a run's folder (:data:`RUN_MARK`, or a run's manifest). A folder of the user's is never
    cleared or overwritten, whatever its files are called."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{what} {out_dir} is a file; give a folder (it will hold {METRICS_FILE}, ...)")
    if not out_dir.is_dir() or (out_dir / RUN_MARK).is_file() or not any(out_dir.iterdir()):
        return
    manifest = read_manifest(out_dir)
    if not (isinstance(manifest, dict) and {"key", "identity", "outputs"} <= manifest.keys()):
        names = sorted(p.name for p in out_dir.iterdir())
        raise FileExistsError(f"{what} {out_dir} is not empty and not a run's folder (it holds "
                              f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): its files are left as "
                              "they are; give a new or empty folder")  # fmt: skip


def start_outputs(out_dir: Path) -> None:
    """Before a run computes anything: the folder may hold a run (:func:`check_run_folder`), is marked as a run's,
    and an interrupted run's leftovers (its temporary files) are gone. A finished run there stays valid until
    :func:`replace_outputs`, so a run that fails (an unreadable image, a full disk) loses nothing."""
    check_run_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / RUN_MARK, "padim_repro run folder: its files are written and removed by padim_repro\n")
    for tmp in out_dir.glob(".*.tmp"):
        tmp.unlink()


def replace_outputs(out_dir: Path) -> None:
    """Once every input is read and every number computed, just before the outputs are written: the folder no
    longer claims to be complete (its manifest goes first, and is written again last)."""
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)


def run_category(data_root: str | Path, category: str, config: PadimConfig, out_dir: str | Path,
                 save_model: bool = False, progress: bool | None = None,
                 prepared: PreparedRun | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit PaDiM on ``category``'s training images, score its test set, evaluate, and write the outputs, the
    manifest last. Returns the record written to ``metrics.json``."""
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    run = prepared or prepare(data_root, category, config, progress)
    start_outputs(out_dir)
    staged = out_dir / STAGED_MODEL_FILE
    try:
        return _compute_and_write(data_root, category, config, out_dir, run, staged if save_model else None, t_start,
                                  progress)  # fmt: skip
    finally:
        with contextlib.suppress(OSError):  # on a read-only file system, the error that matters is the first one
            staged.unlink(missing_ok=True)


def _compute_and_write(data_root: str | Path, category: str, config: PadimConfig, out_dir: Path, run: PreparedRun,
                       staged: Path | None, t_start: float, progress: bool | None) -> dict[str, Any]:  # fmt: skip
    """:func:`run_category` once the folder is ready: every number first (the model, if asked, saved to ``staged``),
    then the outputs (:func:`replace_outputs`), the manifest last."""
    res = fit_predict(config, run.train, run.test, progress, model=run.model)
    if staged is not None:
        run.model.save(staged)
    device = str(run.model.device)
    res.pop("model")
    run.model = None  # the Gaussians are not needed to evaluate: free them first (peak memory)
    add_metrics(res)
    t0 = time.perf_counter()
    boot = {k: v for k, v in BOOTSTRAP.items() if k != "level"}
    estimate, resampled = bootstrap_values(res["maps"], res["masks"], res["scores"], res["labels"], **boot,
                                           device=device)  # fmt: skip
    intervals = intervals_from_values(estimate, resampled, BOOTSTRAP["level"])
    res["timings"]["bootstrap_s"] = time.perf_counter() - t0
    labels, defect_types, test = res["labels"], res["defect_types"], run.test
    for metric, why in res["metrics"]["undefined"].items():
        warnings.warn(f"{category}: {metric} is undefined ({why}); recorded as null", stacklevel=2)
    record: dict[str, Any] = {
        **res["metrics"],
        "intervals": {"method": "stratified image bootstrap, percentile interval", **BOOTSTRAP, **intervals},
        "category": category,
        "group": category_group(category),
        "backbone": config.backbone,
        "config": config.to_dict(),
        "run_key": run.key,
        "d": res["d"],
        "n_channels_total": res["n_channels_total"],
        "weights": weights_record(config, res["weights_id"]),
        "data": {"root": str(data_root), "n_train": len(run.train), "n_test": len(test),
                 "n_test_defective": int(labels.sum()), "defect_types": sorted(set(defect_types) - {"good"}),
                 "n_files": run.data["n_files"], "sha256": run.data["sha256"]},  # fmt: skip
        "timings": {k: v for k, v in res["timings"].items() if not k.startswith("n_")}
        | {"total_s": time.perf_counter() - t_start},
        "device": device,
        "torch_threads": torch.get_num_threads(),
        **provenance(),
    }
    replace_outputs(out_dir)
    outputs = [staged.replace(out_dir / MODEL_FILE)] if staged is not None else []
    mask_arr = res["masks"]
    paths = np.array([str(s.image_path.relative_to(Path(data_root))) for s in test.samples])
    outputs.append(write_npz(out_dir / PREDICTIONS_FILE, scores=res["scores"].astype(np.float32), labels=labels,
                             defect_types=np.array(defect_types), image_paths=paths,
                             maps=res["maps"].astype(np.float16), masks=np.packbits(mask_arr, axis=-1),
                             mask_shape=np.array(mask_arr.shape)))  # fmt: skip
    outputs.append(write_npz(out_dir / BOOTSTRAP_FILE, **resampled))
    outputs.append(write_json(out_dir / METRICS_FILE, record))
    write_manifest(out_dir, run.key, run.identity, outputs, git_commit=record["git_commit"],
                   data_files=run.data["files"])  # fmt: skip
    return record


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's manifest, or None if there is none (a run never finished, or one from before manifests)."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_manifest(out_dir: Path, key: str, identity: dict[str, Any], outputs: list[Path], **extra: Any) -> Path:
    """Write ``manifest.json`` last: the identity and every output with its sha256 and size (atomically)."""
    return write_json(out_dir / MANIFEST_FILE, {
        "format": 1, "key": key, "identity": identity,
        "outputs": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in outputs},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
    })  # fmt: skip


def is_complete(run_dir: str | Path, identity: dict[str, Any] | None = None,
                required: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, BOOTSTRAP_FILE)) -> bool:  # fmt: skip
    """Whether ``run_dir`` holds finished outputs: its manifest is there, lists the ``required`` files, every output
    it lists still has its sha256, and (when given) they were computed from ``identity`` (same settings, data,
    weights and code)."""
    manifest = read_manifest(run_dir)
    if manifest is None or (identity is not None and manifest.get("identity") != identity):
        return False
    outputs = manifest.get("outputs", {})
    if any(name not in outputs for name in required):
        return False
    return all(_unchanged(Path(run_dir) / name, info) for name, info in outputs.items())


def vouches(run_dir: str | Path, names: tuple[str, ...]) -> bool:
    """Whether the run's manifest lists each of ``names`` with its bytes as they are now: the files a reader uses
    are the finished run's, while outputs that are not kept (``predictions.npz`` and ``model.pt`` are not
    committed) may be absent."""
    manifest = read_manifest(run_dir)
    outputs = manifest.get("outputs", {}) if manifest else {}
    return manifest is not None and all(n in outputs and _unchanged(Path(run_dir) / n, outputs[n]) for n in names)


def _unchanged(path: Path, info: dict[str, Any]) -> bool:
    return path.is_file() and path.stat().st_size == info["bytes"] and sha256_file(path) == info["sha256"]


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read ``predictions.npz`` back: maps as float32 and masks unpacked to bool (N, H, W)."""
    with np.load(Path(run_dir) / PREDICTIONS_FILE) as z:
        out = {k: z[k] for k in z.files}
    shape = tuple(out.pop("mask_shape"))
    out["masks"] = np.unpackbits(out["masks"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
    out["maps"] = out["maps"].astype(np.float32)
    return out


def load_bootstrap(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The bootstrap resamples of each metric (metric -> (B,) values, NaN where undefined) of a run; {} for a run
    written without them."""
    path = Path(run_dir) / BOOTSTRAP_FILE
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@dataclass
class Run:
    """A finished run: its record (``metrics.json``), predictions, folder, manifest, and whether it was reused."""

    record: dict[str, Any]
    predictions: dict[str, np.ndarray]
    run_dir: Path
    manifest: dict[str, Any]
    reused: bool

    @property
    def manifest_sha256(self) -> str:
        """sha256 of the manifest file: what a page built from this run records, to know when it is stale."""
        return sha256_file(self.run_dir / MANIFEST_FILE)


def run_or_load(category: str, data_root: str | Path, results_root: str | Path, config: PadimConfig,
                force: bool = False, progress: bool | None = None) -> Run:  # fmt: skip
    """``category`` under ``config``: read back when a complete run of the same identity exists (unless
    ``force``), else computed."""
    run = prepare(data_root, category, config, progress)
    run_dir = run.folder(results_root, category)
    reused = not force and is_complete(run_dir, run.identity)
    if not reused:
        run_category(data_root, category, config, run_dir, progress=progress, prepared=run)
    record = json.loads((run_dir / METRICS_FILE).read_text())
    return Run(record, load_predictions(run_dir), run_dir, read_manifest(run_dir) or {}, reused)

