"""Reusable building blocks. Each block lives in one place and every model composes them."""

from msmtrec.layers.embedding import FieldEmbedding
from msmtrec.layers.mlp import MLP
from msmtrec.layers.outputs import TaskHeads, funnel_logit

__all__ = ["FieldEmbedding", "MLP", "TaskHeads", "funnel_logit"]
