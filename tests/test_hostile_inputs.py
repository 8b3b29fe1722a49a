"""What a new user can get wrong, driven through the real CLI: each case asserts the exit status the shell
would see (0, 1 for an error, 2 for a rejected argument) and that the message names the file, line, field or
setting at fault. Nothing here may finish silently with a wrong result."""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from builders import cli
from conftest import CONFIGS
from slow_steps import DiesAt, Killed, SlowSteps

from lightning_bridge.cli import main
from lightning_bridge.data import download
from lightning_bridge.data.datasets import AtomicFilesDataModule
from lightning_bridge.data.download import DatasetUnavailableError
from lightning_bridge.models.checkpoint_contents import export_domain
from lightning_bridge.run.callbacks import TopKWriter
from lightning_bridge.run.class_registry import register_class

TINY = str(CONFIGS / "tiny_domain.yaml")
TINY_BRIDGE = str(CONFIGS / "tiny_bridge.yaml")
ATOMIC = "lightning_bridge.data.datasets.AtomicFilesDataModule"
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def inter_rows(users: int = 6, per_user: int = 5, items: int = 10) -> list[str]:
    """A valid interaction table: every user has ``per_user`` distinct items at increasing times."""
    return [f"u{u}\ti{(u + k) % items}\t4\t{100 * u + k}" for u in range(users) for k in range(per_user)]


def atomic(folder: Path, rows: list[str] | None = None, header: str = HEADER, item: str | None = None,
           prefix: bytes = b"") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header, *(inter_rows() if rows is None else rows)]
    (folder / f"{folder.name}.inter").write_bytes(prefix + ("\n".join(lines) + "\n").encode())
    if item is not None:
        (folder / f"{folder.name}.item").write_text(item)
    return folder


def fit_atomic(folder: Path, *extra: str) -> tuple[int, str]:
    return cli("fit", "--config", TINY, "--data", ATOMIC, "--data.folder", str(folder), "--trainer.max_epochs", "1",
               *extra)


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory) -> Path:
    """One tiny domain-only fit of 4 epochs (validation every epoch), in a folder set by default_root_dir. Its
    "best" checkpoint is the lowest NDCG, so that it is not the last epoch (NDCG still rises there)."""
    root = tmp_path_factory.mktemp("domain")
    cwd = os.getcwd()
    os.chdir(root)  # anything written relative to the working directory lands here, not in the repository
    try:
        status, message = cli("fit", "--config", TINY, "--trainer.max_epochs", "4",
                              "--trainer.default_root_dir", str(root / "elsewhere"), "--checkpoint.mode", "min")
    finally:
        os.chdir(cwd)
    assert status == 0, message
    return root / "elsewhere" / "run" / "version_0"


# ---- data files -------------------------------------------------------------------------------------------
BAD_INTER = [
    ("trailing_space_user", ["u0 \ti0\t4\t1", *inter_rows()], r"\.inter, line 2: user id 'u0 ' has whitespace"),
    ("leading_space_item", [*inter_rows()[:3], "u1\t i3\t4\t7", *inter_rows()[3:]],
     r"line 5: item id ' i3' has whitespace"),
    ("empty_user", ["\ti0\t4\t1", *inter_rows()], r"line 2: empty user id; expected a non-empty id in field 1"),
    ("missing_field", ["u0\ti0\t4", *inter_rows()], r"line 2: expected 4 '\\t'-separated fields"),
    ("timestamp_text", ["u0\ti0\t4\tyesterday", *inter_rows()],
     r"line 2: expected a finite number as timestamp in field 4, found 'yesterday'"),
    ("timestamp_nan", ["u0\ti0\t4\tnan", *inter_rows()], r"line 2: expected a finite number as timestamp"),
    ("timestamp_too_precise", ["u0\ti0\t4\t12345678901234567890.5", *inter_rows()],
     r"line 2: timestamp '12345678901234567890.5' in field 4 cannot be held exactly"),
    ("rating_inf", ["u0\ti0\tinf\t1", *inter_rows()], r"line 2: expected a finite number as rating in field 3"),
    ("header_only", [], r"no interactions; expected at least one line"),
]


@pytest.mark.parametrize(("rows", "expected"), [c[1:] for c in BAD_INTER], ids=[c[0] for c in BAD_INTER])
def test_bad_interaction_file_names_the_line_and_field(in_tmp, rows, expected):
    folder = atomic(in_tmp / "toy", rows)
    status, message = fit_atomic(folder)
    assert status == 1
    assert str(folder / "toy.inter") in message
    assert re.search(expected, message), message


BAD_HEADERS = [
    ("no_user_field", "uid:token\titem_id:token", r"line 1: header lacks required field\(s\) user_id"),
    ("bad_type", "user_id:text\titem_id:token", r"line 1: expected header columns 'field:type'.*'user_id:text'"),
    ("twice", "user_id:token\tuser_id:token\titem_id:token", r"line 1: field 'user_id' appears twice"),
]


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in BAD_HEADERS], ids=[c[0] for c in BAD_HEADERS])
def test_bad_header_names_line_one(in_tmp, header, expected):
    folder = atomic(in_tmp / "toy", ["u0\ti0"], header=header)
    status, message = fit_atomic(folder)
    assert status == 1 and str(folder / "toy.inter") in message
    assert re.search(expected, message), message


def test_utf8_bom_before_the_header_is_ignored(in_tmp):
    folder = atomic(in_tmp / "toy", prefix=b"\xef\xbb\xbf")
    assert fit_atomic(folder) == (0, "")


def test_non_utf8_byte_names_line_and_byte(in_tmp):
    folder = atomic(in_tmp / "toy")
    path = folder / "toy.inter"
    path.write_bytes(path.read_bytes().replace(b"u3\ti3", b"u\xff3\ti3", 1))
    status, message = fit_atomic(folder)
    assert status == 1 and f"{path}, line 17: expected utf-8 text, found byte 0xff" in message


def test_missing_inter_file_names_the_path_and_the_files_found(in_tmp):
    folder = atomic(in_tmp / "toy")
    (folder / "toy.inter").rename(folder / "other.inter")
    status, message = fit_atomic(folder)
    assert status == 1 and str(folder / "toy.inter") in message and "found other.inter" in message


def test_whitespace_around_a_metadata_id_names_the_line(in_tmp):
    folder = atomic(in_tmp / "toy", item="item_id:token\ttitle:token_seq\ni0\tA\ni1 \tB\n")
    status, message = fit_atomic(folder)
    assert status == 1 and f"{folder / 'toy.item'}, line 3: item id 'i1 ' has whitespace" in message


def test_duplicate_metadata_id_names_both_lines(in_tmp):
    folder = atomic(in_tmp / "toy", item="item_id:token\ttitle:token_seq\ni0\tA\ni0\tB\n")
    status, message = fit_atomic(folder)
    assert status == 1 and "toy.item, line 3: duplicate item id 'i0', first given on line 2" in message


def test_fractional_timestamps_keep_their_order(in_tmp):
    """The issue's case: rows at 100.9, 100.1, 100.5, 99 -- the test item is the 100.9 one, not a truncation."""
    rows = ["u0\ti1\t4\t100.9", "u0\ti2\t4\t100.1", "u0\ti3\t4\t100.5", "u0\ti4\t4\t99", *inter_rows()[5:]]
    data = AtomicFilesDataModule(folder=str(atomic(in_tmp / "toy", rows)), cache_dir=str(in_tmp / "cache"))
    inter, split = data.interactions, data.split
    user = list(inter.user_ids).index("u0")
    test_item = inter.items[split.test][inter.users[split.test] == user][0]
    valid_item = inter.items[split.valid][inter.users[split.valid] == user][0]
    assert (inter.item_ids[test_item], inter.item_ids[valid_item]) == ("i1", "i3")


def test_huge_integer_timestamps_stay_exact(in_tmp):
    """1e19 does not fit int64: float64 holds it exactly, and it stays after 9.2e18."""
    rows = ["u0\ti1\t4\t10000000000000000000", "u0\ti2\t4\t9200000000000000000", "u0\ti3\t4\t5",
            *inter_rows()[5:]]
    data = AtomicFilesDataModule(folder=str(atomic(in_tmp / "toy", rows)), cache_dir=str(in_tmp / "cache"))
    inter, split = data.interactions, data.split
    user = list(inter.user_ids).index("u0")
    assert inter.item_ids[inter.items[split.test][inter.users[split.test] == user][0]] == "i1"


def test_ratio_split_with_too_few_interactions_is_an_error_naming_the_setting(in_tmp):
    folder = atomic(in_tmp / "toy")
    status, message = fit_atomic(folder, "--data.split", "ratio")
    assert status == 1
    assert "data.split=ratio with data.ratios=(0.8, 0.1, 0.1) leaves the validation part empty" in message
    assert "most active has 5 interactions" in message


def test_leave_one_out_with_short_users_names_them(in_tmp):
    folder = atomic(in_tmp / "toy", [*inter_rows(), "late\ti0\t4\t1"])
    status, message = fit_atomic(folder)
    assert status == 1 and "1 users have fewer (raw ids: late)" in message and "data.split=ratio" in message


def test_rating_threshold_that_keeps_nothing_names_the_setting(in_tmp):
    status, message = fit_atomic(atomic(in_tmp / "toy"), "--data.rating_threshold", "5")
    assert status == 1 and "rating_threshold=5.0" in message and "no interactions left" in message


def test_unknown_split_name_is_rejected_by_the_parser(in_tmp, capsys):
    status, _ = fit_atomic(atomic(in_tmp / "toy"), "--data.split", "random")
    assert status == 2 and "split" in capsys.readouterr().err


def test_last_checkpoint_as_a_link_is_refused_naming_the_setting(in_tmp):
    status, message = cli("fit", "--config", TINY, "--checkpoint.save_last", "link")
    assert status == 1 and "checkpoint.save_last='link'" in message


def test_negative_batch_size_names_the_setting(in_tmp):
    status, message = cli("fit", "--config", TINY, "--data.init_args.batch_size", "0")
    assert status == 1 and "data.batch_size must be at least 1, got 0" in message


# ---- the parsed-data cache --------------------------------------------------------------------------------
def _toy_module(folder: Path, cache: Path) -> AtomicFilesDataModule:
    return AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache))


def test_cache_hit_repeats_the_missing_metadata_warning(in_tmp, caplog):
    folder = atomic(in_tmp / "toy", item="item_id:token\ttitle:token_seq\ni0\tA\n")
    with caplog.at_level(logging.WARNING):
        first = _toy_module(folder, in_tmp / "cache").interactions
        caplog.clear()
        again = _toy_module(folder, in_tmp / "cache").interactions
    assert "9 interacted items have no metadata text (from the parsed-data cache)" in caplog.text
    assert np.array_equal(first.items, again.items) and first.item_text == again.item_text


def test_cache_never_unpickles_a_planted_file(in_tmp, caplog):
    folder = atomic(in_tmp / "toy")
    assert _toy_module(folder, in_tmp / "cache").num_users == 6  # parsed and cached
    (stored,) = (in_tmp / "cache" / "parsed").glob("*.npz")
    marker = in_tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    stored.write_bytes(pickle.dumps(Evil()))
    with caplog.at_level(logging.WARNING):
        data = _toy_module(folder, in_tmp / "cache")
        assert data.num_users == 6
    assert not marker.exists() and f"ignoring unreadable parsed-data cache {stored}" in caplog.text


def test_cache_is_keyed_by_contents_not_size_and_mtime(in_tmp):
    folder = atomic(in_tmp / "toy")
    path = folder / "toy.inter"
    assert _toy_module(folder, in_tmp / "cache").interactions.user_ids[0] == "u0"
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"u0\t", b"x0\t"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert "x0" in _toy_module(folder, in_tmp / "cache").interactions.user_ids


def test_cache_skips_data_above_its_size_cap(in_tmp, monkeypatch):
    from lightning_bridge.data import parsed_cache as cache

    monkeypatch.setattr(cache, "DEFAULT_MAX_BYTES", 10)
    folder = atomic(in_tmp / "toy")
    assert _toy_module(folder, in_tmp / "cache").num_users == 6
    assert not list((in_tmp / "cache").rglob("*.npz"))


def test_recbole_wheel_with_another_hash_is_refused(tmp_path, monkeypatch):
    def fake_pip(command, **kwargs):
        (Path(command[command.index("-d") + 1]) / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"tampered")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)  # pip runs through lightning_bridge.run.downloads
    with pytest.raises(DatasetUnavailableError, match=r"recbole-1.2.1-py3-none-any.whl: sha256 [0-9a-f]{64}, "
                                                      r"expected 9c9948202011"):
        download._pip_download_recbole(tmp_path)


# ---- checkpoints ------------------------------------------------------------------------------------------
def test_last_ckpt_is_the_last_epoch_and_default_root_dir_holds_the_run(domain_run):
    """Lightning 2.6 alone leaves last.ckpt at the best epoch whenever validation runs every epoch."""
    checkpoint = torch.load(domain_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["global_step"] == 4 * 9
    (best,) = (domain_run / "checkpoints").glob("best-*.ckpt")
    assert torch.load(best, weights_only=True)["epoch"] < 3
    assert checkpoint["dataset_fingerprint"]["num_users"] == 60


def test_resume_after_a_mid_epoch_stop_equals_an_uninterrupted_run(in_tmp):
    """max_steps stops inside epoch 1: last.ckpt is that mid-epoch state, and the resumed run trains the
    rest of the epoch on the batches it had not seen yet (not the epoch's first batches again)."""
    full = main(["fit", "--config", TINY, "--trainer.max_epochs", "3", "--trainer.logger.init_args.name", "full"])
    main(["fit", "--config", TINY, "--trainer.max_epochs", "3", "--trainer.max_steps", "13",
          "--trainer.logger.init_args.name", "part"])
    run = in_tmp / "logs" / "part" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 13
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_steps", "-1", "--ckpt_path",
                        str(run / "checkpoints" / "last.ckpt")])
    assert not [w for w in caught if "ended before the epoch ended" in str(w.message)]  # the resume is exact
    assert resumed.trainer.global_step == full.trainer.global_step == 27
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def _validated_steps(run: Path) -> list[int]:
    """The global steps at which the run in ``run`` logged a validation, over all its event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    return sorted({e.step for e in events.Scalars("domain/val/ndcg@10")})


@pytest.mark.parametrize(("config", "stops", "where", "step"), [
    (TINY, ["--trainer.max_steps", "13"], "validation", 13),  # the validation at max_steps, the run's last
    (TINY, ["--checkpoint.last_every_n_train_steps", "4"], "validation", 8),  # at a step that writes last.ckpt
    (TINY, ["--trainer.max_steps", "24"], "training", 10),  # resumed from the first epoch's end
    (TINY_BRIDGE, ["--trainer.max_steps", "18", "--trainer.val_check_interval", "2"], "validation", 18),
])
def test_a_killed_run_resumes_to_what_the_uninterrupted_run_did(in_tmp, config, stops, where, step):
    """Killed inside a validation, a run resumes to that validation: Lightning takes a state saved at a step
    whose validation follows for one saved after it, so last.ckpt waits for the validation (before, a resume
    went past it, or at max_steps stopped at once, and kept an earlier best). Killed after an epoch's end
    under max_steps, it resumes into the next epoch (Lightning alone counts the finished epoch twice and
    trains one fewer). Either way it validates, keeps and ends where the uninterrupted run did, with the same
    checkpoint files: a best the killed attempt saved after last.ckpt is saved again over it, not beside it."""
    register_class(DiesAt)  # named by the killed run's saved config
    common = ["--config", config, "--trainer.max_epochs", "3", "--trainer.val_check_interval", "4", *stops]
    full = main(["fit", *common, "--trainer.logger.init_args.name", "full"])
    with pytest.raises(Killed):
        main(["fit", *common, "--trainer.logger.init_args.name", "killed", "--trainer.callbacks+=slow_steps.DiesAt",
              f"--trainer.callbacks.init_args.step={step}", f"--trainer.callbacks.init_args.where={where}"])
    run, full_run = in_tmp / "logs" / "killed" / "version_0", in_tmp / "logs" / "full" / "version_0"
    resumed = main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                    "--trainer.callbacks=[]"])
    assert resumed.trainer.global_step == full.trainer.global_step
    assert resumed.trainer.current_epoch == full.trainer.current_epoch
    assert _validated_steps(run) == _validated_steps(full_run)
    assert {side: Path(path).name for side, path in resumed.best_checkpoints.items()} == \
        {side: Path(path).name for side, path in full.best_checkpoints.items()}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        sorted(p.name for p in (full_run / "checkpoints").iterdir())
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def _copy_run(domain_run: Path, dest: Path) -> Path:
    shutil.copytree(domain_run.parent.parent, dest / "root")
    return dest / "root" / "run" / "version_0"


def test_truncated_checkpoint_names_the_path(in_tmp, domain_run):
    broken = in_tmp / "broken.ckpt"
    broken.write_bytes((domain_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    status, message = cli("test", "--config", TINY, "--ckpt_path", str(broken))
    assert status == 1 and f"{broken}: cannot be read as a checkpoint: truncated, corrupt" in message


def test_garbage_checkpoint_names_the_path(in_tmp):
    garbage = in_tmp / "garbage.ckpt"
    garbage.write_bytes(bytes(range(256)) * 4)
    status, message = cli("predict", "--config", TINY, "--ckpt_path", str(garbage))
    assert status == 1 and str(garbage) in message and "cannot be read as a checkpoint" in message


def test_missing_checkpoint_names_the_path(in_tmp):
    status, message = cli("test", "--config", TINY, "--ckpt_path", str(in_tmp / "nope.ckpt"))
    assert status == 1 and f"{in_tmp / 'nope.ckpt'}: checkpoint not found" in message


def test_a_tensor_file_that_is_not_a_checkpoint_names_the_path(in_tmp):
    torch.save({"weights": torch.zeros(2)}, in_tmp / "plain.pt")
    status, message = cli("test", "--config", TINY, "--ckpt_path", str(in_tmp / "plain.pt"))
    assert status == 1 and "plain.pt: not a Lightning checkpoint" in message


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": {}, "hyper_parameters": Evil(), "domain_hyper_parameters": {}}, path)
    return path


def test_export_never_runs_code_from_a_crafted_checkpoint(in_tmp):
    evil = _evil_checkpoint(in_tmp / "evil.ckpt", in_tmp / "pwned")
    with pytest.raises(ValueError, match=r"evil.ckpt: cannot be read as a checkpoint: it holds Python objects"):
        export_domain(evil, in_tmp / "out.ckpt")
    assert not (in_tmp / "pwned").exists()


def test_cli_never_runs_code_from_a_crafted_checkpoint(in_tmp):
    evil = _evil_checkpoint(in_tmp / "evil.ckpt", in_tmp / "pwned")
    status, message = cli("test", "--config", TINY, "--ckpt_path", str(evil))
    assert status == 1 and "evil.ckpt" in message and not (in_tmp / "pwned").exists()


def test_test_on_data_of_another_seed_is_refused(in_tmp, domain_run):
    status, message = cli("test", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                          str(domain_run / "checkpoints" / "last.ckpt"), "--data.init_args.data_seed", "7")
    assert status == 1 and "last.ckpt was trained on other data" in message
    assert "the interactions differ (" in message


def test_predict_on_fewer_users_names_the_missing_ids(in_tmp, domain_run):
    status, message = cli("predict", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                          str(domain_run / "checkpoints" / "last.ckpt"), "--data.init_args.num_users", "58")
    assert status == 1 and "raw user ids differ (60 users in the checkpoint, 58 in the data; " \
                           "only in the checkpoint: ['58', '59'] (2 in all))" in message


def test_size_mismatch_without_fingerprint_is_the_same_clear_error(in_tmp, domain_run):
    checkpoint = torch.load(domain_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["dataset_fingerprint"]  # as written by an older version
    torch.save(checkpoint, in_tmp / "old.ckpt")
    status, message = cli("test", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                          str(in_tmp / "old.ckpt"), "--data.init_args.num_users", "50")
    assert status == 1 and "old.ckpt was trained on other data: its user table has 60 rows but the data has 50" \
        in message and "size mismatch" not in message


def test_renamed_user_in_an_atomic_file_is_named(in_tmp):
    folder = atomic(in_tmp / "toy")
    assert fit_atomic(folder) == (0, "")
    run = in_tmp / "logs" / "run" / "version_0"
    path = folder / "toy.inter"
    path.write_text(path.read_text().replace("u3\t", "x3\t"))
    status, message = cli("test", "--config", str(run / "config.yaml"), "--ckpt_path",
                          str(run / "checkpoints" / "last.ckpt"))
    assert status == 1 and "only in the checkpoint: ['u3'] (1 in all); only in the data: ['x3'] (1 in all)" \
        in message


def test_warm_start_from_a_checkpoint_of_other_data_names_the_ids(in_tmp):
    folder = atomic(in_tmp / "toy")
    assert fit_atomic(folder) == (0, "")
    domain = in_tmp / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    path = folder / "toy.inter"
    path.write_text(path.read_text().replace("i7\t", "j7\t"))
    status, message = cli("fit", "--config", TINY_BRIDGE, "--data", ATOMIC, "--data.folder", str(folder),
                          "--model.init_args.warm_start.checkpoint", str(domain))
    assert status == 1 and f"{domain} was trained on other data" in message
    assert "raw item ids differ (10 items in the checkpoint, 10 in the data; only in the checkpoint: ['i7']" \
        in message


@pytest.mark.parametrize(("change", "expected"), [
    (("--model.init_args.embedding_dim", "32"), "init_args.embedding_dim: 16 in the checkpoint, 32 now"),
    (("--model.init_args.num_layers", "3"), "init_args.num_layers: 2 in the checkpoint, 3 now"),
    (("--model.init_args.encoder", "mf"), "init_args.encoder: 'lightgcn' in the checkpoint, 'mf' now"),
    (("--model.init_args.optimizer.class_path", "torch.optim.SGD"),
     "init_args.optimizer.class_path: 'torch.optim.Adam' in the checkpoint, 'torch.optim.SGD' now"),
], ids=["embedding_dim", "num_layers", "encoder", "optimizer_class"])
def test_resume_with_contradicting_model_config_lists_the_keys(in_tmp, domain_run, change, expected):
    status, message = cli("fit", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                          str(domain_run / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5", *change)
    assert status == 1 and "last.ckpt: resuming with a model config that contradicts" in message
    assert expected in message and "--allow_config_changes true" in message


def test_resume_with_changes_allowed_on_purpose_trains_on_in_the_same_folder(in_tmp, domain_run):
    run = _copy_run(domain_run, in_tmp)
    status, message = cli("fit", "--config", str(run / "config.yaml"), "--ckpt_path",
                          str(run / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
                          "--model.init_args.optimizer.init_args.lr", "0.02", "--allow_config_changes", "true")
    assert status == 0, message
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.02  # the config says what ran
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4


def test_non_finite_loss_stops_training_naming_step_side_and_loss(in_tmp):
    status, message = cli("fit", "--config", TINY, "--model.init_args.optimizer.init_args.lr", "1e30",
                          "--test_after_fit", "true", "--checkpoint.last_every_n_train_steps", "1")
    assert status == 1 and "NonFiniteLossError: the domain loss is" in message
    assert "at global step" in message and "training stopped before this step changed any weight" in message
    assert "the last good checkpoint is logs/run/version_0/checkpoints/last.ckpt" in message


def test_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(in_tmp, domain_run):
    checkpoint = torch.load(domain_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["recommender.info.user.weight"][3] = float("nan")
    torch.save(checkpoint, in_tmp / "nan.ckpt")
    out = in_tmp / "top.tsv"
    status, message = cli("predict", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                          str(in_tmp / "nan.ckpt"), "--predictions.path", str(out))
    assert status == 1
    assert "nan.ckpt: holds non-finite weights: recommender.info.user.weight (16 of 960 values)" in message
    assert not out.exists()


def test_non_finite_scores_never_reach_predictions(tmp_path):
    writer = TopKWriter(str(tmp_path / "top.tsv"))
    data = SimpleNamespace(raw_user_id=lambda u: f"user{u}", raw_item_id=str, item_title=lambda i: None)
    trainer = SimpleNamespace(datamodule=data, world_size=1, log_dir=str(tmp_path))
    writer.on_predict_epoch_start(trainer, None)
    prediction = {"users": torch.tensor([4, 7]), "items": torch.tensor([[0, 1], [1, 0]]),
                  "scores": torch.tensor([[2.0, 1.0], [float("nan"), 1.0]])}
    with pytest.raises(FloatingPointError, match=r"predict: the model scores user 'user7' with NaN or \+inf"):
        writer.write_on_batch_end(trainer, None, prediction, None, None, 0, 0)
    writer.on_predict_epoch_end(trainer, None)
    assert (tmp_path / "top.tsv").read_text() == "user_id\trank\titem_id\tscore\ttitle\n"


def test_predict_top_k_beyond_the_unseen_items_is_capped_with_a_warning(in_tmp, domain_run, caplog):
    out = in_tmp / "top.tsv"
    with caplog.at_level(logging.WARNING):
        status, message = cli("predict", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                              str(domain_run / "checkpoints" / "last.ckpt"), "--predictions.path", str(out),
                              "--model.init_args.predict_top_k", "100")
    assert status == 0, message
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert rows and all(float(r[3]) > float("-inf") for r in rows) and len(rows) < 60 * 40
    assert "fewer than predict_top_k=100" in caplog.text


def test_evaluation_knobs_stay_the_configs_at_test_time(in_tmp, domain_run):
    """LightningCLI replaces the config's model settings by the checkpoint's; evaluation knobs (ks,
    predict_with, predict_top_k) stay what the user asked for."""
    tested = main(["test", "--config", str(domain_run / "config.yaml"), "--ckpt_path",
                   str(domain_run / "checkpoints" / "last.ckpt"), "--model.init_args.ks", "[1, 3]"])
    assert "domain/test/hr@3" in tested.trainer.callback_metrics
    assert "domain/test/hr@10" not in tested.trainer.callback_metrics


# ---- the real kill ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(in_tmp, capsys):
    """A subprocess co-training fit (rewriting last.ckpt every 2 steps) is SIGKILLed in the middle of its
    second epoch; resuming from last.ckpt ends with the same weights, optimizer states, checkpoints and
    --test_after_fit table as a run that was never interrupted."""
    common = ["--trainer.max_epochs", "3", "--checkpoint.last_every_n_train_steps", "2", "--test_after_fit", "true"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parents[1] / "main.py"), "fit", "--config", TINY_BRIDGE, *common,
         "--trainer.logger.init_args.name", "killed", "--trainer.callbacks+=slow_steps.SlowSteps"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=in_tmp)
    for line in proc.stdout:  # epoch 0 has 7 steps; step 9 is in epoch 1
        if line.startswith("STEP 9 "):
            os.kill(proc.pid, signal.SIGKILL)
            break
    assert proc.wait(timeout=120) == -signal.SIGKILL
    run = in_tmp / "logs" / "killed" / "version_0"
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert killed_at["epoch"] == 1 and 7 < killed_at["global_step"] < 14  # mid-epoch

    capsys.readouterr()
    register_class(SlowSteps)  # named by the run's saved config, which may name registered classes only
    resumed = main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                    "--trainer.callbacks=[]"])
    resumed_table = capsys.readouterr().out.split("\nmodel ")[-1]
    full = main(["fit", "--config", TINY_BRIDGE, *common, "--trainer.logger.init_args.name", "full"])
    full_table = capsys.readouterr().out.split("\nmodel ")[-1]

    assert resumed_table == full_table and resumed.test_metrics == full.test_metrics
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for a, b in zip(full.trainer.optimizers, resumed.trainer.optimizers, strict=True):
        for sa, sb in zip(a.state.values(), b.state.values(), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        sorted(p.name for p in (in_tmp / "logs" / "full" / "version_0" / "checkpoints").iterdir())
