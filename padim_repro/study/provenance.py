"""Provenance of every result: the commit of the code, the package versions and the machine.

Every result file of the study records :func:`provenance`, so a number in the book can be traced to the code and
the machine that computed it. The commit carries ``+dirty`` only when the *code* that computes results has local
changes (:data:`CODE_PATHS`): regenerating the committed results rewrites tracked files under ``results/`` and
``book/``, and that must not make the code that produced them look modified.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ..storage import package_versions

#: What computes results: a local change here makes the commit ``+dirty``; outputs and prose do not.
CODE_PATHS = ("padim_repro", "notebooks", "bench", "Makefile", "pyproject.toml", "environment.yml")


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The commit of the repository holding this package, with ``+dirty`` if :data:`CODE_PATHS` have local
    changes; None outside a git checkout."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=top, capture_output=True, text=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    """The CPU's model name as the system reports it (``/proc/cpuinfo`` on Linux), with its family/model numbers
    when the name is generic (virtual machines often say just "Intel(R) Xeon(R) Processor")."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name", platform.processor() or platform.machine())
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> dict[str, Any]:
    """The machine a result was computed on: CPU model, logical CPUs, architecture and platform."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "processor": platform.machine(),
            "platform": platform.platform()}  # fmt: skip


def provenance() -> dict[str, Any]:
    """What a result needs to be traced: package versions, commit, machine."""
    return {"versions": package_versions(), "git_commit": git_commit(), "machine": machine()}
