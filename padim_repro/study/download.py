"""Download MVTec AD (``python -m padim_repro download``, ``make data``): resumable, verified, extracted safely.

Sources are tried in order (``MVTEC_URLS``): anomalib's current archive, then the one this project used before; both
serve the same file (sha256 ``MVTEC_SHA256``). Each source gets ``retries`` attempts with exponential backoff; an
HTTP error (404, ...) moves on to the next source at once.

A transfer that stalls (fewer than ``STALL`` bytes per interval, e.g. a server that trickles a byte at a time)
ends its attempt like a broken one.

Resume: bytes go to ``ROOT/mvtec_anomaly_detection.tar.xz.partial``. When a transfer breaks (dropped connection,
fewer bytes than ``Content-Length``), the next attempt - an automatic retry or a later rerun - asks for the rest
with ``Range: bytes=N-``; it appends on a ``206`` whose ``Content-Range`` starts at N and starts over from zero on a
``200`` (no Range support). The complete file is renamed to ``ROOT/mvtec_anomaly_detection.tar.xz``; such an archive
with the right hash is reused without a request.

The sha256 is checked before extraction. The archive is extracted (``filter="data"``) into a temporary
``ROOT/.extract-*`` folder, the official per-category counts are checked there, and only then is each category moved
into ``ROOT`` (one already there is left alone). The temporary folder is always removed; the archive is removed only
after full success. Every failure is one :class:`DownloadError` whose message is a single line.

Hand-written (standard library + tqdm) because the usual helpers (``pooch``, ``torchvision``'s ``download_url``)
cannot resume an interrupted transfer with an HTTP Range request, which matters for a 4.9 GB archive.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from ..data import DataError, list_categories

#: anomalib's current archive first, then the one the project used before; same file, same hash.
MVTEC_URLS: tuple[str, ...] = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    "mvtec_anomaly_detection.tar.xz",
    "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/420938113-1629960298/"
    "mvtec_anomaly_detection.tar.xz",
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"

#: Official counts per category: (train good images, test images, defect types) (Bergmann et al., 2019).
MVTEC_COUNTS: dict[str, tuple[int, int, int]] = {
    "bottle": (209, 83, 3), "cable": (224, 150, 8), "capsule": (219, 132, 5), "carpet": (280, 117, 5),
    "grid": (264, 78, 5), "hazelnut": (391, 110, 4), "leather": (245, 124, 5), "metal_nut": (220, 115, 4),
    "pill": (267, 167, 7), "screw": (320, 160, 5), "tile": (230, 117, 5), "toothbrush": (60, 42, 1),
    "transistor": (213, 100, 4), "wood": (247, 79, 5), "zipper": (240, 151, 7),
}  # fmt: skip

_CHUNK = 1 << 20
#: The stall deadline of a transfer: at least this many bytes every this many seconds, or the attempt ends (the
#: socket timeout alone bounds each read, not a server that trickles a byte at a time).
STALL: tuple[float, int] = (60.0, 64 * 1024)


class DownloadError(DataError):
    """A download, verification or extraction failure; the message is one line naming the URL or file and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class _Transient(Exception):
    """A broken transfer worth another attempt at the same source (the ``.partial`` file is kept)."""


def category_counts(root: Path, category: str) -> tuple[int, int, int]:
    """(train good, test, defect types) of a category folder, counted as the official table counts them."""
    cat = Path(root) / category
    n_train = sum(1 for _ in (cat / "train" / "good").glob("*.png"))
    test_dirs = [p for p in (cat / "test").iterdir() if p.is_dir()] if (cat / "test").is_dir() else []
    n_test = sum(1 for d in test_dirs for _ in d.glob("*.png"))
    return n_train, n_test, sum(1 for d in test_dirs if d.name != "good")


def verify_counts(
    root: Path, categories: list[str], expected: dict[str, tuple[int, int, int]] = MVTEC_COUNTS
) -> list[str]:
    """Messages for categories named in ``expected`` whose file counts differ from it (empty when all match)."""
    problems = []
    for cat in categories:
        if cat in expected and (got := category_counts(Path(root), cat)) != tuple(expected[cat]):
            problems.append(f"{Path(root) / cat}: found (train, test, defect types) = {got}, official {expected[cat]}")
    return problems


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a local write failure into a one-line :class:`DownloadError` (disk full gets its own message)."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while writing {path}; free some space (MVTec AD needs about 10 GB "
                                "during download and extraction) and rerun") from exc  # fmt: skip
        raise DownloadError(f"cannot write {path} ({exc.strerror or exc}); check the folder and rerun") from exc


def _fetch(url: str, partial: Path, timeout: float, progress: bool | None, stall: tuple[float, int] = STALL) -> None:
    """One attempt: continue ``partial`` from its size (Range) or write it from zero; raises on any failure, and
    :class:`_Transient` when fewer than ``stall[1]`` bytes arrive in ``stall[0]`` seconds (:data:`STALL`)."""
    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"User-Agent": "padim-repro", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial is as long as the file, or longer: start over
            exc.close()
            with _writing(partial):
                partial.unlink()
            return _fetch(url, partial, timeout, progress, stall)
        raise
    with resp:
        resumed = resp.status == 206
        if resumed and ((m := re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))) is None
                        or int(m.group(1)) != offset):  # fmt: skip
            with _writing(partial):
                partial.unlink()  # the next attempt starts from zero
            raise _Transient(f"server resumed at {resp.headers.get('Content-Range')!r}, not byte {offset}")
        offset = offset if resumed else 0
        length = int(cl) if (cl := resp.headers.get("Content-Length", "")).isdigit() else None
        with _writing(partial):
            fh = open(partial, "ab" if resumed else "wb")
        got, (window_s, window_bytes) = 0, stall
        window_start, window_got = time.monotonic(), 0
        try:
            with tqdm(total=None if length is None else offset + length, initial=offset, unit="B", unit_scale=True,
                      unit_divisor=1024, desc="MVTec AD", disable=None if progress is None else not progress) as bar:
                while block := resp.read1(_CHUNK):  # what has arrived (read() would wait for the whole chunk)
                    with _writing(partial):
                        fh.write(block)
                    got += len(block)
                    bar.update(len(block))
                    window_got += len(block)
                    if (elapsed := time.monotonic() - window_start) >= window_s:
                        if window_got < window_bytes:
                            raise _Transient(f"stalled: {window_got} bytes in {elapsed:.0f} s (fewer than "
                                             f"{window_bytes} per {window_s:g} s) after {offset + got} bytes")
                        window_start, window_got = time.monotonic(), 0
        finally:
            with _writing(partial):
                fh.close()
    if length is not None and got < length:
        raise _Transient(f"connection closed after {offset + got} of {offset + length} bytes")


def _describe(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed attempt (a URLError unwrapped to its socket error)."""
    reason = getattr(exc, "reason", None)
    exc = reason if isinstance(reason, BaseException) else exc
    return f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__


def _download(urls: Sequence[str], root: Path, retries: int, backoff: float, timeout: float,
              progress: bool | None, stall: tuple[float, int] = STALL) -> str:  # fmt: skip
    """Fetch the archive from the first source that works into ``root/ARCHIVE_NAME``; returns that URL."""
    partial, failures = root / (ARCHIVE_NAME + ".partial"), []
    for url in urls:
        attempts, last = max(1, retries), ""
        for k in range(attempts):
            if k:
                time.sleep(backoff * 2 ** (k - 1))
            try:
                _fetch(url, partial, timeout, progress, stall)
                with _writing(root / ARCHIVE_NAME):
                    partial.replace(root / ARCHIVE_NAME)
                return url
            except DownloadError:
                raise
            except (urllib.error.HTTPError, ValueError) as exc:  # an HTTP error, or not a URL: next source
                http_error = isinstance(exc, urllib.error.HTTPError)
                last, attempts = f"HTTP {exc.code} {exc.reason}" if http_error else f"invalid URL ({exc})", 0
                break
            except (_Transient, OSError, http.client.HTTPException) as exc:
                last = _describe(exc, timeout)
        failures.append(f"{url}: {last}" + (f" (after {attempts} attempts)" if attempts > 1 else ""))
    raise DownloadError(f"could not download MVTec AD from any source: {'; '.join(failures)}. Check the "
                        "internet connection or pass --url with a working mirror; a broken transfer resumes on rerun")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def _extract(archive: Path, root: Path, expected: dict[str, tuple[int, int, int]] | None) -> None:
    """Extract into ``ROOT/.extract-*``, check the counts there, then move the categories into ``root``."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise DownloadError(f"disk full while writing the files of {archive} into {root}; free some space "
                                    "and rerun (the archive is kept)") from exc  # fmt: skip
            raise DownloadError(f"archive {archive} is corrupt ({exc}); delete it and rerun") from exc
        categories = list_categories(tmp)
        if not categories:
            raise DownloadError(f"archive {archive} holds no category folder (*/train/good); delete it and rerun")
        expected = expected or {}
        found = {c: category_counts(tmp, c) for c in categories if c in expected}
        problems = [f"{c}: found (train, test, defect types) = {n}, official {tuple(expected[c])}"
                    for c, n in found.items() if n != tuple(expected[c])]  # fmt: skip
        if problems:
            raise DownloadError(f"archive {archive} does not match the official counts ({'; '.join(problems)}); "
                                f"nothing was moved into {root}; delete the archive and rerun")  # fmt: skip
        top_files = [p.name for p in tmp.iterdir() if p.is_file()]  # license.txt, readme.txt
        with _writing(root):
            for name in categories + top_files:
                if not (root / name).exists():
                    os.replace(tmp / name, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_mvtec(
    root: str | Path,
    urls: Sequence[str] = MVTEC_URLS,
    sha256: str = MVTEC_SHA256,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float = 30.0,
    progress: bool | None = None,
    expected_counts: dict[str, tuple[int, int, int]] | None = MVTEC_COUNTS,
    stall: tuple[float, int] = STALL,
) -> list[str]:
    """Download (resuming), verify and extract MVTec AD into ``root``; returns the categories now under ``root``.

    ``urls`` are tried in order, each up to ``retries`` times with a ``backoff * 2**k`` s pause; ``progress=None``
    shows the bar only on a terminal; ``expected_counts=None`` skips the per-category count check; an attempt that
    receives fewer than ``stall[1]`` bytes in ``stall[0]`` seconds ends (the partial file is kept for a resume).
    """
    root = Path(root)
    with _writing(root):
        root.mkdir(parents=True, exist_ok=True)
    archive, sha256 = root / ARCHIVE_NAME, sha256.strip().lower()
    if archive.is_file() and _sha256(archive) != sha256:
        print(f"{archive} does not have sha256 {sha256}: deleting it and downloading again", file=sys.stderr)
        archive.unlink()
    if not archive.is_file():
        url = _download(urls, root, retries, backoff, timeout, progress, stall)
        if (digest := _sha256(archive)) != sha256:
            archive.unlink()
            raise DownloadError(f"sha256 of {archive} (from {url}) is {digest}, expected {sha256}: the file was "
                                "deleted; rerun to download it again, or pass the right --sha256")  # fmt: skip
    _extract(archive, root, expected_counts)
    archive.unlink()
    return list_categories(root)


def download_command(data_root: str, urls: list[str] | None, sha256: str | None, retries: int = 3) -> int:
    """``python -m padim_repro download``: 0 on success, 2 after printing ``error: <one line>`` to stderr."""
    try:
        categories = download_mvtec(data_root, urls=tuple(urls) if urls else MVTEC_URLS,
                                    sha256=sha256 or MVTEC_SHA256, retries=retries)  # fmt: skip
    except DataError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"MVTec AD under {data_root}: {len(categories)} categories present ({', '.join(categories)})",
          file=sys.stderr)  # fmt: skip
    return 0
