"""The data fingerprint covers how the data is split: test, validate, predict and resume on the same data cut
another way are refused, naming each setting that differs (the issue's case: a random ratio split put
training interactions into the test part and NDCG@10 0.1469 became 0.4308, exit 0)."""

from __future__ import annotations

import pytest
import torch
from builders import cli

from lightning_bridge.run.fingerprint import PROTOCOL

REFUSED = "last.ckpt was trained on other data than 'synthetic' as configured: the split differs ("
NOT_ALLOWED = "--allow_config_changes lets model settings through, never the data or its split."

CASES = [
    ("ratio_random", ("--data.init_args.split", "ratio", "--data.init_args.ratio_order", "random"),
     "train 555 -> 599 interactions, valid 60 -> 38 interactions, test 60 -> 38 interactions): "
     "data.split: 'leave_one_out' in the checkpoint, 'ratio' now; data.ratios: not used in the checkpoint, "
     "[0.8, 0.1, 0.1] now; data.ratio_order: not used in the checkpoint, 'random' now; data.seed: not used in the "
     "checkpoint, 42 now."),
    ("max_train_per_user", ("--data.init_args.max_train_per_user", "3"),
     "train 555 -> 180 interactions): data.max_train_per_user: None in the checkpoint, 3 now."),
    ("new_item_fraction", ("--data.init_args.new_item_fraction", "0.2"),
     "train 555 -> 436 interactions): data.new_item_fraction: None in the checkpoint, 0.2 now; data.seed: not used "
     "in the checkpoint, 42 now."),
]


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict", "fit"])
@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_another_split_of_the_same_data_is_refused_naming_the_settings(run_copy, subcommand, change, expected):
    extra = ("--trainer.max_epochs", "6", "--allow_config_changes", "true") if subcommand == "fit" else ()
    status, message = cli(subcommand, "--config", str(run_copy / "config.yaml"), "--ckpt_path",
                          str(run_copy / "checkpoints" / "last.ckpt"), *change, *extra)
    assert status == 1
    assert f"{REFUSED}{expected}" in message and NOT_ALLOWED in message
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3  # nothing trained


def test_the_same_split_tests_to_the_same_figure(run_copy):
    """A seed that the leave-one-out split does not use is no difference."""
    from lightning_bridge.cli import main

    tested = main(["test", "--config", str(run_copy / "config.yaml"), "--ckpt_path",
                   str(run_copy / "checkpoints" / "last.ckpt"), "--seed_everything", "7"])
    assert float(tested.trainer.callback_metrics["domain/test/ndcg@10"]) == pytest.approx(0.1469, abs=5e-5)


def test_the_fingerprint_records_every_protocol_setting_and_each_part(domain_run):
    fingerprint = torch.load(domain_run / "checkpoints" / "last.ckpt", weights_only=True)["dataset_fingerprint"]
    assert fingerprint["protocol"] == {"split": "leave_one_out", "rating_threshold": None,
                                       "max_train_per_user": None, "new_item_fraction": None}
    assert set(PROTOCOL) >= set(fingerprint["protocol"])
    assert (fingerprint["train_rows"], fingerprint["valid_rows"], fingerprint["test_rows"]) == (555, 60, 60)
    assert all(len(fingerprint[f"{p}_sha256"]) == 64 for p in ("train", "valid", "test"))


def test_a_warm_start_from_another_split_of_the_same_data_is_refused(in_tmp, domain_run):
    from hostile_common import TINY_BRIDGE

    warm = domain_run / "checkpoints" / "last.ckpt"
    status, message = cli("fit", "--config", TINY_BRIDGE, "--data.init_args.num_users", "60",
                          "--data.init_args.num_items", "40", "--data.init_args.max_train_per_user", "3",
                          "--model.init_args.warm_start.checkpoint", str(warm))
    assert status == 1
    assert f"{warm} was trained on other data than 'synthetic' as configured: the split differs (train 555 -> 180 " \
           "interactions): data.max_train_per_user: None in the checkpoint, 3 now." in message


def test_other_data_names_the_data_settings_that_differ(run_copy):
    status, message = cli("test", "--config", str(run_copy / "config.yaml"), "--ckpt_path",
                          str(run_copy / "checkpoints" / "last.ckpt"), "--data.init_args.data_seed", "7",
                          "--data.init_args.eval_batch_size", "8")
    assert status == 1 and "the interactions differ (675 in the checkpoint, 742 in the data; same ids)" in message
    assert "; the data settings that differ: data.data_seed: 0 in the checkpoint, 7 now. Use the data" in message
