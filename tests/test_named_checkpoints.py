"""``--ckpt_path last`` and ``best`` find the checkpoints of the run whose config.yaml ``--config`` names."""

import pytest
import torch
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.run.checkpoints import CheckpointError

TINY = str(CONFIGS / "tiny_domain.yaml")


def test_ckpt_path_last_resumes_the_run_in_its_own_folder(in_tmp):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1"])
    run = in_tmp / "logs" / "run" / "version_0"
    resumed = main(["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_epochs", "2"])
    assert sorted(p.name for p in (in_tmp / "logs" / "run").iterdir()) == ["version_0"]  # no new version
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 18  # 9 steps an epoch, both run
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 18)


def test_ckpt_path_best_tests_the_runs_best_checkpoint(in_tmp, capsys):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "2"])
    checkpoints = in_tmp / "logs" / "run" / "version_0" / "checkpoints"
    (best,) = checkpoints.glob("best-*.ckpt")
    capsys.readouterr()
    main(["test", "--config", str(checkpoints.parent / "config.yaml"), "--ckpt_path", "best"])
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[-1] == best.name


def test_ckpt_path_last_without_a_run_config_names_what_it_looked_for(in_tmp):
    with pytest.raises(CheckpointError, match=r"--ckpt_path last looks in the run folder of the --config given, "
                                              r"but .*tiny_domain\.yaml is not a run's config\.yaml"):
        main(["fit", "--config", TINY, "--ckpt_path", "last"])


def test_ckpt_path_last_without_last_ckpt_names_the_file(in_tmp):
    main(["fit", "--config", TINY, "--trainer.max_epochs", "1"])
    checkpoints = in_tmp / "logs" / "run" / "version_0" / "checkpoints"
    (checkpoints / "last.ckpt").unlink()
    with pytest.raises(CheckpointError, match=rf"--ckpt_path last: expected last\.ckpt in {checkpoints}, "
                                              r"found best-epoch=0-step=9\.ckpt"):
        main(["fit", "--config", str(checkpoints.parent / "config.yaml"), "--ckpt_path", "last"])
