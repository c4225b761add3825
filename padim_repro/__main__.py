"""``python -m padim_repro``: see :mod:`padim_repro.cli`."""

import sys

from .cli import main

sys.exit(main())
