"""The sparse and cold-start protocols: the sparsifier, the item cold-start split and the metric groups."""

import numpy as np
import pytest
import torch

from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.evaluation.ranking import RankingEvaluator


def _data(tmp_path, **kwargs) -> SyntheticDataModule:
    return SyntheticDataModule(num_users=60, num_items=50, min_interactions=6, max_interactions=15,
                               cache_dir=str(tmp_path), seed=0, **kwargs)


def test_sparsifier_keeps_each_users_last_k_training_interactions(tmp_path):
    full, sparse = _data(tmp_path), _data(tmp_path, max_train_per_user=2)
    inter = full.interactions
    for part in ("valid", "test"):
        assert np.array_equal(getattr(full.split, part), getattr(sparse.split, part))
    assert set(sparse.split.train) <= set(full.split.train)
    for u in range(inter.num_users):
        mine = full.split.train[inter.users[full.split.train] == u]
        kept = sparse.split.train[inter.users[sparse.split.train] == u]
        latest = mine[np.lexsort((mine, inter.timestamps[mine]))][-2:]
        assert sorted(kept) == sorted(latest)


def test_cold_start_split_keeps_new_items_out_of_training_and_groups_their_users(tmp_path):
    data = _data(tmp_path, new_item_fraction=0.3)
    new = data.new_items
    assert new.sum() == 15
    assert not new[data.interactions.items[data.split.train]].any()
    batch = data.test_dataloader().dataset[(0, 0)]
    target_is_new = new[batch["targets"][:, 0].numpy()]
    assert np.array_equal(batch["group_new_item"].numpy(), target_is_new)
    assert torch.equal(batch["new_items"], torch.from_numpy(new))
    assert target_is_new.any()


def test_rare_group_is_the_fifth_of_users_whose_target_is_rarest(tmp_path):
    data = _data(tmp_path)
    loader = data.test_dataloader()
    users, rare, popularity = [], [], []
    for b in range(len(loader.dataset)):
        batch = loader.dataset[(0, b)]
        users += batch["users"].tolist()
        rare += batch["group_rare"].tolist()
        popularity += data.item_popularity()[batch["targets"][:, 0].numpy()].tolist()
    rare, popularity = np.array(rare), np.array(popularity)
    assert rare.sum() == np.ceil(0.2 * len(users))
    assert popularity[rare].max() <= popularity[~rare].min()


def test_new_item_metrics_rank_among_new_items_and_over_the_catalogue():
    evaluator = RankingEvaluator(ks=(1,))
    new_items = torch.tensor([False, False, True, True])
    # user 0's target (item 2) is new: it is beaten by warm item 0 over the catalogue, first among new items.
    batch = {"targets": torch.tensor([[2], [1]]), "exclude_rows": torch.tensor([1]), "exclude_cols": torch.tensor([3]),
             "group_sparse": torch.tensor([False, True]), "group_rare": torch.tensor([True, False]),
             "group_new_item": torch.tensor([True, False]), "new_items": new_items}
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.1, 0.8, 0.3, 0.9]])
    evaluator.update("test", scores, batch)
    out = evaluator.compute("test", "domain")
    assert out["domain/test/new_item_hr@1"] == 1.0
    assert out["domain/test/new_item_catalogue_hr@1"] == 0.0
    assert out["domain/test/hr@1"] == 0.5  # user 1's item 3 is masked as known, so item 1 comes first
    assert out["domain/test/rare_hr@1"] == 0.0 and out["domain/test/sparse_hr@1"] == 1.0


def test_without_new_items_no_new_item_metrics_are_reported(tmp_path):
    data = _data(tmp_path)
    batch = data.val_dataloader().dataset[(0, 0)]
    evaluator = RankingEvaluator(ks=(10,))
    evaluator.update("val", torch.randn(len(batch["users"]), data.num_items), batch)
    keys = evaluator.compute("val", "domain")
    assert "domain/val/rare_ndcg@10" in keys and not any("new_item" in k for k in keys)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("max_train_per_user", 0, "data.max_train_per_user must be at least 1"),
    ("new_item_fraction", 1.0, r"data.new_item_fraction must be in \(0, 1\)"),
    ("new_item_fraction", 0.0, r"data.new_item_fraction must be in \(0, 1\)"),
    ("text_batch_size", -1, "data.text_batch_size must be >= 0"),
])
def test_protocol_options_reject_bad_values(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        _data(tmp_path, **{option: value})
