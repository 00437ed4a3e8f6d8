"""Data layer: dataset specs, readers, encoders, the preprocessing artifact, and batch loaders."""

from msmtrec.data.schema import Batch, Schema, SequenceField, SparseField, Task

__all__ = ["Batch", "Schema", "SequenceField", "SparseField", "Task"]
