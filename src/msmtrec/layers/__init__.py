"""Reusable building blocks. Each block lives in one place and every model composes them."""

from msmtrec.layers.attention import FieldAttentionLayer, FieldSelfAttention
from msmtrec.layers.embedding import FieldEmbedding
from msmtrec.layers.experts import ExpertBank, Gate, GateNU, ScenarioExpertBank, ScenarioLinear, mix
from msmtrec.layers.extraction import (
    GROUPS,
    CGCLayer,
    GroupedExtractionLayer,
    GroupedGate,
    LevelOutput,
    PLEStack,
)
from msmtrec.layers.mixing import BalancedMixing, scenario_balance_loss
from msmtrec.layers.mlp import MLP
from msmtrec.layers.normalization import PartitionedNorm
from msmtrec.layers.outputs import TaskHeads, compose_outputs, funnel_logit, output_dims, task_output
from msmtrec.layers.star import AuxiliaryNetwork, StarLinear, StarNetwork

__all__ = [
    "GROUPS",
    "MLP",
    "AuxiliaryNetwork",
    "BalancedMixing",
    "CGCLayer",
    "ExpertBank",
    "FieldAttentionLayer",
    "FieldEmbedding",
    "FieldSelfAttention",
    "Gate",
    "GateNU",
    "GroupedExtractionLayer",
    "GroupedGate",
    "LevelOutput",
    "PLEStack",
    "PartitionedNorm",
    "ScenarioExpertBank",
    "ScenarioLinear",
    "StarLinear",
    "StarNetwork",
    "TaskHeads",
    "compose_outputs",
    "output_dims",
    "task_output",
    "funnel_logit",
    "mix",
    "scenario_balance_loss",
]
