"""The dual-network semi-supervised method as an Auto3DSeg algorithm template.

Two ways to use it (see the README's "Auto3DSeg" section):

- ``python -m semiseg.auto3dseg --datalist my.json --dataroot /data --modality ct --work_dir work``: data analysis,
  one complete bundle per fold (``work/dualnet_<fold>/``), training, validation Dice;
- inside MONAI's ``AutoRunner``: ``AutoRunner(..., algos=semiseg.auto3dseg.algos())``, beside the supervised
  templates and through its ensemble.
"""

from __future__ import annotations

from .algo import ALGO_NAME, TEMPLATE_PATH, DualnetAlgo, algos, unlabeled_stats
from .datalist import assign_folds, convert_datalist, fold_datalist, read_datalist
from .derive import DOWNSAMPLING, Derived
from .fill import derive_values, write_bundle

__all__ = [
    "ALGO_NAME",
    "DOWNSAMPLING",
    "Derived",
    "DualnetAlgo",
    "TEMPLATE_PATH",
    "algos",
    "assign_folds",
    "convert_datalist",
    "derive_values",
    "fold_datalist",
    "read_datalist",
    "unlabeled_stats",
    "write_bundle",
]
