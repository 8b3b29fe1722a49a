"""Caches that do not match what was written are parsed again with a warning; a non-finite loss names the
side (and setting) that caused it; ``--data.init_args.cache_dir`` works for LM and co-training runs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from builders import cli
from hostile_common import TINY, TINY_BRIDGE, TINY_LM

from lightning_bridge.data.datasets import AtomicFilesDataModule

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@pytest.fixture
def cached(in_tmp):
    """An atomic dataset parsed once into its cache: (folder, cache folder, the .json, the .npz)."""
    folder = in_tmp / "toy"
    folder.mkdir()
    rows = [f"u{u}\ti{(u + k) % 10}\t4\t{100 * u + k}" for u in range(6) for k in range(5)]
    (folder / "toy.inter").write_text("\n".join([HEADER, *rows]) + "\n")
    cache = in_tmp / "cache"
    AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache)).interactions  # noqa: B018 (parses and caches)
    (text,) = (cache / "parsed").glob("*.json")
    return folder, cache, text, text.with_suffix(".npz")


def _swap_two_users(text) -> None:
    stored = json.loads(text.read_text())
    ids = stored["user_ids"]
    ids[0], ids[1] = ids[1], ids[0]
    text.write_text(json.dumps(stored))


def _indices_out_of_range(arrays) -> None:
    with np.load(arrays) as stored:
        numbers = {k: stored[k] for k in stored.files}
    numbers["items"][3] = 99
    with arrays.open("wb") as f:
        np.savez(f, **numbers)


@pytest.mark.parametrize("tamper", ["swapped_ids", "indices_out_of_range"])
def test_a_cache_that_does_not_match_what_was_written_is_parsed_again(cached, caplog, tamper):
    folder, cache, text, arrays = cached
    fresh = AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache)).interactions
    if tamper == "swapped_ids":
        _swap_two_users(text)
    else:
        _indices_out_of_range(arrays)
    with caplog.at_level(logging.WARNING):
        again = AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache)).interactions
    assert f"ignoring unreadable parsed-data cache {arrays} (its contents do not match the sha256 recorded when " \
           "it was written: changed or damaged); parsing the source again" in caplog.text
    assert list(again.user_ids) == list(fresh.user_ids)
    assert np.array_equal(again.users, fresh.users) and np.array_equal(again.items, fresh.items)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # rewritten: the next read is a clean hit
        AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache)).interactions  # noqa: B018
    assert "parsed-data cache" not in caplog.text


def test_a_non_finite_loss_after_the_lm_blew_up_the_tables_names_the_lm(in_tmp):
    """The issue's case: an LM learning rate of 1e30 made the next *domain* loss NaN, reported as the domain's."""
    status, message = cli("fit", "--config", TINY_BRIDGE, "--model.init_args.lm.init_args.optimizer.init_args.lr",
                          "1e30", "--trainer.max_epochs", "1")
    assert status == 1 and "NonFiniteLossError: the domain loss is" in message
    assert "The lm model's optimizer step at global step 2 took the shared tables' largest value from" in message
    assert "lower the lm model's learning rate (model.init_args.lm.init_args.optimizer.init_args.lr) or clip its " \
           "gradients (model.init_args.schedule.lm_clip)" in message


def test_a_non_finite_loss_from_the_initial_weights_names_the_initialisation(in_tmp):
    status, message = cli("fit", "--config", TINY, "--model.init_args.init", "normal",
                          "--model.init_args.init_std", "1e30")
    assert status == 1 and "NonFiniteLossError: the domain loss is" in message and "at global step 0" in message
    assert "No optimizer step has run yet, so the starting weights give it (the shared tables' largest value is" \
           in message
    assert "check the initialisation (model.init_args.init, model.init_args.init_std)" in message
    assert "Lower the" not in message


def test_a_domain_learning_rate_is_still_the_domains(in_tmp):
    status, message = cli("fit", "--config", TINY, "--model.init_args.optimizer.init_args.lr", "1e30")
    assert status == 1 and "the domain loss is" in message and "at global step 1 " in message
    assert "Lower the domain model's learning rate (model.init_args.optimizer.init_args.lr) or clip gradients" \
        in message


@pytest.mark.parametrize("config", [TINY_LM, TINY_BRIDGE], ids=["lm", "bridge"])
def test_a_data_cache_dir_works_for_lm_and_co_training_runs(in_tmp, config):
    """Lightning refused to merge the model's and the data's hyperparameters (both have a cache_dir)."""
    status, message = cli("fit", "--config", config, "--data.init_args.cache_dir", str(in_tmp / "elsewhere"),
                          "--trainer.max_epochs", "1", "--export_after_fit", "false")
    assert (status, message) == (0, "")
    assert (in_tmp / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt").is_file()
