"""What a result depends on, as hashes: the data actually read, the weights, and the code that computed it.

A result is reused only when everything that determines it matches (settings, data, weights, code), so each result
records these fingerprints and its key hashes them:

* :func:`data_fingerprint`: every file read (path relative to the data root, size, sha256 of its bytes), computed
  once per run and stored with it: a copy of a category with one image less, or one image changed, is other data;
* :func:`code_fingerprint`: the sha256 of the source of the method modules (:mod:`padim_repro` outside
  :mod:`padim_repro.study`) and of the study modules that compute the result, so a change to the method (or to
  how an experiment computes its numbers) invalidates what the old code computed, while a change to a figure or
  to the book does not;
* :func:`identity_key`: a short hash of any JSON-able description built from them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..data import Sample
from ..storage import sha256_file

PACKAGE = Path(__file__).resolve().parents[1]


def identity_key(description: Any, n: int = 10) -> str:
    """First ``n`` hex digits of the sha256 of ``description`` as sorted JSON."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:n]


def sample_files(samples: Iterable[Sample]) -> list[Path]:
    """The image and mask files of ``samples``, in order."""
    return [p for s in samples for p in (s.image_path, s.mask_path) if p is not None]


def data_fingerprint(root: str | Path, files: Iterable[Path]) -> dict[str, Any]:
    """Every file as [path relative to ``root``, size, sha256], and the sha256 of that list (``sha256``)."""
    root = Path(root)
    listed = [[Path(p).relative_to(root).as_posix(), Path(p).stat().st_size, sha256_file(p)] for p in files]
    return {"n_files": len(listed), "sha256": hashlib.sha256(json.dumps(listed).encode()).hexdigest(),
            "files": listed}  # fmt: skip


@lru_cache(maxsize=None)
def _source_hash(relative_paths: tuple[str, ...]) -> str:
    """sha256 over (path relative to the repository, bytes) of each file: independent of where the clone lives."""
    h = hashlib.sha256()
    for rel in relative_paths:
        h.update(rel.encode())
        h.update((PACKAGE.parent / rel).read_bytes())
    return h.hexdigest()


def method_modules() -> list[Path]:
    """The source files of the method: every module of :mod:`padim_repro` outside :mod:`padim_repro.study`."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "study" not in p.relative_to(PACKAGE).parts)


def code_fingerprint(study_modules: Sequence[str] = ()) -> str:
    """sha256 (16 hex digits) of the method's source and of the named study modules (dotted names or paths of
    files under the package), e.g. ``code_fingerprint(["study/runs.py"])``."""
    extra = []
    for name in study_modules:
        rel = name if name.endswith(".py") else name.removeprefix("padim_repro.").replace(".", "/") + ".py"
        path = PACKAGE / rel
        if not path.is_file():
            path = PACKAGE / rel.removesuffix(".py") / "__init__.py"
        extra.append(path)
    files = tuple(p.relative_to(PACKAGE.parent).as_posix() for p in method_modules() + sorted(set(extra)))
    return _source_hash(files)[:16]
