"""Co-training: which parameters each step changes, resume, export, and the CLI end to end."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import tiny_bridge
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.co_training.settings import WarmStart
from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.models.checkpoint_contents import export_domain
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule

TINY = str(CONFIGS / "tiny_bridge.yaml")


def _changed_after_one_step(model: BridgeModule, tmp_path: Path) -> set[str]:
    data = SyntheticDataModule(num_users=40, num_items=30, batch_size=32, lm_batch_size=8, history_len=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_domain_step_changes_shared_tables_never_the_lm(tmp_path):
    changed = _changed_after_one_step(tiny_bridge(schedule={"domain_steps": 1, "lm_steps": 1}), tmp_path)
    assert {"info.user.weight", "info.item.weight"} <= changed
    assert not {n for n in changed if n.startswith("lm.") and not n.startswith("lm.recommender.info.")}


def test_lm_step_changes_lora_projections_and_shared_tables_never_the_domain_encoder(tmp_path):
    model = tiny_bridge({"encoder": "lightgcn"}, schedule={"domain_steps": 0, "lm_steps": 1})
    changed = _changed_after_one_step(model, tmp_path)
    assert {"info.user.weight", "info.item.weight"} <= changed
    assert any("lora_" in n for n in changed)
    assert any("injector" in n for n in changed) and any("out_proj" in n for n in changed)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & changed
    # LightGCN and MF hold no parameters of their own: the shared tables are the whole domain model
    assert not {n for n in changed if n.startswith("domain.") and not n.startswith("domain.recommender.info.")}


def test_settings_groups_are_plain_dicts_in_a_checkpoint_and_rebuild_the_bridge(tmp_path):
    """Checkpoints are read with ``weights_only=True``, and ``load_from_checkpoint`` calls the class with them."""
    bridge = tiny_bridge(schedule={"domain_steps": 3}, knowledge={"text_anchor_weight": 0.5})
    torch.save(dict(bridge.hparams), tmp_path / "hparams.pt")
    saved = torch.load(tmp_path / "hparams.pt", weights_only=True)
    assert saved["schedule"] == {"domain_steps": 3, "lm_steps": 1, "domain_clip": None, "lm_clip": None}
    rebuilt = BridgeModule(**saved, domain=lambda u, i, **kw: DomainModule(u, i, encoder="mf", **kw),
                           lm=lambda u, i, **kw: LMModule(u, i, backbone="tiny-decoder", max_length=160, **kw))
    assert rebuilt.schedule == bridge.schedule and rebuilt.knowledge.text_anchor_weight == 0.5
    assert dict(rebuilt.hparams) == saved


def test_schedule_alternates_with_ratio():
    model = tiny_bridge(schedule={"domain_steps": 3, "lm_steps": 1})
    assert [model.side_for_step(s) for s in range(8)] == ["domain"] * 3 + ["lm"] + ["domain"] * 3 + ["lm"]
    only_lm = tiny_bridge(schedule={"domain_steps": 0, "lm_steps": 1})
    assert {only_lm.side_for_step(s) for s in range(5)} == {"lm"}


def _args(name: str, *extra: str) -> list[str]:
    return ["fit", "--config", TINY, "--trainer.logger.init_args.name", name, *extra]


def test_resume_at_epoch_boundary_is_bitwise_identical(in_tmp):
    full = main(_args("full", "--trainer.max_epochs", "3"))
    main(_args("part", "--trainer.max_epochs", "2"))
    part = in_tmp / "logs" / "part" / "version_0"
    resumed = main(["fit", "--config", str(part / "config.yaml"), "--trainer.max_epochs", "3",
                    "--ckpt_path", str(part / "checkpoints" / "last.ckpt")])
    assert resumed.trainer.global_step == full.trainer.global_step
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    for a, b in zip(full.trainer.optimizers, resumed.trainer.optimizers, strict=True):
        for sa, sb in zip(a.state.values(), b.state.values(), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_from_mid_epoch_checkpoint_continues_at_the_right_step(in_tmp):
    main(_args("mid", "--trainer.max_steps", "4", "--checkpoint.every_n_train_steps", "4"))
    run = in_tmp / "logs" / "mid" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_steps", "10",
                    "--trainer.max_epochs", "10", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert resumed.trainer.global_step == 10


def test_cli_fit_test_predict_and_serve_the_domain_model_alone(in_tmp, capsys):
    fitted = main(_args("e2e", "--test_after_fit", "true", "--trainer.max_epochs", "1"))
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("model") and "sparse_ndcg@10" in line)
    assert table[header + 1].startswith("domain") and table[header + 2].startswith("lm")
    metrics = fitted.test_metrics
    for key in ("domain/test/ndcg@10", "lm/test/ndcg@10", "domain/test/sparse_ndcg@10", "lm/test/sparse_hr@10"):
        assert key in metrics, key
    run = in_tmp / "logs" / "e2e" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    # each model is tested at its own best validation checkpoint, and the table says which
    best_lm = next((run / "checkpoints").glob("best-lm-*.ckpt"))
    assert best_lm.name in table[header + 2] and best_lm.name not in table[header + 1]
    lm_alone = main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(best_lm)])
    assert float(lm_alone.trainer.callback_metrics["lm/test/ndcg@10"]) == metrics["lm/test/ndcg@10"]
    lm_out = in_tmp / "lm.tsv"
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(last),
          "--model.init_args.predict_with", "lm", "--predictions.path", str(lm_out)])
    _assert_unseen_top_20(lm_out)

    exported = export_domain(last, in_tmp / "domain.ckpt")
    alone = DomainModule.load_from_checkpoint(exported)
    torch.testing.assert_close(alone.info.item.weight, fitted.model.info.item.weight)
    domain_config = in_tmp / "domain.yaml"
    domain_config.write_text((run / "config.yaml").read_text())
    out = in_tmp / "domain.tsv"
    served = main(["predict", "--config", str(domain_config), "--model", "lightning_bridge.models.domain.DomainModule",
                   "--ckpt_path", str(exported), "--predictions.path", str(out)])
    assert type(served.model) is DomainModule
    _assert_unseen_top_20(out)


def _assert_unseen_top_20(path: Path) -> None:
    """Every user gets 20 items, or all their unseen ones where fewer (the tiny catalogue has 30 items):
    never an already-seen item at score -inf."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    per_user = {}
    for row in rows:
        per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
        assert float(row["score"]) > float("-inf")
    assert len(per_user) == 40 and max(per_user.values()) == 20 and min(per_user.values()) >= 10


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_evaluation(in_tmp):
    """Co-training under DDP (2 CPU processes, gloo), then the same checkpoint tested by 1 and 2 processes."""
    script = Path(__file__).parent / "ddp_run.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    common = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp_find_unused_parameters_true"]
    subprocess.run([sys.executable, str(script), "fit.json", "fit", "--config", TINY, "--trainer.devices", "2",
                    "--trainer.max_epochs", "1", *common], check=True, env=env, cwd=in_tmp, timeout=600)
    run = in_tmp / "logs" / "run" / "version_0"
    test_args = ["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    subprocess.run([sys.executable, str(script), "ddp.json", *test_args, "--trainer.devices", "2", *common],
                   check=True, env=env, cwd=in_tmp, timeout=600)
    single = main([*test_args, "--trainer.devices", "1", "--trainer.strategy", "auto"])
    ddp = json.loads((in_tmp / "ddp.json").read_text())
    assert json.loads((in_tmp / "fit.json").read_text())["world_size"] == 2
    for key in ("domain/test/ndcg@10", "lm/test/ndcg@10", "domain/test/sparse_hr@20", "lm/test/mrr@20"):
        assert ddp[key] == pytest.approx(float(single.trainer.callback_metrics[key]), abs=1e-6), key


def test_warm_start_loads_the_shared_tables_from_a_domain_checkpoint(in_tmp):
    domain = main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--data.num_users", "40",
                   "--data.num_items", "30", "--model.init_args.embedding_dim", "16", "--trainer.max_epochs", "1"])
    ckpt = in_tmp / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"

    def make_domain(u, i, **kw):
        return DomainModule(u, i, **kw)

    def make_lm(u, i, **kw):
        return LMModule(u, i, backbone="tiny-decoder", max_length=160, **kw)

    warm_start = WarmStart(auto=False, checkpoint=str(ckpt))
    bridge = BridgeModule(40, 30, domain=make_domain, lm=make_lm, embedding_dim=16, warm_start=warm_start)
    assert torch.equal(bridge.info.user.weight, domain.model.info.user.weight)
    assert bridge.lm.info is bridge.info and bridge.domain.info is bridge.info
    with pytest.raises(ValueError, match="do not fit this model"):
        BridgeModule(40, 30, domain=make_domain, lm=make_lm, embedding_dim=8, warm_start=warm_start)


@pytest.mark.parametrize("text_channel", ["false", "true"])
def test_cli_warm_start_competes_with_co_training_for_the_domain_models_best(in_tmp, text_channel):
    fitted = main(_args("warm", "--model.init_args.warm_start.auto", "true", "--model.init_args.warm_start.val_every",
                        "1", "--model.init_args.warm_start.max_epochs", "4", "--trainer.max_epochs", "1",
                        "--model.init_args.knowledge.text_channel", text_channel))
    warm = torch.load(fitted.warm_start_checkpoint, map_location="cpu", weights_only=True)
    warm_score = next(float(state["best_model_score"]) for key, state in warm["callbacks"].items()
                      if key.startswith("ModelCheckpoint"))
    best_score, best_path = fitted.best_scores["domain"], fitted.best_checkpoints["domain"]
    assert best_score >= warm_score  # the warm start was a candidate: nothing worse replaced it
    if best_score == warm_score:
        assert torch.load(best_path, map_location="cpu", weights_only=True)["global_step"] == 0
    # the warm start's checkpoint describes the domain model alone: it validates on its own at its recorded score
    # (with the text channel, as its folded item table)
    alone = main(["validate", "--config", str(Path(fitted.trainer.log_dir) / "config.yaml"),
                  "--model", "lightning_bridge.models.domain.DomainModule",
                  "--ckpt_path", fitted.warm_start_checkpoint, "--trainer.logger", "false"])
    assert type(alone.model) is DomainModule
    assert float(alone.trainer.callback_metrics["domain/val/ndcg@10"]) == pytest.approx(warm_score, abs=1e-6)
