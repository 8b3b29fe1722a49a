"""What TensorBoard shows of a run: curves at the steps that trained, learning rates, the whole config with
the final metrics in HPARAMS, and NDCG@10 by activity and popularity after each test."""

import csv
import sys

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_bridge.cli import main
from lightning_bridge.evaluation import figures
from lightning_bridge.evaluation.figures import quintiles
from lightning_bridge.evaluation.metrics import TopKMetrics, target_ranks
from lightning_bridge.evaluation.per_user import PerUserMetrics
from lightning_bridge.evaluation.ranking import RankingEvaluator
from lightning_bridge.evaluation.top_k import mask_scores
from lightning_bridge.run.hparams import flat_config

TINY_BRIDGE = str(CONFIGS / "tiny_bridge.yaml")


def _events(run):
    return EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0}).Reload()


@pytest.fixture(scope="module")
def bridge_run(tmp_path_factory):
    """A 2-epoch co-training run of 7 batches per epoch with the default log_every_n_steps (50), tested."""
    root = tmp_path_factory.mktemp("tb")
    cli = main(["fit", "--config", TINY_BRIDGE, "--test_after_fit", "true", "--trainer.default_root_dir", str(root),
                "--data.init_args.cache_dir", str(root / "cache")])
    return cli, root / "run" / "version_0"


def test_each_loss_only_at_the_steps_its_model_trained_and_every_epoch(bridge_run):
    cli, run = bridge_run
    events, model = _events(run), cli.model
    steps_per_epoch = cli.trainer.num_training_batches
    assert cli.trainer.log_every_n_steps > steps_per_epoch  # Lightning alone would log no training loss
    for side in ("domain", "lm"):
        points = events.Scalars(f"train/{side}_loss")
        assert all(model.side_for_step(p.step) == side for p in points)
        assert {p.step // steps_per_epoch for p in points} == {0, 1}  # every epoch
        assert all(np.isfinite(p.value) for p in points)


def test_learning_rates_by_model_and_named_group(bridge_run):
    _, run = bridge_run
    tags = set(_events(run).Tags()["scalars"])
    assert {"lr/domain", "lr/lm/backbone", "lr/lm/id_head", "lr/lm/info_sharing"} <= tags
    assert _events(run).Scalars("lr/domain")[-1].value == pytest.approx(0.01)


def test_hparams_hold_the_whole_config_and_the_test_metrics_of_both_models(bridge_run):
    _, run = bridge_run
    events = _events(run)
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    params = start.session_start_info.hparams
    assert params["model.lm.backbone"].string_value == "tiny-decoder"
    assert params["model.lm.optimizer.lr"].number_value == pytest.approx(0.005)
    assert params["model.domain.num_layers"].number_value == 2
    assert params["seed_everything"].number_value == 42
    assert {"model.lm.lora_rank", "model.lm.finetune", "trainer.max_epochs", "data.batch_size"} <= set(params)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"domain/test/ndcg@10", "lm/test/ndcg@10", "domain/val/ndcg@10"} <= metrics
    assert "hp_metric" not in events.Tags()["scalars"]
    for tag in ("domain/test/ndcg@10", "lm/test/ndcg@10"):  # the values the HPARAMS tab shows
        assert 0.0 <= events.Scalars(tag)[-1].value <= 1.0


def test_ndcg_by_bucket_after_each_test(bridge_run):
    cli, run = bridge_run
    with (run / "ndcg_by_bucket.csv").open() as f:
        rows = list(csv.DictReader(f))
    checkpoints = {r["checkpoint"] for r in rows}
    # each model tested at its own best checkpoint, and only there
    tested = {(r["checkpoint"].startswith("best-lm-"), r["model"]) for r in rows}
    assert len(checkpoints) == 2 and tested == {(False, "domain"), (True, "lm")}
    for checkpoint, model in {(r["checkpoint"], r["model"]) for r in rows}:
        for bucket in ("activity", "popularity"):
            part = [r for r in rows if (r["checkpoint"], r["model"], r["bucket"]) == (checkpoint, model, bucket)]
            assert [r["quintile"] for r in part] == ["1", "2", "3", "4", "5"]
            assert sum(int(r["users"]) for r in part) == cli.datamodule.num_users
    if _has_matplotlib():
        images = _events(run).Tags()["images"]
        assert {f"test/ndcg@10_by_bucket/{c}" for c in checkpoints} <= set(images)


def test_per_user_rows_reproduce_every_reported_test_metric(tmp_path):
    """``per_user_test.csv`` holds each user's figures and groups: averaged over a group they give exactly the
    group's logged metric, new items (ranked among themselves) included."""
    cli = main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--test_after_fit", "true",
                "--trainer.default_root_dir", str(tmp_path), "--data.init_args.new_item_fraction", "0.25",
                "--data.init_args.num_users", "120"])
    with (tmp_path / "run" / "version_0" / "per_user_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"domain"} and len({r["checkpoint"] for r in rows}) == 1
    assert len({r["user"] for r in rows}) == len(rows)
    groups = {"": rows, "sparse_": [r for r in rows if r["sparse"] == "1"],
              "rare_": [r for r in rows if r["rare"] == "1"],
              "new_item_catalogue_": [r for r in rows if r["new_item"] == "1"]}
    assert all(groups.values())
    for prefix, part in groups.items():
        for metric in ("ndcg@10", "hr@10"):
            mean = sum(float(r[metric]) for r in part) / len(part)
            assert mean == pytest.approx(cli.test_metrics[f"domain/test/{prefix}{metric}"], abs=1e-6)
    new = groups["new_item_catalogue_"]
    for metric in ("ndcg@10", "hr@10"):
        mean = sum(float(r[f"new_item_{metric}"]) for r in new) / len(new)
        assert mean == pytest.approx(cli.test_metrics[f"domain/test/new_item_{metric}"], abs=1e-6)
    assert all(r["new_item_ndcg@10"] == "" for r in rows if r["new_item"] == "0")


def test_validation_and_trainer_test_draw_nothing_and_the_figure_comes_after(tmp_path, monkeypatch):
    """Drawing the figure costs more than ranking ML-100K's test users: fit's validations never draw, a
    ``trainer.test`` only queues its figure, and ``draw_test_figures`` (which the CLI calls after its tests)
    draws it into the test's TensorBoard run."""
    drawn = []
    monkeypatch.setattr(figures, "draw", lambda tables, title: drawn.append(title))  # None: as without matplotlib
    cli = main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--trainer.default_root_dir", str(tmp_path),
                "--export_after_fit", "false"])
    assert drawn == [] and cli.trainer.current_epoch > 0
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert drawn == [] and (tmp_path / "run" / "version_0" / "per_user_test.csv").is_file()
    figures.draw_test_figures(cli.trainer)
    assert drawn == ["final"]
    figures.draw_test_figures(cli.trainer)
    assert drawn == ["final"]  # each test's figure once


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_per_user_ndcg_and_hr_average_to_the_reported_metrics():
    torch.manual_seed(0)
    scores, targets = torch.randn(40, 30), torch.randint(0, 30, (40, 2))
    targets[::3, 1] = -1  # some users with one target
    rows, cols = torch.arange(40).repeat_interleave(3), torch.randint(0, 30, (120,))
    scores = mask_scores(scores, rows, cols)
    reference = TopKMetrics((10,))
    reference.update(scores.clone(), targets)
    per_user = PerUserMetrics(50, np.arange(30))
    per_user.update({"targets": targets, "users": torch.arange(5, 45)}, target_ranks(scores, targets, 20), None)
    result = per_user.compute()
    assert result["users"].tolist() == list(range(5, 45))
    expected = reference.compute()
    assert float(result["ndcg"].mean()) == pytest.approx(float(expected["ndcg@10"]))
    assert float(result["hr"].mean()) == pytest.approx(float(expected["hr@10"]))
    rarest = torch.where(targets[:, 1] >= 0, targets.min(1).values, targets[:, 0]).double()
    assert torch.equal(result["target_popularity"], rarest)


def test_the_evaluator_ranks_each_test_batch_once_for_its_metrics_and_observers(monkeypatch):
    """One ranking over the catalogue and one among the new items per test batch, whatever the groups and
    observers; the observers get exactly those ranks."""
    from lightning_bridge.evaluation import ranking

    calls, seen = [], []

    def counted(scores, targets, cutoff):
        calls.append(cutoff)
        return target_ranks(scores, targets, cutoff)

    monkeypatch.setattr(ranking, "target_ranks", counted)
    torch.manual_seed(0)
    batch = {"targets": torch.randint(0, 30, (8, 1)), "users": torch.arange(8), "exclude_rows": torch.tensor([0]),
             "exclude_cols": torch.tensor([3]), "group_sparse": torch.arange(8) < 2,
             "group_rare": torch.arange(8) > 5, "group_new_item": torch.arange(8) % 2 == 0,
             "new_items": torch.arange(30) > 20}
    evaluator = RankingEvaluator()
    evaluator.test_observers.append(lambda *args: seen.append(args))
    evaluator.update("test", torch.randn(8, 30), batch)
    assert calls == [20, 20]
    (_, ranks, new_ranks), = seen
    assert ranks.shape == (8, 1) and new_ranks.shape == (4, 1)
    evaluator.update("val", torch.randn(8, 30), batch)
    assert len(seen) == 1  # validation has no observers


def test_quintiles_are_equal_groups_in_order():
    values, ndcg = np.array([5, 1, 4, 2, 3, 9, 8, 7, 6, 0]), np.arange(10) / 10
    rows = quintiles(values, ndcg, np.arange(10))
    assert [(r["low"], r["high"], r["users"]) for r in rows] == [(0, 1, 2), (2, 3, 2), (4, 5, 2), (6, 7, 2),
                                                                  (8, 9, 2)]
    assert rows[0]["ndcg@10"] == pytest.approx((0.9 + 0.1) / 2)


def test_without_matplotlib_there_is_no_figure(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert figures.draw({"domain": {"activity": [], "popularity": []}}, "x") is None


def test_flat_config_names_nested_sections_without_init_args():
    config = {"model": {"class_path": "B", "init_args": {"lm": {"class_path": "L", "init_args": {
        "backbone": "minilm", "lora_rank": 8, "task_weights": {"next_item": 1.0}}}, "ks": [5, 10]}},
        "ckpt_path": "x.ckpt", "trainer": {"logger": {"class_path": "T"}, "max_epochs": 3, "precision": None}}
    assert flat_config(config) == {"model.class_path": "B", "model.lm.class_path": "L",
                                   "model.lm.backbone": "minilm", "model.lm.lora_rank": 8,
                                   "model.lm.task_weights.next_item": 1.0, "model.ks": "[5, 10]",
                                   "trainer.max_epochs": 3, "trainer.precision": "None"}


def test_each_models_test_metrics_are_those_of_its_own_best_checkpoint(bridge_run):
    cli, run = bridge_run
    events = _events(run)
    for key in ("domain/test/ndcg@10", "lm/test/ndcg@10", "lm/test/sparse_ndcg@10"):
        values = [e.value for e in events.Scalars(key)]
        assert values == [pytest.approx(cli.test_metrics[key])]  # logged once: the after-fit table's value


def test_a_model_without_its_own_best_checkpoint_is_tested_at_the_primary_one(tmp_path):
    """``checkpoint.monitor`` names no model: the CLI keeps the domain model's best beside it, and the LM, which
    has no best of its own, is tested at the primary checkpoint instead of being left out."""
    cli = main(["fit", "--config", TINY_BRIDGE, "--test_after_fit", "true", "--trainer.default_root_dir",
                str(tmp_path), "--data.init_args.cache_dir", str(tmp_path / "cache"),
                "--checkpoint.monitor", "train/domain_loss", "--checkpoint.mode", "min"])
    assert {"domain/test/ndcg@10", "lm/test/ndcg@10"} <= set(cli.test_metrics)
    with (tmp_path / "run" / "version_0" / "ndcg_by_bucket.csv").open() as f:
        tested = {(r["checkpoint"].startswith("best-domain-"), r["model"]) for r in csv.DictReader(f)}
    assert tested == {(True, "domain"), (False, "lm")}
