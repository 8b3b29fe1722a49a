"""test / predict with a run's config.yaml write beside that run, never into a new version_N."""

import csv

from conftest import CONFIGS

from lightning_bridge.cli import main

TINY = str(CONFIGS / "tiny_domain.yaml")


def test_test_and_predict_write_beside_the_run(in_tmp):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", "elsewhere"])
    run = in_tmp / "elsewhere" / "run" / "version_0"
    config = run / "config.yaml"
    saved = config.read_text()
    events = set(run.glob("events.out.tfevents.*"))
    ckpt = str(run / "checkpoints" / "last.ckpt")

    main(["test", "--config", str(config), "--ckpt_path", ckpt])
    main(["predict", "--config", str(config), "--ckpt_path", ckpt, "--model.init_args.predict_top_k", "3"])

    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    assert set(run.glob("events.out.tfevents.*")) > events  # the test's metrics are in the run's TensorBoard
    with (run / "predictions.tsv").open() as f:
        assert len(list(csv.DictReader(f, delimiter="\t"))) == 60 * 3
    assert config.read_text() == saved  # the record of how the run was trained is kept
    assert not (in_tmp / "logs").exists()


def test_test_with_a_config_outside_a_run_makes_a_new_run(in_tmp):
    main(["test", "--config", TINY])
    assert [p.name for p in (in_tmp / "logs" / "run").iterdir()] == ["version_0"]
