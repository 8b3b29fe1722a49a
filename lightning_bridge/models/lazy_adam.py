"""LazyAdam: Adam that updates only the embedding rows a batch touched, so a step costs O(batch), not O(table)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LazyAdam(torch.optim.Optimizer):
    """Adam for a mix of sparse-gradient embedding tables and dense parameters.

    A dense gradient gets exactly ``torch.optim.Adam``'s update (weight decay 0, no amsgrad). A sparse
    gradient (``nn.Embedding(sparse=True)``) updates the rows it holds with the same formula and leaves every
    other row, and its moments, as they were: dense Adam would decay their moments and keep moving them by
    momentum. The two therefore agree on a row at every step where it is touched for the first time, and
    differ on rows skipped since their last touch. Unlike ``torch.optim.SparseAdam`` it takes dense
    parameters too (NeuMF's layers), so one optimizer serves a whole DomainModule, and it applies Adam's
    epsilon as Adam does. There is no weight decay: decaying every row at every step is the O(table) cost
    this exists to avoid (BPR's ``reg_weight`` regularises the batch's rows instead).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LazyAdam needs lr >= 0, eps >= 0 and betas in [0, 1); got lr={lr}, betas={betas}, "
                             f"eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step_size = group["lr"] / (1 - beta1 ** state["step"])
                correction2_sqrt = math.sqrt(1 - beta2 ** state["step"])
                if param.grad.is_sparse:
                    _sparse_update(param, param.grad, state, beta1, beta2, step_size, correction2_sqrt, group["eps"])
                else:
                    exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], param.grad
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(group["eps"])
                    param.addcdiv_(exp_avg, denom, value=-step_size)
        return loss


def _sparse_update(param: torch.Tensor, grad: torch.Tensor, state: dict, beta1: float, beta2: float,
                   step_size: float, correction2_sqrt: float, eps: float) -> None:
    """Adam's update of the rows a sparse gradient holds (each row once, its contributions summed)."""
    grad = grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
    exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(eps)
    param.index_copy_(0, rows, param.index_select(0, rows).addcdiv_(exp_avg, denom, value=-step_size))


def lazy_optimizer(optimizer: torch.optim.Optimizer, section: str) -> torch.optim.Optimizer:
    """The optimizer a ``sparse_embeddings`` model trains with: ``torch.optim.Adam`` (or AdamW) becomes a
    LazyAdam over the same parameter groups with the same lr, betas and eps; LazyAdam and
    ``torch.optim.SparseAdam`` stay as they are. Anything else, and weight decay or amsgrad, which would touch
    every row at every step, is an error naming ``section``'s optimizer."""
    if isinstance(optimizer, (LazyAdam, torch.optim.SparseAdam)):
        return optimizer
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        raise ValueError(f"{section}.sparse_embeddings=true needs an optimizer that updates only the rows a batch "
                         "touches: torch.optim.Adam (trained as lightning_bridge.models.lazy_adam.LazyAdam), "
                         f"LazyAdam or torch.optim.SparseAdam; got {section}.optimizer {name}")
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0) or group.get("amsgrad") or group.get("maximize"):
            raise ValueError(
                f"{section}.sparse_embeddings=true: {section}.optimizer {name} has weight_decay="
                f"{group.get('weight_decay')}, amsgrad={group.get('amsgrad')}, maximize={group.get('maximize')}; "
                f"lazy updates need weight_decay 0 and no amsgrad or maximize (weight decay would move every row "
                f"at every step; {section}.reg_weight regularises the batch's rows instead)")
    return LazyAdam([{"params": g["params"], "lr": g["lr"], "betas": g["betas"], "eps": g["eps"]}
                     for g in optimizer.param_groups])
