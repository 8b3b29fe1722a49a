"""LightGCN propagation against a dense-matrix reference; MF passes embeddings through."""

import numpy as np
import pytest
import torch

from lightning_bridge.models.domain import DomainModule
from lightning_bridge.modules.domain.encoders import MF, LightGCN
from lightning_bridge.modules.info_sharing import InfoSharing


def dense_lightgcn(users, items, num_users, num_items, emb, layers):
    n = num_users + num_items
    a = np.zeros((n, n))
    a[users, num_users + items] = 1
    a[num_users + items, users] = 1
    deg = a.sum(1)
    inv = np.where(deg > 0, deg ** -0.5, 0)
    norm = inv[:, None] * a * inv[None, :]
    out, layer = emb.copy(), emb.copy()
    for _ in range(layers):
        layer = norm @ layer
        out += layer
    return out / (layers + 1)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_lightgcn_matches_dense_reference_and_backpropagates(layers):
    """Also for 1 and 2 layers: the first and the last layer are computed differently (``_propagate``)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    num_users, num_items = 12, 9
    users, items = rng.integers(0, num_users, 40), rng.integers(0, num_items, 40)
    info = InfoSharing(num_users, num_items, dim=5)
    model = LightGCN(num_layers=layers)
    model.set_graph(users, items, num_users, num_items)
    user_vec, item_vec = model(info)
    emb = torch.cat([info.user.weight, info.item.weight]).detach().double().numpy()
    expected = dense_lightgcn(users, items, num_users, num_items, emb, layers)
    got = torch.cat([user_vec, item_vec]).detach().double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)

    weights = torch.randn_like(user_vec)
    (user_vec * weights).sum().backward()
    dense = torch.cat([info.user.weight, info.item.weight]).detach().double().requires_grad_()
    n = num_users + num_items
    a = torch.zeros(n, n, dtype=torch.float64)
    a[users, num_users + items] = 1
    a[num_users + items, users] = 1
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), 0)
    norm = inv[:, None] * a * inv[None, :]
    layer, total = dense, dense
    for _ in range(layers):
        layer = norm @ layer
        total = total + layer
    ((total / (layers + 1))[:num_users] * weights.double()).sum().backward()
    got_grad = torch.cat([info.user.weight.grad, info.item.weight.grad]).double()
    torch.testing.assert_close(got_grad, dense.grad, atol=1e-5, rtol=1e-4)


def test_mf_returns_the_tables():
    info = InfoSharing(3, 4, dim=2)
    user_vec, item_vec = MF()(info)
    assert user_vec is info.user.weight and item_vec is info.item.weight


def test_isolated_nodes_keep_their_ego_row_whole_and_the_rest_follow_the_layer_mean():
    torch.manual_seed(0)
    num_users, num_items = 6, 5
    users, items = np.array([0, 0, 1, 2, 3, 3]), np.array([0, 1, 1, 2, 0, 2])  # users 4, 5 and items 3, 4: none
    info = InfoSharing(num_users, num_items, dim=4)
    paper, ego = LightGCN(num_layers=2), LightGCN(num_layers=2, isolated_nodes="ego")
    for encoder in (paper, ego):
        encoder.set_graph(users, items, num_users, num_items)
    (paper_u, paper_i), (ego_u, ego_i) = paper(info), ego(info)
    assert torch.allclose(ego_i[3:], info.item.weight[3:]) and torch.allclose(ego_u[4:], info.user.weight[4:])
    assert torch.allclose(paper_i[3:], info.item.weight[3:] / 3)
    assert torch.allclose(ego_i[:3], paper_i[:3]) and torch.allclose(ego_u[:4], paper_u[:4])
    ego_i.sum().backward()
    assert torch.allclose(info.item.weight.grad[3:], torch.ones(2, 4))  # isolated rows: gradient 1, not 1/3


def test_unknown_isolated_nodes_setting_names_the_option():
    with pytest.raises(ValueError, match=r"model.isolated_nodes must be 'layer_mean' or 'ego', got 'zero'"):
        LightGCN(num_layers=2, isolated_nodes="zero")


@pytest.mark.parametrize("isolated_nodes, share", [("layer_mean", 1 / 3), ("ego", 1.0)])
def test_isolated_dropped_items_get_the_vector_of_an_item_without_edges(isolated_nodes, share):
    torch.manual_seed(0)
    num_users, num_items = 6, 5
    users, items = np.array([0, 0, 1, 2, 3, 3]), np.array([0, 1, 1, 2, 0, 2])  # items 3, 4: new
    info = InfoSharing(num_users, num_items, dim=4)
    info.add_text_channel(3, id_dropout=0.5)
    info.set_item_text_features(torch.randn(num_items, 3), torch.arange(num_items))
    torch.nn.init.normal_(info.text_proj.weight)
    info.set_seen_items(torch.tensor([True, True, True, False, False]))
    kept, isolated = (LightGCN(2, isolated_nodes, dropped) for dropped in ("propagated", "isolated"))
    for encoder in (kept, isolated):
        encoder.set_graph(users, items, num_users, num_items)
    alone = info.text_vectors() * share  # what a new item is ranked with
    info.eval()  # no dropout: both settings give the same vectors, and new items read their text alone
    assert torch.allclose(isolated(info)[1], kept(info)[1])
    assert torch.allclose(isolated(info)[1][3:], alone[3:], atol=1e-6)
    info.train()
    with torch.no_grad():
        info.id_dropout = 0.0
        propagated = kept(info)[1]  # every seen item with its ID row and its edges
        info.id_dropout = 0.5
        passes = [isolated(info) for _ in range(200)]
    users_seen = [torch.allclose(u, passes[0][0]) for u, _ in passes]
    assert all(users_seen)  # users always propagate from the full item vectors
    as_new = torch.stack([torch.isclose(i, alone, atol=1e-6).all(1) for _, i in passes]).float()
    as_seen = torch.stack([torch.isclose(i, propagated, atol=1e-6).all(1) for _, i in passes]).float()
    assert as_new[:, 3:].eq(1).all()
    assert (as_new[:, :3] + as_seen[:, :3]).eq(1).all()  # a seen item is either dropped out whole or untouched
    assert as_new[:, :3].mean(0).sub(0.5).abs().lt(0.12).all()


def test_isolated_dropped_items_need_lightgcn_inside_a_bridge():
    with pytest.raises(ValueError, match=r"model.dropped_items='isolated' applies to encoder lightgcn"):
        DomainModule(3, 4, encoder="mf", dropped_items="isolated", info_sharing=InfoSharing(3, 4))
    with pytest.raises(ValueError, match=r"in a domain-only model"):
        DomainModule(3, 4, dropped_items="isolated")
    with pytest.raises(ValueError, match=r"model.dropped_items must be 'propagated' or 'isolated', got 'cut'"):
        LightGCN(2, dropped_items="cut")
