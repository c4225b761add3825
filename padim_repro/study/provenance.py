"""Provenance of every result: the commit of the code, the package versions and the machine.

Every result file of the study records :func:`provenance`, so a number in the book can be traced to the code and
the machine that computed it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ..storage import package_versions


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The commit of the repository holding this package (with ``+dirty`` if it has local changes), or None."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """What a result needs to be traced: package versions, commit, machine."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()},
    }
