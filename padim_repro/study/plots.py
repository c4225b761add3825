"""Figures for the category notebooks: curves behind every metric, per-defect AUROC, and example maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..data import display_image
from ..metrics import image_roc_curve, pixel_roc_curve, pro_curve

FPR_LIMIT = 0.3
#: Width of every figure of the book, in inches: the book's text column is about 790 px wide, and figures are drawn
#: at 100 dpi, so a figure this wide is shown at its own size and its text (7 pt at least: 9.7 px) stays readable.
BOOK_WIDTH = 7.9


def plot_curves(pred: dict[str, np.ndarray], record: dict[str, Any]) -> plt.Figure:
    """Image ROC, pixel ROC and the PRO curve to FPR 30 % (the area that gives the PRO score, shaded), in %."""
    fig, axes = plt.subplots(1, 3, figsize=(BOOK_WIDTH, 2.9))
    fpr, tpr = image_roc_curve(pred["scores"], pred["labels"])
    axes[0].plot(100 * fpr, 100 * tpr)
    axes[0].set(title=f"image ROC: AUROC {100 * record['image_auroc']:.1f} %", xlabel="FPR (%)", ylabel="TPR (%)")
    fpr, tpr = pixel_roc_curve(pred["maps"], pred["masks"])
    axes[1].plot(100 * fpr, 100 * tpr)
    axes[1].set(title=f"pixel ROC: AUROC {100 * record['pixel_auroc']:.1f} %", xlabel="FPR (%)")
    fpr, pro = pro_curve(pred["maps"], pred["masks"])
    keep = fpr <= FPR_LIMIT
    axes[2].plot(100 * fpr[keep], 100 * pro[keep])
    axes[2].fill_between(100 * fpr[keep], 100 * pro[keep], alpha=0.2)
    axes[2].set(title=f"PRO to FPR {100 * FPR_LIMIT:g} %: {100 * record['pro']:.1f} %", xlabel="FPR (%)",
                ylabel="PRO (%)", xlim=(0, 100 * FPR_LIMIT), ylim=(0, 101))  # fmt: skip
    for ax in axes[:2]:
        ax.plot([0, 100], [0, 100], "k:", lw=0.8)
        ax.set(xlim=(0, 100), ylim=(0, 101))
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def plot_per_defect(record: dict[str, Any]) -> plt.Figure:
    """Image AUROC of each defect type against the good test images in % (a note saying why, where it is undefined)."""
    per = record["per_defect_image_auroc"]
    if not per:
        why = (record.get("undefined") or {}).get("per_defect_image_auroc", "no defect type")
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.text(0.5, 0.5, f"per-defect image AUROC undefined: {why}", ha="center", va="center")
        ax.set_axis_off()
        return fig
    per = {k: 100 * v for k, v in per.items()}
    names = sorted(per, key=per.get)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [per[n] for n in names])
    for i, n in enumerate(names):
        ax.text(per[n], i, f" {per[n]:.1f}", va="center")
    ax.set(xlim=(min(50, min(per.values()) - 5), 108), xlabel="image AUROC against the good images (%)",
           title="per defect type")
    fig.tight_layout()
    return fig


def select_examples(pred: dict[str, np.ndarray], n: int = 4) -> dict[str, np.ndarray]:
    """Indices of the best-scored defects, the worst-missed defects and the highest-scored good images."""
    scores, labels = pred["scores"], pred["labels"]
    defect, good = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    by_score = defect[np.argsort(-scores[defect], kind="stable")]
    return {
        "best-scored defects": by_score[:n],
        "worst-missed defects": by_score[::-1][:n],
        "highest-scored good images": good[np.argsort(-scores[good], kind="stable")][:n],
    }


def plot_examples(
    pred: dict[str, np.ndarray], data_root: str | Path, config: dict[str, Any], n: int = 4
) -> plt.Figure:
    """Test images with their anomaly map overlaid and the ground truth outlined (white), one row per group.

    One colour scale for all panels: from the 1st percentile of the good images' maps to the maximum score.
    """
    groups = select_examples(pred, n)
    maps, masks, scores = pred["maps"], pred["masks"], pred["scores"]
    good = maps[pred["labels"] == 0]
    vmin, vmax = float(np.percentile(good, 1)) if len(good) else float(maps.min()), float(maps.max())
    fig, axes = plt.subplots(len(groups), n, figsize=(BOOK_WIDTH, 2.1 * len(groups)), squeeze=False)
    for row, (title, idx) in enumerate(groups.items()):
        for col in range(n):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(idx):
                continue
            i = idx[col]
            img = display_image(Path(data_root) / str(pred["image_paths"][i]), config["resize"], config["crop"],
                                config["interpolation"])  # fmt: skip
            ax.imshow(img)
            ax.imshow(maps[i], cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
            if masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="white", linewidths=1.2)
            ax.set_title(f"{pred['defect_types'][i]}\nscore {scores[i]:.1f}", fontsize=8)
        axes[row, 0].text(-0.08, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, ha="right",
                          va="center", fontsize=8)  # fmt: skip
    fig.tight_layout()
    return fig
