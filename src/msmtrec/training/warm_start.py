"""Warm start: carry a finished run's weights into a model built for a new time window.

The new window's preprocessor is the parent's, extended (:mod:`msmtrec.data.extend`), so the new model
differs from the parent only where the data grew:

* **embedding tables** — every known category keeps its code, so its learned row is copied to the same
  code of the same field (fields share one table with per-field offsets, so rows move with the offsets);
  appended categories keep the new model's initialisation, like any unseen row at the start of training;
* **scenario-specific parameters** — any parameter or buffer with a scenario axis (STAR's scenario weights
  and biases, partitioned-norm scales and running statistics, scenario expert banks and gates, scenario
  embeddings, HiNet's and PEPNet's scenario parts …) keeps the known scenarios' slices; a scenario first
  seen in the new window starts as the **mean of the known scenarios' slices** (``new_scenario="mean"``,
  the default: it begins as the average scenario and so leans on what is shared), or with the new model's
  own initialisation (``"fresh"``: STAR's neutral ones/zeros, random expert banks);
* everything else must have the same shape and is copied.

A parameter that differs in any other way cannot be carried over meaningfully, and is a one-line error
naming it. Nothing here branches on the model's name: the rules are about shapes and the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from msmtrec.errors import ConfigError
from msmtrec.layers.embedding import FieldEmbedding
from msmtrec.models.base import MultiTaskModel

NEW_SCENARIO_INITS = ("mean", "fresh")


@dataclass
class TransferReport:
    copied: int = 0
    """Tensors copied whole."""
    grown: list[str] = field(default_factory=list)
    """Tensors that gained rows (embedding rows or scenario slices)."""

    def summary(self) -> str:
        return f"warm start: {self.copied} tensors copied, {len(self.grown)} grown ({', '.join(self.grown[:6])}" + (
            " …)" if len(self.grown) > 6 else ")")


@torch.no_grad()
def transfer_state(parent: MultiTaskModel, child: MultiTaskModel, new_scenario: str = "mean") -> TransferReport:
    """Copy ``parent``'s weights into ``child`` (built on the extended schema), in place."""
    if new_scenario not in NEW_SCENARIO_INITS:
        raise ConfigError(f"warm start: new_scenario={new_scenario!r} is not one of {list(NEW_SCENARIO_INITS)}")
    report = TransferReport()
    old_state, new_state = parent.state_dict(), child.state_dict()
    done = _transfer_embeddings(parent, child, old_state, new_state, report)
    s_old, s_new = parent.schema.num_scenarios, child.schema.num_scenarios
    for key, value in new_state.items():
        if key in done:
            continue
        if key not in old_state:
            raise ConfigError(f"warm start: {key} has no counterpart in the parent run (another model config?)")
        old = old_state[key]
        if old.shape == value.shape:
            value.copy_(old)
            report.copied += 1
            continue
        axis = _scenario_axis(old.shape, value.shape, s_old, s_new)
        if axis is None:
            raise ConfigError(
                f"warm start: {key} has shape {tuple(old.shape)} in the parent and {tuple(value.shape)} now; "
                "only embedding rows and scenario axes may grow (same model config as the parent run?)"
            )
        value.narrow(axis, 0, s_old).copy_(old)
        if new_scenario == "mean":
            mean = old.double().mean(axis, keepdim=True).to(old.dtype)
            value.narrow(axis, s_old, s_new - s_old).copy_(mean.expand_as(value.narrow(axis, s_old, s_new - s_old)))
        report.grown.append(key)
    return report


def _scenario_axis(old: torch.Size, new: torch.Size, s_old: int, s_new: int) -> int | None:
    """The one axis that grew from the old to the new scenario count, if that is the only difference."""
    if len(old) != len(new) or s_new <= s_old:
        return None
    diff = [d for d in range(len(old)) if old[d] != new[d]]
    if len(diff) == 1 and old[diff[0]] == s_old and new[diff[0]] == s_new:
        return diff[0]
    return None


def _transfer_embeddings(
    parent: MultiTaskModel, child: MultiTaskModel, old_state: dict, new_state: dict, report: TransferReport
) -> set[str]:
    """Per-field row copies for every :class:`FieldEmbedding` (its table is shared by offsets)."""
    done: set[str] = set()
    old_sizes = [f.vocab_size for f in parent.schema.sparse]
    new_sizes = [f.vocab_size for f in child.schema.sparse]
    old_seq = [s.vocab_size for s in parent.schema.sequences]
    for name, module in child.named_modules():
        if not isinstance(module, FieldEmbedding):
            continue
        prefix = f"{name}." if name else ""
        key = f"{prefix}sparse_table.weight"
        old, new = old_state[key], new_state[key]
        o_off = n_off = 0
        for o_size, n_size in zip(old_sizes, new_sizes, strict=True):
            if n_size < o_size:
                raise ConfigError(f"warm start: a field's vocabulary shrank ({o_size} → {n_size}); extend, never refit")
            new[n_off:n_off + o_size].copy_(old[o_off:o_off + o_size])
            o_off, n_off = o_off + o_size, n_off + n_size
        done.add(key)
        for i, size in enumerate(old_seq):
            k = f"{prefix}seq_tables.{i}.weight"
            new_state[k][:size].copy_(old_state[k])
            done.add(k)
    for k in sorted(done):
        if old_state[k].shape != new_state[k].shape:
            report.grown.append(k)
        else:
            report.copied += 1
    return done
