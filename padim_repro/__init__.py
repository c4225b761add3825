"""padim_repro: a faithful, fast, reproducible re-implementation of PaDiM (Defard et al., 2020, arXiv 2011.08785).

Two floors. **The method**, at the top of the package, one module per concern, each citing its section of the
paper: :mod:`~padim_repro.config` (every parameter, Sec. 4.1), :mod:`~padim_repro.data` (MVTec AD and the
preprocessing, Sec. 4.1), :mod:`~padim_repro.backbones` (the pretrained CNNs and their weights, Sec. 3.1, 4.1),
:mod:`~padim_repro.features` (patch embedding and the random channel choice, Sec. 3.1),
:mod:`~padim_repro.gaussian` (learning of the normality, Sec. 3.2, Eq. 1), :mod:`~padim_repro.scoring`
(inference: Mahalanobis distance and anomaly map, Sec. 3.3, Eq. 2), :mod:`~padim_repro.model` (the estimator),
:mod:`~padim_repro.metrics` (AUROC and PRO, Sec. 4.1) and :mod:`~padim_repro.storage` (atomic files).
**The study**, :mod:`padim_repro.study`, runs experiments with the method and publishes them; it imports the
method, and the method never imports it.
"""

from .config import PadimConfig
from .model import Padim

__all__ = ["Padim", "PadimConfig"]
__version__ = "0.1.0"
