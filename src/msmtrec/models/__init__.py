"""The model zoo. Each module registers one model by name; importing this package registers them all.

Every module of this package is imported here, so adding a model is adding one file (the tests iterate
``registered_models()``).
"""

import importlib
import pkgutil

from msmtrec.models.base import MultiTaskModel, build_model, model_class, register, registered_models

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MultiTaskModel", "build_model", "model_class", "register", "registered_models"]
