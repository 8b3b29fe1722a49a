"""python -m lightning_bridge.evaluation.report: one table across runs, as markdown, CSV and PNG."""

import csv
import statistics

import pytest
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.evaluation import report

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


def test_runs_that_differ_only_in_seed_are_summarised_over_seeds(in_tmp, capsys):
    scores = []
    for seed in (1, 2, 3):
        cli = main(["fit", "--config", TINY, "--test_after_fit", "true", "--seed_everything", str(seed),
                    "--trainer.logger.init_args.name", f"seed{seed}", "--trainer.check_val_every_n_epoch", "1"])
        scores.append(cli.test_metrics["domain/test/ndcg@10"])
    main(["fit", "--config", TINY, "--test_after_fit", "true", "--model.init_args.embedding_dim", "8",
          "--trainer.logger.init_args.name", "other", "--trainer.check_val_every_n_epoch", "1"])
    run = in_tmp / "logs" / "seed3" / "version_0"
    scores[2] = float(main(["test", "--config", str(run / "config.yaml"), "--ckpt_path",
                            str(run / "checkpoints" / "last.ckpt")]).trainer.callback_metrics["domain/test/ndcg@10"])
    capsys.readouterr()

    rows = report.main(["logs/*", "--out", "cmp"])

    by_run = {r["run"].split("/")[-2]: r for r in rows}
    assert by_run["seed1"]["checkpoint"].startswith("best-epoch=") and by_run["seed3"]["checkpoint"] == "last"
    assert len({by_run[f"seed{s}"]["setting"] for s in (1, 2, 3)}) == 1 != len({by_run["seed1"]["setting"],
                                                                               by_run["other"]["setting"]})
    out = capsys.readouterr().out
    grouped = out.split("Over seeds (mean ± sample std):\n\n")[1].strip().splitlines()
    assert grouped[0].startswith("| model | tested | checkpoint | data |") and "| n | seeds |" in grouped[0]
    (three,) = [line for line in grouped if "| 3 | 1, 2, 3 |" in line]
    assert "| best, last |" in three
    mean, std = statistics.fmean(scores), statistics.stdev(scores)
    assert f"| {mean:.4f} ± {std:.4f} |" in three
    assert len(grouped) == 2 + 2  # the three seeds, and the other setting alone (n = 1)
    with open("cmp_over_seeds.csv") as f:
        written = {r["n"]: r for r in csv.DictReader(f)}
    assert float(written["3"]["ndcg@10"]) == pytest.approx(mean) and float(written["3"]["ndcg@10_std"]) == \
        pytest.approx(std)
