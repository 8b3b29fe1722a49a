"""NCF and SASRec: their maths, the sequences the data module serves them, bad input, and co-training."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from builders import tiny_bridge
from conftest import CONFIGS
from test_bridge import _assert_unseen_top_20, _changed_after_one_step

from lightning_bridge import load_recommender
from lightning_bridge.cli import main
from lightning_bridge.data.batches import UserHistories
from lightning_bridge.data.contract import DataNeeds
from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.data.requests import PredictionRequest
from lightning_bridge.data.training_batches import SequenceWindows
from lightning_bridge.models.checkpoint_contents import export_domain
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.modules.domain.ncf import NeuMF
from lightning_bridge.modules.domain.sasrec import SASRec, check_histories, warn_about_order
from lightning_bridge.serving.artefacts import model_from_checkpoint


def test_neumf_catalogue_scores_equal_per_pair_scores():
    torch.manual_seed(0)
    model = NeuMF(dim=6, mlp_layers=(8, 4, 2)).eval()
    users, items = torch.randn(5, 6), torch.randn(7, 6)
    pairs = model.pair_scores(users.repeat_interleave(7, 0), items.repeat(5, 1)).view(5, 7)
    torch.testing.assert_close(model.scores(users, items), pairs)


@pytest.mark.parametrize("layers", [(), (20, 4), (4, 8), (0,)])
def test_neumf_layers_that_do_not_fit_the_width_name_the_option(layers):
    with pytest.raises(ValueError, match=r"mlp_layers .* 2 \* embedding_dim = 16"):
        NeuMF(dim=8, mlp_layers=layers)


def test_sasrec_is_causal_and_left_padding_does_not_matter():
    torch.manual_seed(0)
    model, table = SASRec(dim=8, max_len=5, num_heads=2).eval(), torch.randn(10, 8)
    seq = torch.tensor([[-1, 3, 4, 5, 6]])
    changed_last = torch.tensor([[-1, 3, 4, 5, 9]])
    torch.testing.assert_close(model.states(table, seq)[:, :-1], model.states(table, changed_last)[:, :-1])
    shorter = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(model.states(table, seq)[:, -1], model.states(table, shorter)[:, -1])
    assert torch.isfinite(model.states(table, torch.full((1, 5), -1))).all()  # no empty attention row
    torch.testing.assert_close(model.scores(table, seq), model.states(table, seq)[:, -1] @ table.T)


def test_sasrec_scores_from_length_sorted_chunks_equal_the_padded_batch():
    torch.manual_seed(0)
    model, table = SASRec(dim=8, max_len=6, num_blocks=2).eval(), torch.randn(30, 8)
    lengths = torch.randint(1, 7, (300,))  # more rows than one scoring chunk, every history length
    sequences = torch.randint(0, 30, (300, 6)).masked_fill(torch.arange(6) < 6 - lengths[:, None], -1)
    with torch.no_grad():
        padded = model.states(table, sequences)[:, -1] @ table.T
        torch.testing.assert_close(model.scores(table, sequences), padded)


@pytest.mark.parametrize("kwargs, match", [({"max_len": 0}, "max_len must be at least 1"),
                                           ({"num_heads": 3}, "num_heads must divide"),
                                           ({"loss": "bpr"}, "loss='bpr' does not apply to encoder='sasrec'")])
def test_sasrec_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DomainModule(10, 10, encoder="sasrec", embedding_dim=8, **kwargs)


def test_windows_make_every_training_item_but_the_first_a_target_once_after_its_predecessor():
    users = np.array([0] * 7 + [1] * 2 + [2])
    items = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 5])
    history = UserHistories(users, items, np.arange(10), 3)
    windows = SequenceWindows(history, max_len=3, num_items=12, batch_size=100, seed=0)
    batch = windows[(0, 0)]
    inputs, targets, neg = batch["inputs"].numpy(), batch["targets"].numpy(), batch["neg"].numpy()
    real = targets >= 0
    assert sorted(targets[real]) == [2, 3, 4, 5, 6, 7, 9]  # the user with one item has no target
    assert ((inputs >= 0) == real).all() and (targets[real] == inputs[real] + 1).all()
    seen = {0: set(range(1, 8)), 1: {8, 9}}
    assert all(neg[r, c] not in seen[int(batch["users"][r])] for r, c in zip(*np.nonzero(real), strict=True))


def test_evaluation_sequences_never_hold_the_items_being_predicted(tmp_path):
    data = SyntheticDataModule(num_users=20, num_items=30, cache_dir=str(tmp_path))
    model = DomainModule(20, 30, encoder="sasrec", embedding_dim=8, max_len=6)
    data.connect(DataNeeds(model.train_batch_kinds, model.sequence_len))  # as the model's setup does
    inter, split = data.interactions, data.split
    for stage, hidden in (("val", (split.valid, split.test)), ("test", (split.test,))):
        for batch in data._eval_loader(stage):
            assert batch["sequence"].shape[1] == 6
            for user, seq in zip(batch["users"].tolist(), batch["sequence"].tolist(), strict=True):
                for rows in hidden:
                    assert inter.items[rows][inter.users[rows] == user][0] not in seq
    assert data.needs.sequence_len == 6
    windows = data._train_dataset("domain")
    train_pairs = set(zip(inter.users[split.train].tolist(), inter.items[split.train].tolist(), strict=True))
    for user, row in zip(windows.users, windows.inputs, strict=True):
        assert all((user, item) in train_pairs for item in row if item >= 0)


def test_users_without_history_and_missing_timestamps_get_clear_messages():
    with pytest.raises(ValueError, match=r"2 users have no training interaction .*raw ids: b, c"):
        check_histories(np.array([[1, 2], [-1, -1], [-1, -1]]), np.array(["a", "b", "c"]))
    with pytest.warns(UserWarning, match=r"no timestamps .* order of the rows in the source file"):
        warn_about_order(np.array([0, 0, 1]), np.arange(3))
    with pytest.warns(UserWarning, match="1 users have interactions with equal timestamps; ties are broken by"):
        warn_about_order(np.array([0, 0, 1, 1]), np.array([5, 5, 3, 4]))


@pytest.mark.parametrize("encoder", ["ncf", "sasrec"])
def test_domain_and_lm_steps_both_change_the_shared_rows(encoder, tmp_path):
    changed = _changed_after_one_step(tiny_bridge({"encoder": encoder}, schedule={"domain_steps": 1, "lm_steps": 1}),
                                      tmp_path)
    assert "info.item.weight" in changed
    assert any(n.startswith("domain.recommender.encoder.") for n in changed)
    assert not {n for n in changed if n.startswith("lm.") and not n.startswith("lm.recommender.info.")}
    # SASRec reads users only through their items: a domain step leaves the user table as it was
    assert ("info.user.weight" in changed) == (encoder == "ncf")

    model = tiny_bridge({"encoder": encoder}, schedule={"domain_steps": 0, "lm_steps": 1})
    changed = _changed_after_one_step(model, tmp_path)
    assert {"info.user.weight", "info.item.weight"} <= changed
    assert not any(n.startswith("domain.recommender.encoder.") for n in changed)


@pytest.mark.parametrize("encoder", ["ncf", "sasrec"])
def test_cotrain_checkpoint_export_and_serve_the_domain_model(encoder, in_tmp):
    name = f"tiny_{encoder}"
    fitted = main(["fit", "--config", str(CONFIGS / "tiny_bridge.yaml"), "--trainer.logger.init_args.name", name,
                   "--model.init_args.domain.init_args.encoder", encoder,
                   "--trainer.max_epochs", "1", "--test_after_fit", "true"])
    assert "domain/test/ndcg@10" in fitted.test_metrics
    run = in_tmp / "logs" / name / "version_0"
    exported = export_domain(run / "checkpoints" / "last.ckpt", in_tmp / "domain.ckpt")
    config = in_tmp / "domain.yaml"
    config.write_text((run / "config.yaml").read_text())
    out = in_tmp / "domain.tsv"
    served = main(["predict", "--config", str(config), "--model", "lightning_bridge.models.domain.DomainModule",
                   "--ckpt_path", str(exported), "--predictions.path", str(out)])
    assert served.model.hparams.encoder == encoder
    _assert_unseen_top_20(out)


def test_a_plain_trainer_fits_a_domain_module_over_several_logging_intervals(tmp_path):
    """Without the CLI's TrainingCurves, the loss is logged at every step with the same arguments (Lightning
    refuses a key shown in the progress bar at some steps of an epoch and not at others)."""
    data = SyntheticDataModule(num_users=40, num_items=30, batch_size=16)
    model = DomainModule(40, 30, encoder="mf", embedding_dim=8)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=3, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step > 6 and "train/domain_loss" in trainer.callback_metrics


def test_an_ncf_model_survives_export_and_serving(in_tmp):
    cli = main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--model.init_args.encoder", "ncf",
                "--trainer.max_epochs", "1"])
    spec = json.loads((cli.exported / "recommender.json").read_text())
    model, data = model_from_checkpoint(str(cli.exported.parent / spec["domain"]["checkpoint"])).eval(), cli.datamodule
    model.recommender.attach(data)
    users = [data.raw_user_id(u) for u in (0, 3)]
    data.request_predictions(PredictionRequest(users=users))
    batch = next(iter(data.predict_dataloader()))
    data.request_predictions(None)
    with torch.no_grad():
        expected = model.recommender.scores(batch)
    loaded = load_recommender(cli.exported)
    assert torch.equal(loaded.scores(user_ids=users, model="domain"), expected)
