"""The content-only baseline: a user's training items' text vectors against every item's, nothing trained."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.models.content import ContentModule
from lightning_bridge.modules.lm.id_tokens import ITEM


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    root = tmp_path_factory.mktemp("content")
    cli = main(["test", "--config", str(CONFIGS / "tiny_domain.yaml"), "--model",
                "lightning_bridge.models.content.ContentModule", "--model.init_args.backbone", "tiny-encoder",
                "--trainer.default_root_dir", str(root), "--data.init_args.new_item_fraction", "0.25"])
    return cli


def test_scores_are_the_cosine_of_the_users_mean_text_vector_with_each_items(tested):
    model, data = tested.model, tested.datamodule
    states = model.lm.recommender.encode_texts(ITEM, torch.arange(data.num_items), project=False).numpy()
    states /= np.linalg.norm(states, axis=1, keepdims=True)
    users, items = data.train_graph()
    for user in (0, 7, 31):
        profile = states[items[users == user]].mean(0)
        expected = states @ (profile / np.linalg.norm(profile))
        got = model.scores({"users": torch.tensor([user])})[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_it_is_tested_by_the_same_protocol_new_items_included(tested):
    metrics = tested.trainer.callback_metrics
    assert {"content/test/ndcg@10", "content/test/new_item_ndcg@10", "content/test/sparse_hr@10"} <= set(metrics)


def test_it_refuses_to_train(tmp_path):
    with pytest.raises(RuntimeError, match="ContentModule has nothing to train"):
        main(["fit", "--config", str(CONFIGS / "tiny_domain.yaml"), "--model",
              "lightning_bridge.models.content.ContentModule", "--model.init_args.backbone", "tiny-encoder",
              "--trainer.default_root_dir", str(tmp_path)])


def test_data_without_item_text_is_a_clear_error():
    module = ContentModule(3, 2, backbone="tiny-encoder")
    module.trainer = SimpleNamespace(datamodule=SimpleNamespace(item_text=[None, ""]))
    with pytest.raises(ValueError, match="no item text"):
        module.setup("test")
