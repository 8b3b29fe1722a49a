"""How the domain side scales: LightGCN and MF on synthetic data from 10^5 to 10^7 interactions.

    python bench/scale.py                                    # 1e5 1e6 1e7, lightgcn and mf, 1 thread
    python bench/scale.py --sizes 1e5 1e6 --models mf        # a subset
    python bench/scale.py --models mf --sparse_embeddings    # MF with sparse row gradients and LazyAdam
    python bench/scale.py --models lightgcn --fused_adam --thp   # Adam(fused=True), THP_MEM_ALLOC_ENABLE=1
    python bench/scale.py --summarize bench/results/scale.jsonl   # the markdown table and the PNG
    python bench/scale.py --sizes 1e5 1e6 --export_recbole logs/scale_recbole   # the splits as RecBole files

Each (size, model) runs in its own process, so its peak RSS (``ru_maxrss``) is its own. Data: users draw
items with Zipf-like popularity (the item of popularity rank r with probability ~ r^-0.8), about 10
interactions per user (at least 3, so that leave-one-out keeps a training item), 10^(k-1) users and items for
10^k interactions. Reported per run:
- ``setup_s``: generating, id-mapping, splitting and building the training graph;
- ``batch_s``: median time of one training step (forward, backward, Adam), after 3 warm-up steps;
- ``load_s``: median time the data loader took to serve one of those batches (BPR negatives included);
- ``epoch_sampling_s``: the first batch's loading, which shuffles the epoch and draws all its BPR negatives;
- ``epoch_s``: ``epoch_sampling_s`` + (``batch_s`` + ``load_s``) x the batches of one epoch, at the fixed
  batch size (a projection when the epoch was not run in full, flagged by ``epoch_measured: false``; rows
  written before ``load_s`` existed counted ``batch_s`` alone);
- ``eval_s_per_1000_users``: full-ranking evaluation (scores over the whole catalogue, training items masked,
  top-k metrics), measured on ``--eval_users`` users;
- ``peak_rss_gb``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "scale.jsonl"


def scale_raw(num_interactions: int, seed: int = 0):
    """Popularity-skewed synthetic interactions as RawData (numpy arrays throughout)."""
    from lightning_bridge.data.sources import RawData

    rng = np.random.default_rng(seed)
    num_users = num_items = max(num_interactions // 10, 100)
    counts = 3 + rng.geometric(1 / 8, size=num_users) - 1  # mean about 10
    scale = num_interactions / counts.sum()
    counts = np.maximum(3, np.round(counts * scale)).astype(np.int64)
    users = np.repeat(np.arange(num_users), counts)
    popularity = np.arange(1, num_items + 1, dtype=np.float64) ** -0.8
    items = rng.choice(num_items, size=len(users), p=popularity / popularity.sum())
    _, first = np.unique(users * num_items + items, return_index=True)  # a repeated pair counts once
    users, items = users[first], items[first]
    keep = np.bincount(users, minlength=num_users)[users] >= 3
    users, items = users[keep], items[keep]
    timestamps = rng.permutation(len(users)).astype(np.int64)
    return RawData(users=users.astype(str), items=items.astype(str), ratings=np.ones(len(users), np.float32),
                   timestamps=timestamps, item_text={}, item_titles={}, user_text={}, source="scale")


def scale_data(size: int, **options):
    """The data module over ``scale_raw(size)``, named ``scale-<size>`` (its RecBole export's name too)."""
    from lightning_bridge.data.datamodule import RecDataModule

    class ScaleData(RecDataModule):
        def name(self) -> str:
            return f"scale-{size}"

        def read(self):
            return scale_raw(size)

    return ScaleData(**options)


def export_recbole(size: int, folder: Path) -> None:
    """Writes the leave-one-out split of ``size`` as the RecBole dataset ``scale-<size>-split`` in ``folder``
    (``bench/recbole_scale.py`` reads it)."""
    data = scale_data(size, export_split_to=str(folder))
    data.prepare_data()
    data.split  # noqa: B018 (building the split writes the files)


def run_one(size: int, model: str, eval_users: int, max_batches: int, batch_size: int,
            sparse_embeddings: bool = False, fused_adam: bool = False) -> dict:
    import lightning as L
    import torch

    from lightning_bridge.models.domain import DomainModule

    t = time.perf_counter()
    data = scale_data(size, batch_size=batch_size, eval_batch_size=250)
    data.prepare_data()
    data.setup("fit")
    module = DomainModule(data.num_users, data.num_items, encoder=model, num_layers=2,
                          sparse_embeddings=sparse_embeddings,
                          optimizer=functools.partial(torch.optim.Adam, fused=fused_adam or None))
    module.recommender.attach(data)
    setup_s = time.perf_counter() - t

    loader = data.train_dataloader()
    domain_loader = loader["domain"] if isinstance(loader, dict) else loader
    batches_per_epoch = len(domain_loader)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    steps = min(batches_per_epoch, max_batches)
    times, loads = [], []
    batches = iter(domain_loader)
    for _ in range(min(steps + 3, batches_per_epoch)):
        start = time.perf_counter()
        batch = next(batches)
        loads.append(time.perf_counter() - start)
        start = time.perf_counter()
        optimizer.zero_grad()
        module.recommender.loss(batch).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    batch_s, load_s = statistics.median(times[3:] or times), statistics.median(loads[3:] or loads[1:])

    data.setup("test")
    test_users = data.num_users
    limit = max(1, -(-eval_users // 250))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_test_batches=limit)
    t = time.perf_counter()
    trainer.test(module, datamodule=data, verbose=False)
    eval_s = time.perf_counter() - t
    evaluated = min(limit * 250, test_users)
    return {"interactions": size, "train_interactions": len(data.split.train),
            "users": data.num_users, "items": data.num_items, "model": model,
            "sparse_embeddings": sparse_embeddings, "optimizer": type(optimizer).__name__, "fused_adam": fused_adam,
            "thp": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
            "load_s": load_s, "epoch_sampling_s": loads[0],
            "batch_size": batch_size, "setup_s": setup_s, "batch_s": batch_s,
            "batches_per_epoch": batches_per_epoch, "epoch_s": loads[0] + (batch_s + load_s) * batches_per_epoch,
            "epoch_measured": steps == batches_per_epoch, "eval_s_per_1000_users": eval_s / evaluated * 1000,
            "eval_users": evaluated, "torch_threads": torch.get_num_threads(),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def label(row: dict) -> str:
    """The model as the table and the plot name it, with its variant: ``mf sparse`` (sparse_embeddings),
    ``lightgcn fused THP`` (Adam(fused=True), THP_MEM_ALLOC_ENABLE=1)."""
    return row["model"] + "".join(f" {name}" for key, name in (("sparse_embeddings", "sparse"), ("fused_adam", "fused"),
                                                               ("thp", "THP")) if row.get(key))


def summarize(path: Path) -> None:
    latest = {}  # a rerun of a size and model replaces its earlier rows
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest[row["interactions"], label(row)] = row
    rows = sorted(latest.values(), key=lambda r: (r["interactions"], label(r)))
    print("| interactions | users = items | model | setup (s) | step (ms) | loading a batch (ms) | epoch (s) "
          "| eval per 1,000 users (s) | peak RSS (GB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        epoch = f"{r['epoch_s']:.1f}" + ("" if r["epoch_measured"] else " (projected)")
        load = f"{r['load_s'] * 1000:.1f}" if "load_s" in r else "-"
        print(f"| {r['interactions']:.0e} | {r['users']:,} | {label(r)} | {r['setup_s']:.1f} | "
              f"{r['batch_s'] * 1000:.1f} | {load} | {epoch} | {r['eval_s_per_1000_users']:.2f} | "
              f"{r['peak_rss_gb']:.2f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for model in sorted({label(r) for r in rows}):
        mine = sorted((r for r in rows if label(r) == model), key=lambda r: r["interactions"])
        x = [r["interactions"] for r in mine]
        for ax, key, title in ((axes[0], "batch_s", "training step (s)"),
                               (axes[1], "eval_s_per_1000_users", "evaluation per 1,000 users (s)"),
                               (axes[2], "peak_rss_gb", "peak RSS (GB)")):
            ax.loglog(x, [r[key] for r in mine], "o-", label=model)
            ax.set_xlabel("interactions")
            ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    parser.add_argument("--models", nargs="+", default=["lightgcn", "mf"])
    parser.add_argument("--eval_users", type=int, default=1000)
    parser.add_argument("--max_batches", type=int, default=20, help="training steps timed per run")
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparse_embeddings", action="store_true",
                        help="DomainModule(sparse_embeddings=True): sparse row gradients and LazyAdam (mf, ncf)")
    parser.add_argument("--fused_adam", action="store_true", help="torch.optim.Adam(fused=True): one pass per step")
    parser.add_argument("--thp", action="store_true",
                        help="THP_MEM_ALLOC_ENABLE=1: torch allocates large tensors on transparent huge pages")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # SIZE MODEL: the child process
    parser.add_argument("--summarize", type=Path)
    parser.add_argument("--export_recbole", type=Path, help="write each size's split as RecBole files here, no run")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    if args.export_recbole:
        for size in args.sizes:
            export_recbole(int(size), args.export_recbole)
            print(f"wrote {args.export_recbole}/scale-{int(size)}-split")
        return
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(int(float(args.one[0])), args.one[1], args.eval_users, args.max_batches,
                                 args.batch_size, args.sparse_embeddings, args.fused_adam)))
        return
    print("rerun: python bench/scale.py " + " ".join(sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        for model in args.models:
            child = [sys.executable, __file__, "--one", str(size), model, "--eval_users", str(args.eval_users),
                     "--max_batches", str(args.max_batches), "--batch_size", str(args.batch_size),
                     "--threads", str(args.threads),
                     *(f"--{flag}" for flag in ("sparse_embeddings", "fused_adam") if getattr(args, flag))]
            env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"} if args.thp else None
            done = subprocess.run(child, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{size:.0e} {model}: failed\n{done.stderr[-3000:]}")
                continue
            line = done.stdout.strip().splitlines()[-1]
            print(line)
            with args.out.open("a") as f:
                f.write(line + "\n")
    summarize(args.out)


if __name__ == "__main__":
    main()
