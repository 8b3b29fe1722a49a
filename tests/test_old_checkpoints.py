"""Checkpoints written before the side models (weights at ``info.*``, ``encoder.*``, ``recommender.*``) still
load, into the same weights; and InfoSharing is configured once inside a bridge."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_bridge.models.bridge import BridgeModule
from lightning_bridge.models.checkpoints import legacy_name
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule


def _old_checkpoint(module: L.LightningModule, path) -> dict[str, torch.Tensor]:
    """Saves ``module`` as a checkpoint with the old weight names; returns its weights by new name."""
    state = module.state_dict()
    checkpoint = {"state_dict": {legacy_name(k) or k: v for k, v in state.items()},
                  "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__}
    assert set(checkpoint["state_dict"]) != set(state)  # some weights did move
    torch.save(checkpoint, path)
    return state


def _assert_same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("encoder", ["lightgcn", "sasrec"])
def test_an_old_domain_checkpoint_loads_into_the_same_weights(encoder, tmp_path):
    torch.manual_seed(0)
    expected = _old_checkpoint(DomainModule(5, 7, encoder=encoder, embedding_dim=4), tmp_path / "old.ckpt")
    _assert_same_weights(DomainModule.load_from_checkpoint(tmp_path / "old.ckpt"), expected)


def test_an_old_lm_checkpoint_loads_into_the_same_weights(tmp_path):
    torch.manual_seed(0)
    model = LMModule(5, 7, backbone="tiny-decoder", embedding_dim=4)
    expected = _old_checkpoint(model, tmp_path / "old.ckpt")
    assert "recommender.out_proj.weight" in torch.load(tmp_path / "old.ckpt", weights_only=True)["state_dict"]
    _assert_same_weights(LMModule.load_from_checkpoint(tmp_path / "old.ckpt"), expected)


def _bridge(**domain_kwargs) -> BridgeModule:
    return BridgeModule(5, 7, embedding_dim=4, domain=lambda u, i, **kw: DomainModule(u, i, **domain_kwargs, **kw),
                        lm=lambda u, i, **kw: LMModule(u, i, backbone="tiny-decoder", **kw))


def test_an_old_bridge_checkpoint_loads_and_warm_starts_from_an_old_domain_checkpoint(tmp_path):
    torch.manual_seed(0)
    bridge = _bridge(encoder="sasrec")
    expected = _old_checkpoint(bridge, tmp_path / "old.ckpt")
    fresh = _bridge(encoder="sasrec")
    fresh.on_load_checkpoint(checkpoint := torch.load(tmp_path / "old.ckpt", weights_only=True))
    fresh.load_state_dict(checkpoint["state_dict"])
    _assert_same_weights(fresh, expected)

    domain = DomainModule(5, 7, encoder="sasrec", embedding_dim=4)
    _old_checkpoint(domain, tmp_path / "domain.ckpt")
    fresh.warm_start_from(str(tmp_path / "domain.ckpt"))
    _assert_same_weights(fresh.domain, domain.state_dict())


@pytest.mark.parametrize(("key", "value"), [("embedding_dim", 128), ("init", "normal"), ("init_std", 0.5)])
def test_a_child_of_a_bridge_given_other_table_settings_is_an_error_naming_the_key(key, value):
    with pytest.raises(ValueError, match=rf"model\.init_args\.domain\.init_args\.{key}=.* would be ignored"):
        _bridge(**{key: value})
    _bridge(embedding_dim=4, init="xavier_uniform", init_std=0.1)  # the bridge's own values are no conflict
