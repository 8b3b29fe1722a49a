"""LightGCN propagation against a dense-matrix reference; MF passes embeddings through."""

import numpy as np
import pytest
import torch

from lightning_bridge.modules.encoders import MF, LightGCN
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
