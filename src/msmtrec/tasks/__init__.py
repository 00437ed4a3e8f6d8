"""Task kinds: one module per kind of target (see :mod:`msmtrec.tasks.base` for the contract).

``kind_of(task)`` is how every other layer asks "how do I check, train, map, score, export or rank this
task?"; ``OutputMapping`` applies the kinds' output mappings with the post-hoc parameters of a run.
"""

from msmtrec.tasks import binary, regression, ziln  # noqa: F401  (registers the kinds)
from msmtrec.tasks.base import TaskKind, get_kind, kind_of, register_kind, registered_kinds
from msmtrec.tasks.mapping import MAPPING_FILE, OutputMapping

__all__ = [
    "MAPPING_FILE",
    "OutputMapping",
    "TaskKind",
    "get_kind",
    "kind_of",
    "register_kind",
    "registered_kinds",
]
