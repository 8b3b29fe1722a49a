"""The shortcuts that make the domain model fast give the same answers as the plain computations."""

import contextlib
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_bridge.data import training_batches as batches_module
from lightning_bridge.data.batches import EvalUsers, UserHistories
from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.data.training_batches import BPRTriples
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.modules.domain.encoders import LightGCN, normalized_biadjacency
from lightning_bridge.modules.domain.recommender import _squared_rows


@pytest.fixture
def graph():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 200), rng.integers(0, 20, 200)
    return users, items, 30, 20


def test_graph_is_built_once_per_edge_set(graph, monkeypatch):
    users, items, num_users, num_items = graph
    model = LightGCN(2)
    model.set_graph(users, items, num_users, num_items)
    first = model._graph
    model.set_graph(users.copy(), items.copy(), num_users, num_items)
    assert model._graph is first  # same edges: nothing rebuilt
    model.set_graph(users[1:], items[1:], num_users, num_items)
    assert model._graph is not first


def test_biadjacency_dedupes_pairs_and_matches_dense(graph):
    users, items, num_users, num_items = graph
    dense = np.zeros((num_users, num_items))
    dense[users, items] = 1
    du, di = dense.sum(1), dense.sum(0)
    expected = dense / np.sqrt(np.outer(np.where(du > 0, du, 1), np.where(di > 0, di, 1)))
    got = normalized_biadjacency(users, items, num_users, num_items).to_dense().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_lightgcn_gradient_for_only_one_output(graph):
    from lightning_bridge.modules.info_sharing import InfoSharing

    users, items, num_users, num_items = graph
    torch.manual_seed(0)
    info = InfoSharing(num_users, num_items, dim=4)
    model = LightGCN(3)
    model.set_graph(users, items, num_users, num_items)
    _, item_vec = model(info)
    item_vec.sum().backward()  # the user output gets no gradient: backward must still work
    assert info.user.weight.grad is not None and info.item.weight.grad is not None


def test_squared_rows_counts_equal_gather():
    torch.manual_seed(0)
    table = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    for rows in (torch.randint(0, 10, (40,)), torch.randint(0, 10, (3,))):  # counted and gathered paths
        expected = table[rows].square().sum()
        (g_expected,) = torch.autograd.grad(expected, table)
        got = _squared_rows(table, rows)
        (g_got,) = torch.autograd.grad(got, table)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(g_got, g_expected)


def _training_data(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> SimpleNamespace:
    """What ``DomainRecommender.attach`` reads from a data module: the sizes, the graph, and SASRec's sequences
    (random histories; the interactions' timestamps rise with their rows)."""
    rng = np.random.default_rng(1)
    interactions = SimpleNamespace(users=users, timestamps=np.arange(len(users)),
                                   user_ids=[str(u) for u in range(num_users)])
    return SimpleNamespace(num_users=num_users, num_items=num_items, train_graph=lambda: (users, items),
                           interactions=interactions,
                           recent_training_items=lambda n: rng.integers(0, num_items, (num_users, n)))


def test_domain_loss_is_bpr_plus_l2(graph):
    users, items, num_users, num_items = graph
    data = _training_data(users, items, num_users, num_items)
    model = DomainModule(num_users, num_items, num_layers=2, embedding_dim=8, reg_weight=0.1).double()
    model.recommender.attach(data)
    batch = {"users": torch.tensor([0, 1, 1, 5]), "pos": torch.tensor([2, 3, 3, 7]), "neg": torch.tensor([4, 4, 9, 0])}
    user_vec, item_vec = model.recommender.encoder(model.info)
    u, p, n = user_vec[batch["users"]], item_vec[batch["pos"]], item_vec[batch["neg"]]
    bpr = F.softplus(-((u * p).sum(-1) - (u * n).sum(-1))).mean()
    ego = model.info.user.weight[batch["users"]].square().sum() + model.info.item.weight[batch["pos"]].square().sum() \
        + model.info.item.weight[batch["neg"]].square().sum()
    torch.testing.assert_close(model.recommender.loss(batch), bpr + 0.1 * ego / 8)


def test_dense_and_sorted_negative_samplers_agree(graph, monkeypatch):
    users, items, _, num_items = graph
    dense = BPRTriples(users, items, num_items, batch_size=50, seed=3)
    monkeypatch.setattr(batches_module, "DENSE_SEEN_MAX_CELLS", 0)
    keyed = BPRTriples(users, items, num_items, batch_size=50, seed=3)
    assert dense._seen is not None and keyed._seen is None
    for a, b in zip(dense.epoch_triples(4), keyed.epoch_triples(4), strict=True):
        np.testing.assert_array_equal(a, b)


def test_eval_batches_mask_every_known_item(graph):
    users, items, num_users, _ = graph
    known = UserHistories(users, items, np.arange(len(users)), num_users)
    eval_users = np.array([0, 3, 7, 29])
    data = EvalUsers(eval_users, [np.array([1])] * 4, known, history_len=5,
                     groups={"sparse": np.zeros(num_users, bool)}, batch_size=3)
    rows, cols = [], []
    for b in range(len(data)):
        batch = data[(0, b)]
        rows += (batch["exclude_rows"].numpy() + 3 * b).tolist()
        cols += batch["exclude_cols"].numpy().tolist()
    expected = [(r, i) for r, u in enumerate(eval_users) for i in known.items[known.indptr[u]: known.indptr[u + 1]]]
    assert list(zip(rows, cols, strict=True)) == expected


def test_repeated_evaluations_reuse_unchanged_batches(tmp_path):
    """Evaluation batches are built once and reused: a second validation must see them untouched (no model
    step may write into a batch) and give the same metrics."""
    data = SyntheticDataModule(num_users=40, num_items=30, eval_batch_size=16)
    model = DomainModule(40, 30, num_layers=2, embedding_dim=8)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    first = trainer.validate(model, datamodule=data, verbose=False)[0]
    before = [{k: v.clone() for k, v in batch.items()} for batch in data.val_dataloader()]
    second = trainer.validate(model, datamodule=data, verbose=False)[0]
    assert first == second
    for old, new in zip(before, data.val_dataloader(), strict=True):
        assert all(torch.equal(old[k], new[k]) for k in old)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("encoder", ["lightgcn", "mf", "ncf", "sasrec"])
def test_a_training_gradient_is_bitwise_reproducible_on_two_threads(encoder, two_threads):
    """Two runs of one seed must not drift apart on a multi-threaded CPU. ``table[index]``'s backward adds a
    batch's repeated rows from several threads in arrival order, so the same step gave different last bits
    (ML-100K's main job: the LM's third validation NDCG@10 was 0.0391 in one run, 0.0412 in the next);
    ``gather_rows`` fixes it."""
    rng = np.random.default_rng(0)
    num_users, num_items, size = 300, 200, 4096  # enough repeated rows in one batch for threads to split them
    users, items = rng.integers(0, num_users, 5000), rng.integers(0, num_items, 5000)
    data = _training_data(users, items, num_users, num_items)
    torch.manual_seed(0)
    model = DomainModule(num_users, num_items, encoder=encoder, embedding_dim=64, max_len=8, reg_weight=1e-3,
                         **({"loss": "bce"} if encoder == "sasrec" else {}))
    with pytest.warns(UserWarning) if encoder == "sasrec" else contextlib.nullcontext():
        model.recommender.attach(data)
    if encoder == "sasrec":
        batch = {"inputs": torch.from_numpy(rng.integers(-1, num_items, (size // 8, 8))),
                 "targets": torch.from_numpy(rng.integers(0, num_items, (size // 8, 8))),
                 "neg": torch.from_numpy(rng.integers(0, num_items, (size // 8, 8)))}
    else:
        batch = {key: torch.from_numpy(rng.integers(0, n, size))
                 for key, n in (("users", num_users), ("pos", num_items), ("neg", num_items))}
    gradients = []
    for _ in range(5):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        model.recommender.loss(batch).backward()
        gradients.append([p.grad.clone() for p in (model.info.user.weight, model.info.item.weight)
                          if p.grad is not None])
    for repeat in gradients[1:]:
        for first, again in zip(gradients[0], repeat, strict=True):
            assert torch.equal(first, again)
