"""python -m lightning_bridge.report: one table across runs, as markdown, CSV and PNG."""

import csv

import pytest
from conftest import CONFIGS

from lightning_bridge import report
from lightning_bridge.cli import main

TINY = str(CONFIGS / "tiny_domain.yaml")


def test_report_across_runs(in_tmp, capsys):
    for name, dim in (("small", "8"), ("wide", "32")):
        main(["fit", "--config", TINY, "--test_after_fit", "true", "--trainer.logger.init_args.name", name,
              "--model.init_args.embedding_dim", dim, "--trainer.check_val_every_n_epoch", "1"])
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "untested"])
    tested = {}
    for name in ("small", "wide"):
        cli = main(["test", "--config", str(in_tmp / "logs" / name / "version_0" / "config.yaml"),
                    "--ckpt_path", str(in_tmp / "logs" / name / "version_0" / "checkpoints" / "last.ckpt")])
        tested[name] = float(cli.trainer.callback_metrics["domain/test/ndcg@10"])
    capsys.readouterr()

    rows = report.main(["logs/*", "--out", "cmp"])

    table = capsys.readouterr().out
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | model | tested |") and "ndcg@10" in lines[0] and "dim" in lines[0]
    assert len(lines) == 2 + 3
    by_run = {r["run"].split("/")[-2]: r for r in rows}
    assert by_run["untested"]["tested"] == "not tested"
    for name, dim in (("small", 8), ("wide", 32)):
        row = by_run[name]
        assert (row["model"], row["tested"], row["dim"], row["data"]) == ("domain", "domain", dim,
                                                                           "SyntheticDataModule")
        assert row["ndcg@10"] == pytest.approx(tested[name], abs=1e-6)  # the latest test, not the after-fit one
        assert f"{row['ndcg@10']:.4f}" in table
    with open("cmp.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 3 and "sparse_ndcg@10" in written[0] and "hr@20" in written[0]
    assert (in_tmp / "cmp.png").stat().st_size > 1000


def test_report_without_runs_is_a_clear_error(in_tmp, capsys):
    with pytest.raises(SystemExit):
        report.main(["nowhere/*"])
    assert "no run folder" in capsys.readouterr().err
