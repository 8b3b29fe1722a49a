"""Split invariants, the BPR sampler and the evaluation batches."""

import numpy as np
import pytest

from lightning_bridge.data.batches import ShardedBatches, UserHistories
from lightning_bridge.data.interactions import Interactions, leave_one_out, ratio_split
from lightning_bridge.data.recbole_export import write_recbole_benchmark
from lightning_bridge.data.sources import RawData
from lightning_bridge.data.synthetic import TOPIC_WORDS, synthetic_raw, synthetic_topics_raw
from lightning_bridge.data.tables import DataFormatError
from lightning_bridge.data.training_batches import BPRTriples, LMExamples


@pytest.fixture(scope="module")
def inter() -> Interactions:
    return Interactions.from_raw(synthetic_raw(num_users=80, num_items=50, seed=3))


def _pairs(inter, rows):
    return set(zip(inter.users[rows].tolist(), inter.items[rows].tolist(), strict=True))


def test_leave_one_out_invariants(inter):
    split = leave_one_out(inter)
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter.users)
    # one test and one validation item per user
    assert np.array_equal(np.sort(inter.users[split.test]), np.arange(inter.num_users))
    assert np.array_equal(np.sort(inter.users[split.valid]), np.arange(inter.num_users))
    assert not _pairs(inter, split.train) & (_pairs(inter, split.valid) | _pairs(inter, split.test))
    # time order: every train interaction precedes the user's validation one, which precedes the test one
    for u in range(inter.num_users):
        t_train = inter.timestamps[split.train][inter.users[split.train] == u]
        t_valid = inter.timestamps[split.valid][inter.users[split.valid] == u]
        t_test = inter.timestamps[split.test][inter.users[split.test] == u]
        assert t_train.max() <= t_valid[0] <= t_test[0]


def test_ratio_split_invariants(inter):
    split = ratio_split(inter, (0.8, 0.1, 0.1), "time")
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter.users)
    assert len(np.intersect1d(split.train, split.test)) == 0
    counts = np.bincount(inter.users, minlength=inter.num_users)
    train_counts = np.bincount(inter.users[split.train], minlength=inter.num_users)
    assert np.all(train_counts >= np.floor(0.8 * counts))


def test_too_short_users_are_an_error():
    raw = RawData(users=np.array(["a", "a", "b", "b", "b"]), items=np.array(["x", "y", "x", "y", "z"]),
                  ratings=np.ones(5, np.float32), timestamps=np.arange(5), item_text={}, item_titles={},
                  user_text={}, source="mem")
    with pytest.raises(DataFormatError, match=r"1 users have fewer.*raw ids: a"):
        leave_one_out(Interactions.from_raw(raw))


def test_threshold_that_leaves_nothing_is_an_error():
    raw = synthetic_raw(num_users=10, num_items=30, seed=0)
    with pytest.raises(DataFormatError, match="no interactions left"):
        Interactions.from_raw(raw, rating_threshold=5.0)


def test_sampler_never_returns_a_positive_and_is_reproducible(inter):
    split = leave_one_out(inter)
    users, items = inter.users[split.train], inter.items[split.train]
    data = BPRTriples(users, items, inter.num_items, batch_size=64, seed=7)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    for epoch in range(3):
        for b in range(len(data)):
            batch = data[(epoch, b)]
            assert not positives & set(zip(batch["users"].tolist(), batch["neg"].tolist(), strict=True))
            assert set(zip(batch["users"].tolist(), batch["pos"].tolist(), strict=True)) <= positives
    again = BPRTriples(users, items, inter.num_items, batch_size=64, seed=7)
    assert all((again[(1, 2)][k] == data[(1, 2)][k]).all() for k in ("users", "pos", "neg"))
    assert not (data[(1, 0)]["neg"] == data[(2, 0)]["neg"]).all()


def test_sharded_batches_split_work_between_ranks():
    sampler = ShardedBatches(num_batches=7, even=False)
    sampler.set_epoch(3)
    assert list(sampler) == [(3, b) for b in range(7)]
    sampler.num_replicas, sampler.rank = 2, 1
    assert list(sampler) == [(3, 1), (3, 3), (3, 5)]
    sampler.even = True
    assert list(sampler) == [(3, 1), (3, 3), (3, 5)] and len(sampler) == 3


def test_histories_and_lm_examples(inter):
    split = leave_one_out(inter)
    hist = UserHistories(inter.users[split.train], inter.items[split.train], inter.timestamps[split.train],
                         inter.num_users)
    recent = hist.recent(np.array([0]), np.array([3]), 5)
    assert recent[0, :2].tolist() == [-1, -1]
    assert recent[0, 2:].tolist() == hist.items[hist.indptr[0]: hist.indptr[0] + 3].tolist()
    examples = LMExamples(hist, history_len=4, per_user=2, batch_size=16, seed=0)
    batch = examples[(0, 0)]
    for u, h, t in zip(batch["users"], batch["history"], batch["targets"][:, 0], strict=True):
        items = hist.items[hist.indptr[u]: hist.indptr[u + 1]].tolist()
        seq = [i for i in h.tolist() if i >= 0]
        pos = items.index(int(t))
        assert seq == items[max(0, pos - 4): pos] and seq


def test_recbole_benchmark_files(inter, tmp_path):
    split = leave_one_out(inter)
    paths = write_recbole_benchmark(inter, split, tmp_path, "syn")
    assert [p.relative_to(tmp_path).as_posix() for p in paths[:4]] == [
        "syn-split/syn-split.train.inter", "syn-split/syn-split.valid.inter", "syn-split/syn-split.test.inter",
        "syn-split/syn-split.inter"]
    lines = paths[2].read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert len(lines) == 1 + inter.num_users


def _write_atomic(folder, name="toy"):
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(6):
        for k in range(5):
            lines.append(f"u{u}\ti{(u + k) % 8}\t{1 + k % 5}\t{100 * u + k}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"i{i}\tMovie {i}\t199{i}\tDrama Comedy" for i in range(7)]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n")


def test_atomic_datamodule_splits_caches_and_exports(tmp_path):
    from lightning_bridge.data.datasets import AtomicFilesDataModule

    folder = tmp_path / "toy"
    _write_atomic(folder)
    cache = tmp_path / "cache"
    data = AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache), export_split_to=str(tmp_path / "out"))
    assert (data.num_users, data.num_items) == (6, 8)
    assert len(data.split.test) == 6 and (tmp_path / "out" / "toy-split" / "toy-split.test.inter").exists()
    assert data.item_text[data.interactions.item_ids.tolist().index("i1")].startswith("Movie 1 (1991)")
    assert data.item_text[data.interactions.item_ids.tolist().index("i7")] is None  # no .item row
    assert len(list((cache / "parsed").glob("*.npz"))) == 1 and not list(cache.rglob("*.pkl"))
    again = AtomicFilesDataModule(folder=str(folder), cache_dir=str(cache))
    assert np.array_equal(again.interactions.items, data.interactions.items)
    batch = data.test_dataloader().dataset[(0, 0)]
    # at test time the validation item is known: it is masked and is the last item of the history
    user = int(batch["users"][0])
    masked = set(batch["exclude_cols"][batch["exclude_rows"] == 0].tolist())
    valid_item = int(data.interactions.items[data.split.valid][data.interactions.users[data.split.valid] == user][0])
    assert valid_item in masked and int(batch["history"][0, -1]) == valid_item
    assert int(batch["targets"][0, 0]) not in masked


def test_sparse_users_are_the_fifth_with_fewest_training_interactions(tmp_path):
    from lightning_bridge.data.datasets import SyntheticDataModule

    data = SyntheticDataModule(num_users=50, num_items=40, cache_dir=str(tmp_path))
    counts = np.bincount(data.interactions.users[data.split.train], minlength=50)
    sparse = data.sparse_users
    assert sparse.sum() == 10
    assert counts[sparse].max() <= counts[~sparse].min()


def test_bpr_negatives_can_be_limited_to_items_seen_in_training():
    """``data.negatives: interacted``: a new item (no training interaction) is never drawn as a negative."""
    from lightning_bridge.data.datasets import SyntheticDataModule

    for negatives, expect_new in (("all", True), ("interacted", False)):
        data = SyntheticDataModule(num_users=60, num_items=40, new_item_fraction=0.25, negatives=negatives)
        data.prepare_data()
        data.setup("fit")
        trained = set(np.unique(data.interactions.items[data.split.train]).tolist())
        dataset = data._train_dataset("domain")
        negatives_drawn = {int(i) for epoch in range(3) for i in dataset.epoch_triples(epoch)[2]}
        assert bool(negatives_drawn - trained) == expect_new


def test_unknown_negatives_setting_names_the_option():
    from lightning_bridge.data.datasets import SyntheticDataModule

    with pytest.raises(ValueError, match=r"data.negatives must be 'all' or 'interacted', got 'seen'"):
        SyntheticDataModule(negatives="seen")


@pytest.mark.parametrize("favourite_words", [0, 1])
def test_synthetic_topics_taste_is_in_the_titles(favourite_words):
    """Without noise every user's items share a topic's words; with favourite words, each of a user's items
    of one topic shows one of the user's few words in its title. Most items stay at <= 3 interactions."""
    raw = synthetic_topics_raw(num_users=300, num_items=3000, noise=0.0, favourite_words=favourite_words)
    word_topic = {w.title(): t for t, words in TOPIC_WORDS.items() for w in words}
    by_user: dict[str, list[set[str]]] = {}
    for user, item in zip(raw.users, raw.items, strict=True):
        by_user.setdefault(user, []).append(set(raw.item_text[item].split()) & set(word_topic))
    for titles in by_user.values():
        topics = {word_topic[w] for words in titles for w in words}
        assert 1 <= len(topics) <= 2
        if favourite_words:  # one topic's items are covered by that topic's single favourite word
            for topic in topics:
                of_topic = [words for words in titles if word_topic[next(iter(words))] == topic]
                assert set.intersection(*of_topic)
    _, counts = np.unique(raw.items, return_counts=True)
    assert (counts <= 3).mean() > 0.5


def test_synthetic_topics_rejects_too_many_favourite_words():
    with pytest.raises(ValueError, match=r"favourite_words must be in 0\.\.9"):
        synthetic_topics_raw(favourite_words=10)
