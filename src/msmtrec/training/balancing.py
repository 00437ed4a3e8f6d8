"""Loss balancing across tasks, selected by ``train.loss_weighting`` next to ``fixed`` and ``uncertainty``.

* ``gradnorm`` — GradNorm (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
  Deep Multitask Networks", ICML 2018, https://arxiv.org/abs/1711.02257). Task weights ``w_i`` are learnt so
  that each task's gradient norm on the shared weights, ``G_i = w_i ‖∇_W L_i‖``, approaches
  ``Ḡ · r_i^α``, where ``r_i`` is the task's inverse training rate (``L_i(t) / L_i(0)`` over its mean across
  tasks): a task whose loss falls *slower* than the others' gains weight. After every update the weights are
  renormalised to sum to the number of tasks. ``G_i`` is linear in ``w_i``, so the gradient of the GradNorm
  loss ``Σ |G_i − target_i|`` with respect to ``w_i`` is ``sign(G_i − target_i) · ‖∇_W L_i‖`` exactly, with
  no second-order graph.
* ``pcgrad`` — PCGrad, gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
  https://arxiv.org/abs/2001.06782). On the shared parameters each task's gradient is projected onto the
  normal plane of every other task's gradient it conflicts with (negative dot product), in random order,
  and the projected gradients are summed. Task-specific parameters keep their ordinary gradients.
* ``dwa`` — Dynamic Weight Average (Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019,
  https://arxiv.org/abs/1803.10704): after each epoch ``w_i = T · softmax_i(ρ_i / τ)`` with
  ``ρ_i = L_i(e−1) / L_i(e−2)`` the ratio of the task's last two epoch-mean training losses; weights are 1
  for the first two epochs.

"Shared parameters" are found from the gradients, not from the model's name: at the first step each task's
gradient is computed, and a parameter reached by at least two tasks is shared. The weights live in the
loss's ``balance`` buffer (and GradNorm's initial losses, DWA's loss history in buffers beside it), so they
are saved in ``last.pt`` and a resumed run continues with them. GradNorm and PCGrad need one backward pass
per task (``autograd.grad``) and therefore a single process; DWA also runs under ``torchrun``.
"""

from __future__ import annotations

import torch
from torch import nn

from msmtrec.errors import ConfigError
from msmtrec.training.loss import MultiTaskLoss

BALANCERS = ("gradnorm", "pcgrad", "dwa")
"""The ``train.loss_weighting`` values this module implements."""


def project_conflicting(grads: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """PCGrad's surgery on ``[T, P]`` per-task gradients → ``[T, P]`` projected gradients.

    Each task's gradient is projected, one other task at a time (in ``order``, the paper's random order),
    onto the normal plane of any *original* gradient it conflicts with: ``g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j``
    when ``g_i·g_j < 0``.
    """
    n = grads.shape[0]
    order = torch.arange(n) if order is None else order
    out = grads.clone()
    for i in range(n):
        for j in order.tolist():
            if j == i:
                continue
            dot = out[i] @ grads[j]
            norm_sq = grads[j] @ grads[j]
            if dot < 0 and norm_sq > 0:
                out[i] = out[i] - dot / norm_sq * grads[j]
    return out


def gradnorm_weights(
    weights: torch.Tensor, grad_norms: torch.Tensor, loss_ratios: torch.Tensor, alpha: float, lr: float
) -> torch.Tensor:
    """One GradNorm update of the task weights → new weights summing to the number of tasks.

    ``grad_norms``: ``‖∇_W L_i‖`` of the unweighted task losses; ``loss_ratios``: ``L_i(t) / L_i(0)``.
    """
    g = weights * grad_norms  # G_i
    target = g.mean() * (loss_ratios / loss_ratios.mean().clamp(min=1e-12)) ** alpha  # constant, as in the paper
    step = torch.sign(g - target) * grad_norms  # exact ∂ Σ|G_i − target_i| / ∂ w_i
    new = (weights - lr * step).clamp(min=1e-3)
    return new * (len(new) / new.sum())


def dwa_weights(last: torch.Tensor, before: torch.Tensor, temperature: float) -> torch.Tensor:
    """DWA's weights from the last two epoch-mean task losses: ``T · softmax(last / before / τ)``."""
    ratio = last / before.clamp(min=1e-12)
    return len(last) * torch.softmax(ratio / temperature, dim=0)


class Balancer:
    """Replaces ``total.backward()`` in the trainer for one of :data:`BALANCERS`."""

    def __init__(self, method: str, loss: MultiTaskLoss, model: nn.Module, alpha: float, lr: float, tau: float):
        self.method, self.loss, self.alpha, self.lr, self.tau = method, loss, alpha, lr, tau
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shared: list[nn.Parameter] | None = None

    def backward(self, total: torch.Tensor) -> None:
        """Fill the parameters' gradients for this step (and, for GradNorm, move the task weights)."""
        if self.method == "dwa":
            total.backward()
            return
        terms = self.loss.weighted_terms  # [T] with graph: task_weight · balance · L_i
        task_grads = self._task_grads(terms)  # [T, P] on the shared parameters
        if self.method == "gradnorm":
            self._gradnorm_step(task_grads)
            total.backward()
            return
        total.backward()  # every parameter's ordinary gradient, regularisers included
        order = torch.randperm(len(task_grads))
        correction = (project_conflicting(task_grads, order) - task_grads).sum(0)
        offset = 0
        for p in self.shared or []:
            n = p.numel()
            p.grad = p.grad + correction[offset : offset + n].view_as(p) if p.grad is not None else None
            offset += n

    def end_epoch(self, mean_task_losses: list[float]) -> None:
        """DWA: shift the loss history and set the next epoch's weights (a no-op for the others)."""
        if self.method != "dwa":
            return
        history = self.loss.loss_history
        history[0] = history[1].clone()
        history[1] = torch.tensor(mean_task_losses, dtype=history.dtype, device=history.device)
        if not torch.isnan(history).any():
            self.loss.balance.copy_(dwa_weights(history[1], history[0], self.tau))

    def _task_grads(self, terms: torch.Tensor) -> torch.Tensor:
        if self.shared is None:
            self.shared = self._find_shared(terms)
        rows = []
        for i in range(len(terms)):
            grads = torch.autograd.grad(terms[i], self.shared, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                   for g, p in zip(grads, self.shared, strict=True)]))
        return torch.stack(rows)

    def _find_shared(self, terms: torch.Tensor) -> list[nn.Parameter]:
        """Parameters that at least two tasks' losses reach (all reached ones if no two tasks share any)."""
        reached = torch.zeros(len(self.params), dtype=torch.long)
        for i in range(len(terms)):
            grads = torch.autograd.grad(terms[i], self.params, retain_graph=True, allow_unused=True)
            reached += torch.tensor([g is not None and bool(g.abs().sum() > 0) for g in grads], dtype=torch.long)
        shared = [p for p, k in zip(self.params, reached.tolist(), strict=True) if k >= 2]
        return shared or [p for p, k in zip(self.params, reached.tolist(), strict=True) if k >= 1]

    @torch.no_grad()
    def _gradnorm_step(self, task_grads: torch.Tensor) -> None:
        loss = self.loss
        per_task = loss.last_per_task.detach()
        if torch.isnan(loss.initial_loss).any():
            loss.initial_loss.copy_(per_task.clamp(min=1e-12))
        weights = loss.balance
        # task_grads are of the weighted terms; divide the current weight out for ‖∇_W (task_weight · L_i)‖
        norms = task_grads.norm(dim=1) / weights.clamp(min=1e-12)
        weights.copy_(gradnorm_weights(weights, norms, per_task / loss.initial_loss, self.alpha, self.lr))


def make_balancer(
    method: str, loss: MultiTaskLoss, model: nn.Module, distributed: bool,
    alpha: float = 1.5, lr: float = 0.025, tau: float = 2.0,
) -> Balancer | None:
    """The balancer for ``train.loss_weighting`` (``None`` for ``fixed`` and ``uncertainty``)."""
    if method not in BALANCERS:
        return None
    if distributed and method != "dwa":
        raise ConfigError(f"train.loss_weighting={method} needs per-task gradients: run it in one process")
    return Balancer(method, loss, model, alpha, lr, tau)
