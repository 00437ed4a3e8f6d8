"""The model zoo. Each module registers one model by name; importing this package registers them all."""

from msmtrec.models import shared_bottom  # noqa: F401
from msmtrec.models.base import MultiTaskModel, build_model, model_class, register, registered_models

__all__ = ["MultiTaskModel", "build_model", "model_class", "register", "registered_models"]
