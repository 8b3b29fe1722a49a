"""A resumed fit applies each setting that differs from the checkpoint's, or refuses naming it: the issue's
case was a learning rate recorded in config.yaml but never used (the restored optimizer kept the old one)."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from builders import cli
from hostile_common import TINY

from lightning_bridge.cli import main
from lightning_bridge.run.checkpoints import CheckpointError
from lightning_bridge.run.resume import resume_plan


def _resume(run, *extra: str):
    return main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                 "--trainer.max_epochs", "5", *extra])


def test_a_new_learning_rate_reaches_the_restored_optimizer(run_copy, caplog):
    before = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    with caplog.at_level(logging.INFO):
        resumed = _resume(run_copy, "--allow_config_changes", "true", "--model.init_args.optimizer.init_args.lr",
                          "0.05", "--model.init_args.optimizer.init_args.weight_decay", "0.001")
    (optimizer,) = resumed.trainer.optimizers
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.05, 0.001)]
    steps = {float(state["step"]) for state in optimizer.state.values()}
    assert steps == {float(before["state"][0]["step"]) + 9}  # Adam's moments carried on, 9 more steps
    assert "resumed optimizer 0 with the config's lr, weight_decay" in caplog.text
    saved = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert saved["param_groups"][0]["lr"] == 0.05


def test_the_replaced_config_is_kept_and_said(run_copy, caplog):
    old = (run_copy / "config.yaml").read_text()
    with caplog.at_level(logging.WARNING):
        _resume(run_copy, "--allow_config_changes", "true", "--model.init_args.reg_weight", "0.001")
    assert (run_copy / "config.v0.yaml").read_text() == old
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["model"]["init_args"]["reg_weight"] == 0.001
    assert "config.yaml now holds this run's config; the one it replaced is kept as config.v0.yaml" in caplog.text
    assert "resuming with changed settings (--allow_config_changes), applied: init_args.reg_weight: 0.0001 in " \
           "the checkpoint, 0.001 now" in caplog.text


@pytest.mark.parametrize(("change", "expected"), [
    (("--model.init_args.num_layers", "3"), "init_args.num_layers: 2 in the checkpoint, 3 now (fixed by the "
                                            "checkpoint's weights)"),
    (("--model.init_args.init_std", "0.5"), "init_args.init_std: None in the checkpoint, 0.5 now (fixed by"),
    (("--model.init_args.optimizer.class_path", "torch.optim.SGD"),
     "init_args.optimizer.class_path: 'torch.optim.Adam' in the checkpoint, 'torch.optim.SGD' now (fixed by"),
], ids=["num_layers", "init_std", "optimizer_class"])
def test_settings_a_resume_cannot_apply_are_refused_by_name(run_copy, change, expected):
    status, message = cli("fit", "--config", str(run_copy / "config.yaml"), "--ckpt_path",
                          str(run_copy / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
                          "--allow_config_changes", "true", *change)
    assert status == 1 and "last.ckpt: --allow_config_changes cannot apply these to a resumed run:" in message
    assert expected in message
    assert not (run_copy / "config.v0.yaml").exists()


def test_a_learning_rate_under_a_scheduler_is_refused():
    given = {"class_path": "m", "init_args": {"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1}},
                                              "scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR"}}}
    change = ("init_args.optimizer.init_args.lr", 0.01, 1)
    with pytest.raises(CheckpointError, match=r"init_args.optimizer.init_args.lr: 0.01 in the checkpoint, 1 now "
                                              r"\(a scheduler sets the learning rate from its restored state\)"):
        resume_plan([change], given, "x.ckpt")
    assert resume_plan([("init_args.optimizer.init_args.eps", 1e-8, 1e-6)], given, "x.ckpt") == {None: {"eps"}}


def test_co_training_applies_each_sides_learning_rate_to_its_own_optimizer():
    given = {"init_args": {"domain": {"init_args": {"optimizer": {"init_args": {"lr": 1}}, "scheduler": None}},
                           "lm": {"init_args": {"info_lr": 2, "scheduler": None}}}}
    changes = [("init_args.domain.init_args.optimizer.init_args.lr", 0.01, 1), ("init_args.lm.init_args.info_lr",
                                                                                None, 2)]
    assert resume_plan(changes, given, "x.ckpt") == {0: {"lr"}, 1: {"lr"}}


def test_co_training_settings_are_applied_or_refused_by_their_dotted_names():
    applied = [("init_args.schedule.domain_steps", 2, 3), ("init_args.knowledge.text_anchor_weight", 1.0, 0.5),
               ("init_args.cold_start.item_id_dropout", 0.5, 0.25)]
    assert resume_plan(applied, {}, "x.ckpt") == {}
    with pytest.raises(CheckpointError, match=r"init_args.knowledge.text_channel: False in the checkpoint, True now "
                                              r"\(fixed by the checkpoint's weights\)"):
        resume_plan([("init_args.knowledge.text_channel", False, True)], {}, "x.ckpt")


@pytest.mark.parametrize(("change", "expected"), [
    (("--data.init_args.batch_size", "32"), "data.batch_size: 64 in the checkpoint, 32 now"),
    (("--seed_everything", "7"), "data.seed: 42 in the checkpoint, 7 now"),
], ids=["batch_size", "seed"])
def test_changed_data_settings_are_refused_by_name_without_the_flag(run_copy, change, expected):
    status, message = cli("fit", "--config", str(run_copy / "config.yaml"), "--ckpt_path",
                          str(run_copy / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5", *change)
    assert status == 1 and "last.ckpt: resuming with data settings that differ from the checkpoint's:" in message
    assert expected in message


def test_a_new_batch_size_is_applied_from_the_resumed_epoch(run_copy):
    resumed = _resume(run_copy, "--allow_config_changes", "true", "--data.init_args.batch_size", "32")
    assert resumed.trainer.num_training_batches == 18  # 555 training interactions in batches of 32, not 64
    assert resumed.trainer.global_step == 4 * 9 + 18


def test_a_mid_epoch_checkpoint_refuses_new_batch_settings(in_tmp):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "3", "--trainer.max_steps", "13"])
    run = in_tmp / "logs" / "run" / "version_0"
    status, message = cli("fit", "--config", str(run / "config.yaml"), "--ckpt_path",
                          str(run / "checkpoints" / "last.ckpt"), "--trainer.max_steps", "-1",
                          "--allow_config_changes", "true", "--data.init_args.batch_size", "32")
    assert status == 1 and "last.ckpt: was written inside an epoch, whose position is counted in batches of the " \
                           "old settings" in message and "data.batch_size: 64 in the checkpoint, 32 now" in message


@pytest.mark.parametrize("missing", ["optimizer_states", "loops"])
def test_a_checkpoint_without_training_state_is_not_resumed(run_copy, missing):
    checkpoint = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint[missing]
    path = run_copy.parent / "weights_only.ckpt"
    torch.save(checkpoint, path)
    status, message = cli("fit", "--config", str(run_copy / "config.yaml"), "--ckpt_path", str(path),
                          "--trainer.max_epochs", "5")
    assert status == 1 and f"{path}: holds no training state to resume ({missing} missing or empty)" in message
