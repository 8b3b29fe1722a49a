"""Fully sharded co-training (FSDP2 under Lightning's ``ModelParallelStrategy``).

Only the LM side's network (``IDTokenLM``: backbone, ID-token projections, output projection) is sharded: it
holds nearly all the parameters (a 7B decoder against a few MB of ID tables). InfoSharing and the domain
encoder stay whole on every rank, because both
sides read InfoSharing's tables directly (scores against the whole item table, LightGCN propagation), not
through a module's forward where FSDP could gather them. Their gradients are averaged across ranks here, as
DDP would, before each optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor


class FullyShardedStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` for data parallelism alone: every device, on every node, is one
    FSDP2 rank (no tensor parallelism), so no mesh sizes to set. Checkpoints are single full files by default,
    which resume on any number of devices."""

    def __init__(self, save_distributed_checkpoint: bool = False, process_group_backend: str | None = None,
                 timeout: timedelta = timedelta(minutes=30)) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def shard_lm_network(network: nn.Module, mesh: DeviceMesh) -> None:
    """``fully_shard`` each transformer block of the LM network's backbone, then the network itself, which
    takes the remaining weights (embeddings, final norm, projections) and is the root that every LM forward
    enters first."""
    from torch.distributed.fsdp import fully_shard

    blocks = max((m for m in network.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    if blocks is None:
        raise ValueError(f"{type(network).__name__} has no list of transformer blocks to shard")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(network, mesh=mesh)


def is_sharded(param: torch.Tensor) -> bool:
    return isinstance(param, DTensor)


def average_replicated_grads(params: Iterable[torch.Tensor], group: dist.ProcessGroup | None = None) -> None:
    """All-reduce (mean) the gradients of the parameters FSDP does not manage.

    A parameter with no gradient on any rank keeps none (as under DDP, so optimizers skip it); one with a
    gradient on some ranks only counts zeros on the others.
    """
    replicated = [p for p in params if p.requires_grad and not is_sharded(p)]
    if not replicated:
        return
    device = replicated[0].device
    has_grad = torch.tensor([p.grad is not None for p in replicated], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad, group=group)
    world = dist.get_world_size(group)
    for param, anywhere in zip(replicated, has_grad.tolist(), strict=True):
        if not anywhere:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, group=group)
        param.grad.div_(world)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float, group: dist.ProcessGroup | None = None,
                   ) -> torch.Tensor:
    """Clip by the global gradient norm when some gradients are shards (DTensor) and some are whole.

    The shards' squared norms are summed across ranks; the whole gradients (already averaged, identical on
    every rank) are counted once.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    whole = [g for g in grads if not isinstance(g, DTensor)]
    device = (sharded or whole)[0].device
    shard_sq = sum((g.float().pow(2).sum() for g in sharded), torch.zeros((), device=device))
    dist.all_reduce(shard_sq, group=group)
    whole_sq = sum((g.float().pow(2).sum() for g in whole), torch.zeros((), device=device))
    total = (shard_sq + whole_sq).sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device) if not isinstance(g, DTensor) else scale.item())
    return total


def most_across_ranks(count: int, group: dist.ProcessGroup | None = None) -> int:
    """The largest ``count`` over the ranks (e.g. evaluation batches, which ranks get in uneven shares)."""
    most = torch.tensor(count, device=_device(group))
    dist.all_reduce(most, op=dist.ReduceOp.MAX, group=group)
    return int(most)


def _device(group: dist.ProcessGroup | None) -> torch.device:
    backend = dist.get_backend(group)
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
