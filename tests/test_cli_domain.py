"""The real CLI, end to end on synthetic data: fit, test, predict, resume, and clear errors."""

import csv

import pytest
import torch
import yaml
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.data.tables import DataFormatError

TINY = str(CONFIGS / "tiny_domain.yaml")


def _run_dir(root):
    (version,) = sorted((root / "logs" / "run").iterdir())
    return version


def test_fit_then_test_and_predict_from_checkpoint(in_tmp):
    cli = main(["fit", "--config", TINY])
    run = _run_dir(in_tmp)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed_everything"] == 42
    assert "num_users" not in saved["model"]["init_args"]  # linked from the data, never repeated
    assert cli.model.hparams.num_users == 60
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert any(p.name.startswith("best-") for p in (run / "checkpoints").iterdir())
    assert "domain/val/ndcg@10" in cli.trainer.callback_metrics
    assert list(run.glob("events.out.tfevents.*"))

    ckpt = str(run / "checkpoints" / "last.ckpt")
    tested = main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt])
    metrics = tested.trainer.callback_metrics
    for key in ("domain/test/ndcg@10", "domain/test/hr@20", "domain/test/sparse_ndcg@10", "domain/test/mrr@5"):
        assert 0.0 <= float(metrics[key]) <= 1.0

    out = in_tmp / "top.tsv"
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt, "--predictions.path", str(out),
          "--model.init_args.predict_top_k", "5"])
    with out.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 60 * 5
    assert {r["rank"] for r in rows} == {"1", "2", "3", "4", "5"}
    assert all(r["title"].startswith("item ") for r in rows)


def test_test_after_fit_without_any_validation_is_a_clear_error(in_tmp):
    expected = r"no validation ran \(trainer.max_epochs=1, trainer.check_val_every_n_epoch=5\).*last\.ckpt"
    with pytest.raises(ValueError, match=expected):
        main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "5",
              "--test_after_fit", "true"])
    assert (_run_dir(in_tmp) / "checkpoints" / "last.ckpt").exists()  # the training itself is kept


def test_resume_matches_an_uninterrupted_run(in_tmp):
    full = main(["fit", "--config", TINY, "--trainer.max_epochs", "3", "--trainer.logger.init_args.name", "full"])
    first = main(["fit", "--config", TINY, "--trainer.max_epochs", "2", "--trainer.logger.init_args.name", "part"])
    part = in_tmp / "logs" / "part" / "version_0"
    resumed = main(["fit", "--config", str(part / "config.yaml"), "--trainer.max_epochs", "3",
                    "--ckpt_path", str(part / "checkpoints" / "last.ckpt")])
    assert first.trainer.current_epoch == 2 and resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == full.trainer.global_step
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_print_config_and_validate(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--print_config"])
    assert "SyntheticDataModule" in capsys.readouterr().out
    cli = main(["validate", "--config", TINY])
    assert "domain/val/ndcg@10" in cli.trainer.callback_metrics


def test_unknown_encoder_and_dataset_are_clear_errors(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--model.init_args.encoder", "transformer"])
    assert "encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--data", "lightning_bridge.data.datasets.NoSuchDataModule"])
    assert "NoSuchDataModule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--data", "lightning_bridge.data.datasets.MovieLensDataModule",
              "--data.variant", "ml-10m"])
    assert "variant" in capsys.readouterr().err


def test_missing_dataset_folder_names_the_file(in_tmp):
    with pytest.raises(DataFormatError, match=r"nowhere.*ratings.inter|ratings\.inter"):
        main(["fit", "--config", TINY, "--data", "lightning_bridge.data.datasets.AtomicFilesDataModule",
              "--data.folder", str(in_tmp / "nowhere" / "ratings")])


def test_a_test_without_a_logger_leaves_no_files_in_the_working_directory(in_tmp):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--export_after_fit", "false"])
    run = _run_dir(in_tmp)
    before = set(in_tmp.iterdir())
    main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--trainer.logger", "false"])
    assert set(in_tmp.iterdir()) == before  # no ndcg_by_bucket.csv beside the caller
