"""``python -m padim_repro``: see :mod:`padim_repro.study.cli`."""

import sys

from .study.cli import main

sys.exit(main())
