"""padim_repro: a faithful, fast, reproducible re-implementation of PaDiM (Defard et al., 2020, arXiv 2011.08785).

Modules map to the paper's sections: :mod:`~padim_repro.data` (MVTec AD and preprocessing, Sec. 4.1),
:mod:`~padim_repro.features` (patch embedding, Sec. 3.1), :mod:`~padim_repro.gaussian` (learning of the normality,
Sec. 3.2), :mod:`~padim_repro.scoring` (inference: anomaly map, Sec. 3.3), :mod:`~padim_repro.metrics` (AUROC and
PRO, Sec. 4.1), :mod:`~padim_repro.model` (the estimator) and :mod:`~padim_repro.runner` (one evaluated run).
"""

from .config import PadimConfig
from .model import Padim

__all__ = ["Padim", "PadimConfig"]
__version__ = "0.1.0"
