"""Fused Adam / AdamW that never imports ``torch._dynamo``: the same kernel as ``torch.optim.Adam(fused=True)``.

Why: ``torch.optim.Optimizer`` imports ``torch._dynamo`` on its first ``add_param_group``, ``zero_grad``,
``step`` or ``state_dict`` (the methods are wrapped to be skipped by ``torch.compile``), and that import costs
about as much CPU as importing torch itself — a large share of a short ``msmtrec train`` (docs/training.md).
This class calls the very kernel ``torch.optim.Adam(fused=True)`` calls (``torch._fused_adam_`` /
``torch._fused_adamw_``) with the same state tensors, so the parameters after every step are bit-identical
(``tests/test_adam.py`` checks it), and its ``state_dict`` has torch's format, so checkpoints written by
either load into the other.

Only the options the trainer uses are offered (lr, weight decay per group; default betas and eps; no
amsgrad, maximize, capturable or gradient scaling).
"""

from __future__ import annotations

from typing import Any

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class FusedAdam:
    """Adam (coupled L2 weight decay) or, with ``decoupled=True``, AdamW, over ``param_groups``.

    Offers what the trainer and the schedulers use: ``param_groups`` (``lr`` may be changed between
    steps), ``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``.
    """

    def __init__(self, groups: list[dict[str, Any]], lr: float, decoupled: bool = False) -> None:
        self.decoupled = decoupled
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            params = list(g["params"])
            for p in params:
                if not (p.is_floating_point() and p.device.type in ("cpu", "cuda")):
                    raise ValueError("FusedAdam needs floating-point parameters on CPU or CUDA")
            self.param_groups.append({**self._defaults(lr), **g, "params": params})
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _defaults(self, lr: float) -> dict[str, Any]:
        """torch's Adam/AdamW group options (so ``state_dict`` matches theirs key for key)."""
        d: dict[str, Any] = {
            "lr": lr, "betas": BETAS, "eps": EPS, "weight_decay": 1e-2 if self.decoupled else 0.0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
            "fused": True, "decoupled_weight_decay": self.decoupled,
        }
        return d

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:
                    self.state[p] = {
                        "step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            by_device: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in params:
                by_device.setdefault((p.device, p.dtype), []).append(p)
            beta1, beta2 = g["betas"]
            for group_params in by_device.values():
                states = [self.state[p] for p in group_params]
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                kernel(
                    group_params, [p.grad for p in group_params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=g["lr"], beta1=beta1,
                    beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None,
                    found_inf=None,
                )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's format: parameters numbered in group order, state keyed by those numbers."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by this class or by ``torch.optim.Adam``/``AdamW`` over the same parameters."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups, strict=True)
        ):
            raise ValueError("loaded optimizer state does not match the parameter groups")
        self.state = {}
        for s, g in zip(saved, self.param_groups, strict=True):
            for i, p in zip(s["params"], g["params"], strict=True):
                if i in state_dict["state"]:
                    st = state_dict["state"][i]
                    self.state[p] = {
                        "step": st["step"].to(dtype=torch.float32, device=p.device).clone(),
                        "exp_avg": st["exp_avg"].to(dtype=p.dtype, device=p.device).clone(),
                        "exp_avg_sq": st["exp_avg_sq"].to(dtype=p.dtype, device=p.device).clone(),
                    }
            g.update({k: v for k, v in s.items() if k != "params"})
