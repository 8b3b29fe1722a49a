"""What a run prints: progress lines on the log, compact summaries on stdout, known noise filtered."""

import logging
import re
import warnings
from types import SimpleNamespace

import torch
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.run.console import ProgressLog, configure_console, duration, summary_table

TINY = str(CONFIGS / "tiny_domain.yaml")
PROGRESS = "lightning_bridge.run.console"


def _lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_fit_logs_one_line_per_validation_with_score_and_time_left(in_tmp, caplog, capsys):
    caplog.set_level(logging.INFO)
    cli = main(["fit", "--config", TINY, "--trainer.max_epochs", "3", "--progress.heartbeat_seconds", "0"])
    lines = _lines(caplog, PROGRESS)
    assert lines[0] == "fit: starting at epoch 1/3, step 0/27"
    validations = [line for line in lines if "val ndcg@10" in line]
    assert len(validations) == 3
    final = float(cli.trainer.callback_metrics["domain/val/ndcg@10"])
    assert re.fullmatch(rf"fit: epoch 3/3, step 27/27: domain val ndcg@10 {final:.4f} \(best( [0-9.]+)?\) \| "
                        r"\d+s elapsed, ~0s left", validations[-1])
    assert re.fullmatch(r"fit: epoch 1/3, step 9/27: domain val ndcg@10 [0-9.]+ \(best\) \| \d+s elapsed, ~\d+s left",
                        validations[0])
    assert lines[-1].startswith("fit: done: 27 steps in ")
    exported = _lines(caplog, "lightning_bridge.run.after_fit")
    assert any(m.startswith("exported the run's artefacts to ") for m in exported)
    assert "val ndcg@10" not in capsys.readouterr().out  # stdout stays the caller's


def test_a_validation_below_the_kept_checkpoint_is_not_called_the_best(caplog):
    """The best a line reports is the kept checkpoint's: the warm start's candidate, or in a resumed run a
    validation made before the resume, counts even though this training never logged it."""
    caplog.set_level(logging.INFO)
    kept = SimpleNamespace(monitor="domain/val/ndcg@10", best_model_score=torch.tensor(0.0804))
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), is_global_zero=True,
                              checkpoint_callbacks=[kept], callbacks=[kept], current_epoch=4, max_epochs=10,
                              global_step=295, estimated_stepping_batches=590,
                              callback_metrics={"domain/val/ndcg@10": torch.tensor(0.0721),
                                                "lm/val/ndcg@10": torch.tensor(0.0416)})
    progress = ProgressLog()
    progress.on_validation_end(trainer, None)
    trainer.callback_metrics.update({"domain/val/ndcg@10": torch.tensor(0.0850), "lm/val/ndcg@10": torch.tensor(0.04)})
    progress.on_validation_end(trainer, None)
    first, second = [line.split(" | ")[0] for line in _lines(caplog, PROGRESS)]
    assert first == ("fit: epoch 5/10, step 295/590: domain val ndcg@10 0.0721 (best 0.0804), "
                     "lm val ndcg@10 0.0416 (best)")
    assert second == ("fit: epoch 5/10, step 295/590: domain val ndcg@10 0.0850 (best), "
                      "lm val ndcg@10 0.0400 (best 0.0416)")


def test_heartbeat_between_validations(in_tmp, caplog):
    caplog.set_level(logging.INFO)
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "5",
          "--progress.heartbeat_seconds", "1e-9"])
    beats = [line for line in _lines(caplog, PROGRESS) if ": training | " in line]
    assert [b.split(": training")[0] for b in beats] == [f"fit: epoch 1/1, step {s}/9" for s in range(1, 10)]


def test_heartbeat_within_a_long_validation(in_tmp, caplog):
    """A validation that takes long (an LM ranking the catalogue) says how far it has got."""
    caplog.set_level(logging.INFO)
    cli = main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--progress.heartbeat_seconds", "1e-9"])
    total = sum(cli.trainer.num_val_batches)
    beats = [line.split(" | ")[0] for line in _lines(caplog, PROGRESS) if ": validating" in line]
    assert total > 1 and beats == [f"fit: epoch 1/1, step 9/9: validating, batch {b}/{total}"
                                   for b in range(1, total + 1)]


def test_verbosity_warning_hides_progress(in_tmp, caplog):
    caplog.set_level(logging.INFO)
    try:
        main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--verbosity", "warning"])
        assert not _lines(caplog, PROGRESS)
    finally:
        configure_console("info")


def test_test_validate_and_predict_end_with_a_compact_summary(in_tmp, capsys):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1"])
    run = in_tmp / "logs" / "run" / "version_0"
    capsys.readouterr()
    args = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    tested = main(["test", *args])
    out = capsys.readouterr().out
    assert "Test metric" not in out  # Lightning's table of every metric is off by default
    header, row = out.strip().splitlines()
    assert header.split() == ["model", "ndcg@10", "hr@10", "recall@20", "mrr@10", "sparse_ndcg@10",
                              "sparse_hr@10", "rare_ndcg@10", "checkpoint"]
    ndcg = float(tested.trainer.callback_metrics["domain/test/ndcg@10"])
    assert row.split()[:2] == ["domain", f"{ndcg:.4f}"] and row.split()[-1] == "last.ckpt"

    main(["validate", *args])
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split()[:2] == ["model", "ndcg@10"] and row.split()[0] == "domain"

    main(["predict", *args, "--model.init_args.predict_top_k", "5"])
    assert capsys.readouterr().out.strip() == (
        f"predict: up to 5 recommendations each for 60 users written to {run / 'predictions.tsv'}")


def test_known_noise_is_filtered_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure_console("info")
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_durations_read_as_a_clock():
    assert [duration(s) for s in (0.4, 42, 185, 3725)] == ["0s", "42s", "3m05s", "1h02m"]


def test_the_summary_has_a_row_for_every_evaluated_model_domain_and_lm_first():
    metrics = {f"{model}/test/{metric}": value for model, value in (("content", 0.3), ("lm", 0.2), ("domain", 0.1))
               for metric in ("ndcg@10", "hr@10")}
    rows = summary_table(metrics, {"domain": "runs/best-epoch=3.ckpt"}).splitlines()
    assert [row.split()[0] for row in rows] == ["model", "domain", "lm", "content"]
    assert rows[3].split()[1:] == ["0.3000", "0.3000", "best-epoch=3.ckpt"]


def test_no_weight_loading_bar_unless_debugging(monkeypatch):
    """transformers' "Loading weights" bar, drawn each time a run builds an LM, stays off at info."""
    import transformers

    from lightning_bridge.run.console import configure_console

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # restored, or removed, after the test
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    transformers.utils.logging.enable_progress_bar()
    configure_console("debug")
    assert transformers.utils.logging.is_progress_bar_enabled()
    configure_console("info")
    assert not transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.enable_progress_bar()
