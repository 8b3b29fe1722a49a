"""Compare runs: ``python -m lightning_bridge.evaluation.report 'logs/*'`` prints a markdown table of every run's final
test metrics with its model and key settings, and writes the table as CSV and a PNG of the runs side by side.

A run is a log folder that holds a ``config.yaml`` and TensorBoard events (``<save_dir>/<name>/version_N``);
a pattern may name runs or any folder above them. Each model a run tested (``domain``, ``lm``) is one row;
its metrics are the last values logged under ``<model>/test/...``, so a run tested again later (``main.py
test --config <run>/config.yaml``) shows its latest test, and ``checkpoint`` names the checkpoint that test
read (from ``<run>/ndcg_by_bucket.csv``). Runs whose configs differ only in their seed share a ``setting`` and
are also summarised together: mean ± sample standard deviation over the n seeds.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_bridge.run.hparams import flat_config

log = logging.getLogger(__name__)
MODELS = ("domain", "lm")
TABLE_METRICS = ("ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10", "rare_ndcg@10", "new_item_ndcg@10")
# column -> the config keys that may hold it (alone, or inside co-training's model sections)
KNOBS = {
    "data": ("data.variant", "data.dataset_name", "data.folder", "data.class_path"),
    "encoder": ("model.encoder", "model.domain.encoder"),
    "backbone": ("model.backbone", "model.lm.backbone"),
    "dim": ("model.embedding_dim",),
    "epochs": ("trainer.max_epochs",),
    "seed": ("seed_everything",),
    "sparse_k": ("data.max_train_per_user",),
    "new_items": ("data.new_item_fraction",),
}
SETTINGS = ("run", "model", "tested", "checkpoint", "setting", *KNOBS)
# config keys that say where a run writes or how it talks, or its seed: not part of what the runs compare
NOT_A_SETTING = ("seed_everything", "data.seed", "data.cache_dir", "trainer.logger", "trainer.default_root_dir",
                 "checkpoint.dirpath", "predictions.", "predict_for.", "progress.", "verbosity", "test_after_fit",
                 "export_after_fit", "allow_config_changes")


def find_runs(patterns: Sequence[str]) -> list[Path]:
    """Run folders named by the patterns, or found below the folders they name, sorted and unique."""
    runs: set[Path] = set()
    for pattern in patterns:
        for match in map(Path, glob.glob(pattern)):
            candidates = [match] if _is_run(match) else [p.parent for p in match.rglob("config.yaml")]
            runs.update(p for p in candidates if _is_run(p))
    return sorted(runs)


def _is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file() and any(folder.glob("events.out.tfevents.*"))


def read_run(run: Path) -> list[dict[str, Any]]:
    """One row per model the run tested (one row saying "not tested" when none was), with its settings."""
    config = flat_config(yaml.safe_load((run / "config.yaml").read_text()) or {})
    settings = {"run": str(run), "model": _model_name(config), "setting": _setting(config)}
    for column, keys in KNOBS.items():
        key = next((k for k in keys if config.get(k) not in (None, "None")), None)
        value = config[key] if key else ""
        settings[column] = value.rsplit(".", 1)[-1] if key == "data.class_path" else value
    tested_at = _tested_checkpoints(run)
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    rows = []
    for model in MODELS:
        prefix = f"{model}/test/"
        metrics = {t.removeprefix(prefix): _last(events, t) for t in tags if t.startswith(prefix)}
        if metrics:
            rows.append({**settings, "tested": model, "checkpoint": tested_at.get(model, ""), **metrics})
    return rows or [{**settings, "tested": "not tested"}]


def _setting(config: dict[str, Any]) -> str:
    """A short hash of the config without its seed and output places: equal for runs that differ only in seed."""
    kept = {k: str(v) for k, v in config.items() if not k.startswith(NOT_A_SETTING)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:8]


def _tested_checkpoints(run: Path) -> dict[str, str]:
    """Each model's checkpoint in the run's latest test (the last block of ``ndcg_by_bucket.csv`` naming it)."""
    path = run / "ndcg_by_bucket.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["model"]: row["checkpoint"] for row in csv.DictReader(f) if row.get("model")}


def _last(events: EventAccumulator, tag: str) -> float:
    return max(events.Scalars(tag), key=lambda e: (e.wall_time, e.step)).value


def _model_name(config: dict[str, Any]) -> str:
    name = str(config.get("model.class_path", "")).rsplit(".", 1)[-1]
    return {"BridgeModule": "BDLM", "DomainModule": "domain", "LMModule": "LM"}.get(name, name)


def markdown(rows: list[dict[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """The table: settings, then the headline metrics that at least one row has."""
    shown = [m for m in metrics if any(m in r for r in rows)]
    columns = [c for c in (*SETTINGS, "n", "seeds") if c != "setting"] + shown
    columns = [c for c in columns if c in shown or any(r.get(c) not in ("", None) for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row[c]) if c in shown and c in row else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | tuple[float, float]) -> str:
    return f"{value[0]:.4f} ± {value[1]:.4f}" if isinstance(value, tuple) else f"{value:.4f}"


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per tested model of each ``setting``: the settings, ``n`` runs, their seeds, the checkpoints
    they were tested at, and each metric as (mean, sample std; 0 for one run)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["tested"] != "not tested":
            groups.setdefault((row["setting"], row["tested"]), []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        metrics = sorted({k for r in members for k in r} - set(SETTINGS))
        summary = {k: first.get(k, "") for k in ("model", "tested", *KNOBS) if k != "seed"}
        summary.update(n=len(members), seeds=", ".join(str(r.get("seed", "")) for r in members),
                       checkpoint=", ".join(sorted({_checkpoint_kind(r.get("checkpoint", "")) for r in members})))
        for metric in metrics:
            values = [r[metric] for r in members if metric in r]
            if len(values) == len(members):
                summary[metric] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        out.append(summary)
    return out


def _checkpoint_kind(name: str) -> str:
    """``best-lm-epoch=3-step=40`` -> ``best-lm``, ``last`` -> ``last``: what the runs' tests have in common."""
    return name.split("-epoch=")[0].split("-v")[0] if name else ""


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Every row with every test metric any run logged (over seeds: ``<metric>`` the mean, ``<metric>_std``)."""
    settings = [c for c in (*SETTINGS, "n", "seeds") if any(c in r for r in rows)]
    metrics = sorted({k for r in rows for k in r} - set(settings))
    flat = [{k: v for k, v in r.items() if not isinstance(v, tuple)}
            | {k: v[0] for k, v in r.items() if isinstance(v, tuple)}
            | {f"{k}_std": v[1] for k, v in r.items() if isinstance(v, tuple)} for r in rows]
    spread = [f"{m}_std" for m in metrics if any(isinstance(r.get(m), tuple) for r in rows)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=settings + sorted(metrics + spread))
        writer.writeheader()
        writer.writerows(flat)


def write_png(rows: list[dict[str, Any]], path: Path, metric: str) -> bool:
    """A bar per tested model of each run; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.patches
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tested = [r for r in rows if metric in r]
    figure, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(tested) + 2), 4.5))
    labels = [f"{Path(r['run']).parent.name}/{Path(r['run']).name}\n{r['tested']}" for r in tested]
    colours = {"domain": "tab:blue", "lm": "tab:orange"}
    ax.bar(range(len(tested)), [r[metric] for r in tested], color=[colours.get(r["tested"]) for r in tested])
    ax.set_xticks(range(len(tested)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} by run")
    # beside the plot, never over a bar
    ax.legend(handles=[matplotlib.patches.Patch(color=c, label=m) for m, c in colours.items()],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m lightning_bridge.evaluation.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or glob patterns (quote them), e.g. 'logs/*'")
    parser.add_argument("--out", default="report", help="writes <out>.csv and <out>.png (default: report)")
    parser.add_argument("--metric", default="ndcg@10", help="the test metric the PNG compares (default: ndcg@10)")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        parser.error(f"no run folder (config.yaml and TensorBoard events) in or below {' '.join(args.runs)}")
    rows = [row for run in runs for row in read_run(run)]
    print(markdown(rows))
    write_csv(rows, Path(f"{args.out}.csv"))
    written = [f"{args.out}.csv"]
    grouped = over_seeds(rows)
    if any(g["n"] > 1 for g in grouped):
        print(f"\nOver seeds (mean ± sample std):\n\n{markdown(grouped)}")
        write_csv(grouped, Path(f"{args.out}_over_seeds.csv"))
        written.append(f"{args.out}_over_seeds.csv")
    if write_png(rows, Path(f"{args.out}.png"), args.metric):
        written.append(f"{args.out}.png")
    else:
        print("matplotlib is not installed: no PNG (pip install -e \".[plots]\")", file=sys.stderr)
    print(f"\n{len(runs)} runs; wrote {', '.join(written)}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
