"""Run under ``torchrun --nproc_per_node=2`` by tests/test_sharding.py: a sharded model equals the plain one.

Builds a model with plain embeddings, shards its TorchRec form with ``DistributedModelParallel`` (the
sharding type from argv), copies the plain weights into the shards and checks that every rank's forward
pass matches the plain model on that rank's batch, that the consolidated state is the plain one, and that
one SGD step moves the tables as plain SGD on the ranks' mean gradient would. Prints ``OK <forward diff>
<weight diff>`` and ``STEP <diff>`` on rank 0.
"""

from __future__ import annotations

import copy
import sys

import torch

from msmtrec.data.schema import random_batch, synthetic_schema
from msmtrec.layers.torchrec_embedding import to_torchrec
from msmtrec.models.base import build_model
from msmtrec.training.config import TrainConfig
from msmtrec.training.distributed import init_distributed, shutdown_distributed
from msmtrec.training.loss import MultiTaskLoss
from msmtrec.training.sharding import full_state_dict, load_full_state, model_weights, shard
from msmtrec.training.trainer import TrainingModule


def main(kind: str, model_name: str) -> None:
    ctx, device = init_distributed("cpu")
    schema = synthetic_schema(n_sparse=3, vocab=50, n_dense=2, seq_len=5)
    torch.manual_seed(0)
    plain = build_model(model_name, schema, {"embed_dim": 8})
    plain.eval()
    reference = copy.deepcopy(plain)
    converted = to_torchrec(plain)  # real weights, TorchRec form
    full = TrainingModule(converted, MultiTaskLoss(schema, [1.0] * len(schema.tasks))).state_dict()
    meta = to_torchrec(copy.deepcopy(reference), device="meta")
    module = TrainingModule(meta, MultiTaskLoss(schema, [1.0] * len(schema.tasks)))
    cfg = TrainConfig(sharding={"*": kind}, progress=False, embedding_optimizer="sgd", embedding_lr=0.5)
    dmp, _ = shard(module, cfg, ctx, device)
    load_full_state(dmp, full)
    batch = random_batch(schema, 64, torch.Generator().manual_seed(10 + ctx.rank))
    batch["seq:hist"][:, 3:] = 0  # padding at the end of every list, and some lists empty
    batch["seq:hist"][:8] = 0
    meta.eval()
    with torch.no_grad():
        got, want = meta(batch), reference(batch)
    diff = max(float((got[k] - want[k]).abs().max()) for k in want)
    back = full_state_dict(dmp, ctx.rank)
    if ctx.is_main:
        weights = model_weights(back)
        ref = reference.state_dict()
        assert set(weights) == set(ref), sorted(set(weights) ^ set(ref))
        wdiff = max(float((weights[k] - ref[k]).abs().max()) for k in ref)
        print(f"OK {diff:.3g} {wdiff:.3g}")
    assert diff < 1e-5, diff
    gdiff = one_step(dmp, meta, reference, batch, ctx, lr=cfg.embedding_lr or cfg.lr)
    if ctx.is_main:
        print(f"STEP {gdiff:.3g}")
    shutdown_distributed()


def one_step(dmp, sharded, reference, batch, ctx, lr: float) -> float:
    """One training step on both: the tables must end where plain SGD on the ranks' mean gradient puts them.

    Sharded tables are updated by the fused SGD inside backward; data-parallel tables get DDP's averaged
    gradient (checked against the reference's, then stepped the same way here). Returns the largest gap.
    """
    import torch.distributed as dist

    # eval mode (no dropout) so both forward passes are the same function; gradients flow all the same
    out = sharded(batch)
    sum(v.sum() for v in out.values()).backward()
    ref_out = reference(batch)
    sum(v.sum() for v in ref_out.values()).backward()
    ref_grad = reference.embedding.sparse_table.weight.grad.clone()
    dist.all_reduce(ref_grad)
    ref_grad /= ctx.world_size
    with torch.no_grad():
        for name, p in dmp.named_parameters():  # data-parallel tables: apply the same SGD step by hand
            if ".embedding_bags." in name and p.grad is not None:
                p -= lr * p.grad
    want = reference.embedding.sparse_table.weight.detach() - lr * ref_grad
    full = full_state_dict(dmp, ctx.rank)
    if not ctx.is_main:
        return 0.0
    got = model_weights(full)["embedding.sparse_table.weight"]
    return float((got - want).abs().max())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "shared_bottom")
