"""Fully sharded co-training (FSDP2 via lightning_bridge.co_training.fsdp) against DDP, on 2 CPU processes (gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import CONFIGS

from lightning_bridge.co_training.fsdp import average_replicated_grads, clip_grad_norm
from lightning_bridge.co_training.sharded import FullyShardedCoTraining

TINY = str(CONFIGS / "tiny_bridge.yaml")
CPU2 = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "2"]
FSDP2 = str(Path(__file__).parents[1] / "configs" / "strategies" / "fsdp2.yaml")


def _grad_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    both, one, none = (torch.zeros(3, requires_grad=True) for _ in range(3))
    both.grad = torch.full((3,), float(rank + 1))  # 1 and 2: mean 1.5
    if rank == 0:
        one.grad = torch.full((3,), 4.0)  # only rank 0 used it: counts as 0 on rank 1, mean 2
    average_replicated_grads([both, one, none])
    norm = clip_grad_norm([both, one, none], max_norm=1.0)
    torch.save({"both": both.grad, "one": one.grad, "none": none.grad, "norm": norm}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_replicated_gradients_are_averaged_like_ddp_then_clipped_by_the_global_norm(tmp_path):
    out = str(tmp_path / "grads")
    mp.start_processes(_grad_rank, args=(29617, out), nprocs=2, start_method="fork")
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    expected_norm = torch.tensor([1.5] * 3 + [2.0] * 3).norm()
    for got in ranks:
        assert got["none"] is None  # unused everywhere: optimizers skip it, as under DDP
        assert got["norm"] == pytest.approx(float(expected_norm))
        assert torch.allclose(got["both"], torch.full((3,), 1.5) / expected_norm, atol=1e-6)
        assert torch.allclose(got["one"], torch.full((3,), 2.0) / expected_norm, atol=1e-6)


def _run(args: list[str], cwd: Path, out: str = "metrics.json") -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_run.py"), out, *args], check=True, env=env,
                   cwd=cwd, timeout=600)
    return json.loads((cwd / out).read_text())


def _weights(run: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=False)["state_dict"]


def _fit_under_ddp_and_fsdp2(tmp_path: Path, args: list[str]) -> tuple[Path, Path]:
    """Two-process CPU fits of the tiny bridge with ``args``, under DDP and under FSDP2; their run folders."""
    for name, strategy in (("ddp", ["--trainer.strategy", "ddp_find_unused_parameters_true"]),
                           ("fsdp", ["--config", FSDP2])):
        (tmp_path / name).mkdir()
        _run(["fit", "--config", TINY, *strategy, *args], tmp_path / name)
    return tuple(tmp_path / name / "logs" / "run" / "version_0" for name in ("ddp", "fsdp"))


def _assert_same_weights(ddp: dict[str, torch.Tensor], fsdp: dict[str, torch.Tensor]) -> None:
    assert ddp.keys() == fsdp.keys()
    for key, value in ddp.items():
        assert torch.allclose(value, fsdp[key], atol=1e-5), key


@pytest.mark.slow
def test_fsdp2_co_training_matches_ddp_resumes_exactly_and_evaluates_like_one_process(tmp_path):
    """Two epochs of tiny co-training under FSDP2 and under DDP give the same weights; FSDP2 resumed from its
    first epoch's checkpoint ends bitwise where it ended uninterrupted; its sharded test (uneven evaluation
    shares) gives the single process's metrics."""
    ddp, fsdp = _fit_under_ddp_and_fsdp2(tmp_path, CPU2)
    fsdp_weights = _weights(fsdp)
    _assert_same_weights(_weights(ddp), fsdp_weights)

    resumed = tmp_path / "resumed" / "logs" / "run" / "version_0" / "checkpoints"
    resumed.mkdir(parents=True)
    for written in (fsdp / "checkpoints").glob("best*-epoch=0-*.ckpt"):  # the folder as the first epoch left it:
        shutil.copy(written, resumed / written.name)  # the resumed run may keep the domain model's as its best
    first_epoch = next(resumed.glob("best-lm-epoch=0-*.ckpt"))
    _run(["fit", "--config", TINY, "--config", FSDP2, *CPU2, "--ckpt_path", str(resumed / first_epoch.name)],
         tmp_path / "resumed")
    for key, value in _weights(resumed.parent).items():
        assert torch.equal(value, fsdp_weights[key]), key

    test = ["test", "--config", str(fsdp / "config.yaml"), "--ckpt_path", str(fsdp / "checkpoints" / "last.ckpt"),
            "--trainer.accelerator", "cpu"]
    sharded = _run([*test, "--config", FSDP2, "--trainer.devices", "2"], tmp_path / "fsdp", "sharded.json")
    single = _run([*test, "--trainer.devices", "1", "--trainer.strategy", "auto"], tmp_path / "fsdp", "single.json")
    assert sharded["world_size"] == 2
    for key in ("domain/test/ndcg@10", "lm/test/ndcg@10", "lm/test/sparse_hr@20", "lm/test/mrr@20"):
        assert sharded[key] == pytest.approx(single[key], abs=1e-6), key


@pytest.mark.slow
def test_the_text_channel_with_dropped_out_items_trains_the_same_under_fsdp2_as_under_ddp(tmp_path):
    """The text channel (features encoded at every epoch start, by every rank), DropoutNet and isolated dropped
    items (random per rank, from each rank's seeded stream) give the same weights under both strategies."""
    channel = ["--model.init_args.knowledge.text_channel", "true",
               "--model.init_args.cold_start.item_id_dropout", "0.5",
               "--model.init_args.domain.init_args.dropped_items", "isolated"]
    ddp, fsdp = (_weights(run) for run in _fit_under_ddp_and_fsdp2(tmp_path, [*channel, *CPU2]))
    assert "info.text_proj.weight" in ddp
    assert ddp["info.text_proj.weight"].abs().sum() > 0  # the channel trained
    _assert_same_weights(ddp, fsdp)


class _DefaultGroup:
    """A device-mesh dimension over the default process group."""

    @staticmethod
    def get_group() -> None:
        return None


class _Planner(FullyShardedCoTraining):
    """BridgeModule's sharded-evaluation planning on its own: sharded, over the default process group."""

    _sharded = True

    def __init__(self) -> None:
        self.device_mesh = {"data_parallel": _DefaultGroup()}


def _plan_rank(rank: int, port: int, batches: list[int], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    planner = _Planner()
    try:
        planner._plan_sharded_evaluation(batches[rank], uses_lm=True)
        result = {"target": planner._lm_eval_target}
    except ValueError as err:
        result = {"error": str(err)}
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("batches", [[3, 1], [2, 0]])
def test_every_rank_agrees_on_the_sharded_evaluation_plan(tmp_path, batches):
    """Uneven shares: every rank enters the most forwards any rank has. A rank without a batch: every rank
    raises the error (none is left waiting in a sharded forward for it)."""
    out = str(tmp_path / "plan")
    mp.start_processes(_plan_rank, args=(29619 + batches[1], batches, out), nprocs=2, start_method="fork")
    results = [torch.load(f"{out}.{r}") for r in range(2)]
    if 0 in batches:
        assert all("every rank needs at least one evaluation batch" in r["error"] for r in results)
    else:
        assert [r["target"] for r in results] == [3, 3]
