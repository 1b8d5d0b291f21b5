"""SAE architectures behind one contract (see CONTRACT.md).

Importing this package imports every module in this folder once; an architecture's file registers its class
(and config) there, so adding an architecture is adding one file.
"""

import importlib
import pkgutil

from sae_lab.saes.base import BaseSAE, TrainOutput, build_sae
from sae_lab.saes.config import SAEConfig, sae_config
from sae_lab.saes.registry import get_sae_class, register, registered_names

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BaseSAE",
    "TrainOutput",
    "SAEConfig",
    "build_sae",
    "get_sae_class",
    "register",
    "registered_names",
    "sae_config",
]
