"""The model zoo. Each module registers one model by name; importing this package registers them all."""

from msmtrec.models import (  # noqa: F401
    esmm,
    hef,
    hinet,
    m3oe,
    mmoe,
    pepnet,
    ple,
    shared_bottom,
    single_task,
    star,
)
from msmtrec.models.base import MultiTaskModel, build_model, model_class, register, registered_models

__all__ = ["MultiTaskModel", "build_model", "model_class", "register", "registered_models"]
