"""FusedAdam takes bit-identical steps to torch.optim.Adam/AdamW(fused=True) and shares their state format."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from msmtrec.training.adam import FusedAdam


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(24, 16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 1))


def _groups(net: torch.nn.Module) -> list[dict]:
    emb = list(net[0].parameters())
    dense = [p for p in net.parameters() if all(p is not e for e in emb)]
    return [{"params": dense, "lr": 3e-3, "weight_decay": 1e-4}, {"params": emb, "lr": 1e-2, "weight_decay": 0.0}]


def _train(net: torch.nn.Module, opt, steps: range, lr_scale: float = 1.0) -> None:
    for i in steps:
        g = torch.Generator().manual_seed(i)
        x = torch.randint(0, 50, (32, 3), generator=g)
        y = torch.randn(32, 1, generator=g)
        for group in opt.param_groups:  # a schedule changing lr between steps
            group["lr"] = group["lr"] * lr_scale
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("decoupled", [False, True])
def test_steps_are_bit_identical_to_torch(decoupled: bool) -> None:
    ref, ours = _net(0), _net(0)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    t_opt = cls(_groups(ref), lr=1e-3, fused=True)
    o_opt = FusedAdam(_groups(ours), lr=1e-3, decoupled=decoupled)
    _train(ref, t_opt, range(12), 0.97)
    _train(ours, o_opt, range(12), 0.97)
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)
    t_sd, o_sd = t_opt.state_dict(), o_opt.state_dict()
    assert [sorted(g.items()) for g in t_sd["param_groups"]] == [sorted(g.items()) for g in o_sd["param_groups"]]
    assert t_sd["state"].keys() == o_sd["state"].keys()
    for k, st in t_sd["state"].items():
        assert st.keys() == o_sd["state"][k].keys()
        for name, v in st.items():
            assert v.dtype == o_sd["state"][k][name].dtype and torch.equal(v, o_sd["state"][k][name])


def test_state_dict_round_trips_both_ways() -> None:
    """A checkpoint written by torch's optimiser resumes in ours (and back) with identical next steps."""
    ref, ours = _net(1), _net(1)
    t_opt = torch.optim.Adam(_groups(ref), lr=1e-3, fused=True)
    _train(ref, t_opt, range(5))
    ours.load_state_dict(ref.state_dict())
    o_opt = FusedAdam(_groups(ours), lr=1e-3)
    o_opt.load_state_dict(t_opt.state_dict())
    _train(ref, t_opt, range(5, 9))
    _train(ours, o_opt, range(5, 9))
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)
    back = torch.optim.Adam(_groups(ref), lr=1e-3, fused=True)
    back.load_state_dict(copy.deepcopy(o_opt.state_dict()))  # like torch, state_dict shares tensors
    _train(ref, back, range(9, 11))
    _train(ours, o_opt, range(9, 11))
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)


def test_mismatched_state_is_refused() -> None:
    opt = FusedAdam(_groups(_net(0)), lr=1e-3)
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0]}]})


def test_training_does_not_import_dynamo() -> None:
    """The point of the class: a step, zero_grad and state_dict leave torch._dynamo unimported."""
    code = (
        "import sys, torch\n"
        "from msmtrec.training.adam import FusedAdam\n"
        "p = torch.nn.Parameter(torch.ones(3)); opt = FusedAdam([{'params': [p]}], lr=0.1)\n"
        "p.grad = torch.ones(3); opt.step(); opt.zero_grad(); opt.state_dict()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
