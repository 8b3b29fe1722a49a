"""LightGCN propagation against a dense-matrix reference; MF passes embeddings through."""

import numpy as np
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


def test_lightgcn_matches_dense_reference_and_backpropagates():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    num_users, num_items = 12, 9
    users, items = rng.integers(0, num_users, 40), rng.integers(0, num_items, 40)
    info = InfoSharing(num_users, num_items, dim=5)
    model = LightGCN(num_layers=3)
    model.set_graph(users, items, num_users, num_items)
    user_vec, item_vec = model(info)
    emb = torch.cat([info.user.weight, info.item.weight]).detach().double().numpy()
    expected = dense_lightgcn(users, items, num_users, num_items, emb, 3)
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
    for _ in range(3):
        layer = norm @ layer
        total = total + layer
    ((total / 4)[:num_users] * weights.double()).sum().backward()
    got_grad = torch.cat([info.user.weight.grad, info.item.weight.grad]).double()
    torch.testing.assert_close(got_grad, dense.grad, atol=1e-5, rtol=1e-4)


def test_mf_returns_the_tables():
    info = InfoSharing(3, 4, dim=2)
    user_vec, item_vec = MF()(info)
    assert user_vec is info.user.weight and item_vec is info.item.weight
