"""Task kinds: one module per kind of target (see :mod:`msmtrec.tasks.base` for the contract).

``kind_of(task)`` is how every other layer asks "how do I check, train, map, score, export or rank this
task?"; ``OutputMapping`` applies the kinds' output mappings with the post-hoc parameters of a run.
Every module of this package is imported here, so a new kind is one file with a ``@register_kind`` class.
"""

import importlib
import pkgutil

from msmtrec.tasks.base import TaskKind, get_kind, kind_of, register_kind, registered_kinds
from msmtrec.tasks.mapping import MAPPING_FILE, OutputMapping

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # registers the kinds (binary, regression, ziln, ...)

__all__ = [
    "MAPPING_FILE",
    "OutputMapping",
    "TaskKind",
    "get_kind",
    "kind_of",
    "register_kind",
    "registered_kinds",
]
