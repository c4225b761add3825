"""Atomic writes, content hashes and package versions: what a saved model and every result file rely on.

A run that is interrupted must lose nothing already written and leave no half-written file behind, so every
writer here writes to a temporary file in the destination folder and renames it into place (``os.replace`` is
atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Packages whose versions are recorded with every result.
RECORDED_PACKAGES = ("padim-repro", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "pillow")


class StorageError(OSError):
    """A file could not be written (a read-only file system, a full disk, ...): ``str()`` is one line, the path and
    the system's reason."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``, itself or in its chain (``torch.save`` turns a failed write into a RuntimeError)."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it to ``path``.

    A failure of the file system (:class:`StorageError`, naming ``path``) leaves ``path`` as it was and no
    temporary file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(exc.errno, exc.strerror, str(path)) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc) if isinstance(exc, Exception) else None
        if cause is None or isinstance(exc, StorageError):
            raise
        raise StorageError(cause.errno, cause.strerror or str(cause), str(path)) from exc
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN is written as ``NaN``, which Python reads back)."""
    blob = (json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n").encode()
    return atomic_write(path, lambda fh: fh.write(blob))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file (UTF-8)."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Atomically write a compressed ``.npz`` archive."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change results, plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
