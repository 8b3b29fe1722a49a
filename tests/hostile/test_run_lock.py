"""One writer per run folder: a second process resuming a folder that a live run writes fails at once naming
it (the issue: two resumes of one folder both exited 0, leaving config.yaml from one and last.ckpt from the
other); a lock left by a killed run is taken over, and said so."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import torch
from builders import cli
from hostile_common import TINY
from slow_steps import SlowSteps

from lightning_bridge.run.class_registry import register_class
from lightning_bridge.run.lock import LOCK_NAME, RunFolderBusyError, RunFolderLock


def _lock_for(run, pid: int, host: str | None = None, started: str | None = None) -> None:
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": started,
                                             "since": "2026-01-01 00:00:00"}))


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def _resume(run, *extra: str) -> tuple[int, str]:
    return cli("fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
               "--trainer.max_epochs", "5", *extra)


def test_a_resume_of_a_folder_a_live_process_writes_fails_at_once(run_copy, live_process):
    _lock_for(run_copy, live_process)
    config = (run_copy / "config.yaml").read_bytes()
    status, message = _resume(run_copy)
    assert status == 1
    assert f"RunFolderBusyError: {run_copy}: process {live_process} is writing this run folder (since " \
           f"2026-01-01 00:00:00; lock {run_copy / LOCK_NAME}); one run at a time writes a run folder" in message
    assert (run_copy / "config.yaml").read_bytes() == config and not (run_copy / "config.v0.yaml").exists()
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    assert json.loads((run_copy / LOCK_NAME).read_text())["pid"] == live_process  # still the holder's


def test_a_lock_on_another_host_is_never_taken_over(run_copy):
    _lock_for(run_copy, 1, host="elsewhere.example")
    status, message = _resume(run_copy)
    assert status == 1 and f"process 1 on elsewhere.example (if that process is gone, delete {run_copy / LOCK_NAME})" \
        in message


def test_a_killed_runs_lock_is_taken_over_and_said(run_copy, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)
    _lock_for(run_copy, dead)
    with caplog.at_level(logging.WARNING):
        assert _resume(run_copy) == (0, "")
    assert f"{run_copy / LOCK_NAME}: took over the lock of process {dead} (since 2026-01-01 00:00:00), which no " \
           "longer runs: it was killed or crashed (or its pid now belongs to another process); this run writes " \
           "the folder now" in caplog.text
    assert not (run_copy / LOCK_NAME).exists()  # released at the end
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4


def test_the_lock_is_released_when_fit_fails(in_tmp):
    status, message = cli("fit", "--config", TINY, "--model.init_args.optimizer.init_args.lr", "1e30")
    assert status == 1 and "NonFiniteLossError" in message
    run = in_tmp / "logs" / "run" / "version_0"
    assert (run / "config.yaml").exists() and not (run / LOCK_NAME).exists()


def test_only_one_of_two_processes_takes_a_lock(tmp_path, live_process):
    lock = RunFolderLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    other = subprocess.run([sys.executable, "-c", "from lightning_bridge.run.lock import RunFolderLock as L; "
                                                  f"L({str(tmp_path)!r}).acquire()"], capture_output=True, text=True)
    assert other.returncode == 1 and f"RunFolderBusyError: {tmp_path}: process {os.getpid()} is writing" \
        in other.stderr
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(RunFolderBusyError, match=rf"process {live_process} is writing"):
        _lock_for(tmp_path, live_process)
        RunFolderLock(tmp_path).acquire()


@pytest.mark.slow
def test_two_resumes_of_one_folder_at_once_one_fails_naming_the_other(run_copy, monkeypatch):
    """The issue's case with real runs: a resumed fit is training (slowed down) when a second resume starts."""
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(tests), tests])}
    main_py = os.path.join(os.path.dirname(tests), "main.py")
    command = [sys.executable, main_py, "fit", "--config", str(run_copy / "config.yaml"), "--ckpt_path",
               str(run_copy / "checkpoints" / "last.ckpt"), "--trainer.max_epochs", "5",
               "--trainer.callbacks+=slow_steps.SlowSteps"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=run_copy.parent)
    for line in first.stdout:
        if line.startswith("STEP "):
            break
    monkeypatch.setattr("lightning_bridge.run.class_registry._REGISTERED", {})
    register_class(SlowSteps)  # the first resume's config.yaml names it
    status, message = _resume(run_copy)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert status == 1 and f"process {first.pid} is writing this run folder" in message
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 4
    assert not (run_copy / LOCK_NAME).exists()


def test_an_export_into_a_folder_a_live_process_writes_fails_at_once(run_copy, live_process):
    from lightning_bridge.serving.export import main as export_main

    _lock_for(run_copy, live_process)
    manifest = (run_copy / "export" / "manifest.json").read_bytes()
    with pytest.raises(RunFolderBusyError, match=rf"^{run_copy}: process {live_process} is writing this run folder"):
        export_main(["artefacts", str(run_copy / "checkpoints" / "last.ckpt")])
    assert (run_copy / "export" / "manifest.json").read_bytes() == manifest
    (run_copy / LOCK_NAME).unlink()
    export_main(["artefacts", str(run_copy / "checkpoints" / "last.ckpt")])
    assert not (run_copy / LOCK_NAME).exists()


def test_a_failed_predict_leaves_the_previous_predictions_whole(tmp_path):
    """Predictions are written aside and renamed when complete: a failure (or a second predict into the same
    file) never leaves a mixed or half-written file."""
    from types import SimpleNamespace

    from lightning_bridge.run.callbacks import TopKWriter

    out = tmp_path / "top.tsv"
    out.write_text("the previous predictions\n")
    writer = TopKWriter(str(out))
    data = SimpleNamespace(raw_user_id=str, raw_item_id=str, item_title=lambda i: None)
    trainer = SimpleNamespace(datamodule=data, world_size=1, log_dir=str(tmp_path))
    writer.on_predict_epoch_start(trainer, None)
    writer.write_on_batch_end(trainer, None, {"users": torch.tensor([1]), "items": torch.tensor([[2]]),
                                              "scores": torch.tensor([[0.5]])}, None, None, 0, 0)
    writer.on_exception(trainer, None, RuntimeError("killed"))
    assert out.read_text() == "the previous predictions\n" and sorted(p.name for p in tmp_path.iterdir()) == ["top.tsv"]
    writer.on_predict_epoch_start(trainer, None)
    writer.write_on_batch_end(trainer, None, {"users": torch.tensor([1]), "items": torch.tensor([[2]]),
                                              "scores": torch.tensor([[0.5]])}, None, None, 0, 0)
    writer.on_predict_epoch_end(trainer, None)
    assert out.read_text() == "user_id\trank\titem_id\tscore\ttitle\n1\t1\t2\t0.5\t\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.tsv"]


def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path, live_process, caplog):
    """After a crash and a restart the lock's pid may be a live process that is not the run: its start time
    tells them apart."""
    _lock_for(tmp_path, live_process, started="1")
    with caplog.at_level(logging.WARNING):
        RunFolderLock(tmp_path).acquire()
    assert f"took over the lock of process {live_process}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
