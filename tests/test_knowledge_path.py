"""The path from text to the shared table: the LM's text tasks, the text anchor on domain steps, and the
automatic warm start."""

import logging
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from builders import NUM_ITEMS, NUM_USERS, tiny_bridge

from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.co_training.warm_start import WarmStartAsCandidate, warm_start_domain
from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lm import LMModule
from lightning_bridge.modules.info_sharing import InfoSharing, fold_text_channel
from lightning_bridge.modules.lm.id_tokens import ITEM
from lightning_bridge.modules.lm.prompts import PromptBuilder
from lightning_bridge.run.callbacks import RunCheckpoint


def _data(tmp_path, **kwargs) -> SyntheticDataModule:
    settings = {"batch_size": 32, "lm_batch_size": 8, "history_len": 3, "text_batch_size": 16, **kwargs}
    return SyntheticDataModule(num_users=NUM_USERS, num_items=NUM_ITEMS, cache_dir=str(tmp_path), seed=0,
                               **settings)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                     default_root_dir=tmp_path, **kwargs)


def _item_text_hits(lm: LMModule, k: int) -> float:
    """Share of items that a prompt of their own text alone ranks in the top k."""
    items = torch.arange(NUM_ITEMS)
    lm.eval()
    with torch.no_grad():
        scores = lm.recommender.network.score_queries(lm.recommender.text_queries(ITEM, items), lm.info.item.weight)
    lm.train()
    return (scores.topk(k).indices == items[:, None]).any(1).float().mean().item()


def test_text_prompts_hold_an_items_text_alone_without_id_tokens():
    from test_lm_module import ITEMS, tokenizer_for

    tokenizer, id_token = tokenizer_for("encoder")
    prompts = PromptBuilder(tokenizer, id_token, ITEMS, None, template="H: {history}", max_length=64)
    out = prompts.build_texts(ITEM, torch.tensor([3, 0]))
    texts = [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True) for ids, mask in
             zip(out["input_ids"], out["attention_mask"], strict=True)]
    assert [t.strip() for t in texts] == ["cherry pie", "apple"]
    assert (out["id_kind"] == -1).all()


def test_item_text_task_teaches_the_lm_to_find_an_item_from_its_text_alone(tmp_path):
    torch.manual_seed(0)
    # lr 1e-2: at 2e-2 some seeds collapse to 0.1-0.2 hits, and which ones depends on the CPU's SIMD kernels
    # (seed 0 failed with AVX-512 and passed with AVX2); at 1e-2 seeds 0-2 reach 0.8-0.97 with either
    lm = LMModule(NUM_USERS, NUM_ITEMS, backbone="tiny-encoder", max_length=160, embedding_dim=16,
                  backbone_dropout=0.0, lora_dropout=0.0, task_weights={"item_text": 1.0},
                  optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = _data(tmp_path)
    lm.recommender.attach(data)
    before = _item_text_hits(lm, k=3)
    _trainer(tmp_path, max_steps=100).fit(lm, datamodule=data)
    after = _item_text_hits(lm, k=3)
    chance = 3 / NUM_ITEMS
    assert after >= 5 * chance and after > before + 0.3, (before, after)


def test_an_lm_text_step_moves_rows_that_the_domain_model_then_reads(tmp_path):
    bridge = tiny_bridge(lm={"task_weights": {"item_text": 1.0}}, schedule={"domain_steps": 0, "lm_steps": 1})
    data = _data(tmp_path)
    bridge.domain.recommender.attach(data)
    users = torch.arange(NUM_USERS)
    scores_before = bridge.domain.recommender.scores({"users": users}).detach().clone()
    _trainer(tmp_path, max_steps=1).fit(bridge, datamodule=data)
    assert not torch.allclose(bridge.domain.recommender.scores({"users": users}), scores_before)


def _bridge_after_one_domain_step(tmp_path, anchor: float) -> tuple[BridgeModule, torch.Tensor]:
    torch.manual_seed(0)
    bridge = tiny_bridge(schedule={"domain_steps": 1, "lm_steps": 0}, knowledge={"text_anchor_weight": anchor})
    before = bridge.info.item.weight.detach().clone()
    _trainer(tmp_path, max_steps=1).fit(bridge, datamodule=_data(tmp_path, batch_size=4))
    return bridge, (bridge.info.item.weight.detach() != before).any(1)


def test_text_anchor_pulls_item_rows_outside_the_bpr_batch_on_domain_steps(tmp_path):
    _, moved_without = _bridge_after_one_domain_step(tmp_path, anchor=0.0)
    bridge, moved_with = _bridge_after_one_domain_step(tmp_path, anchor=1.0)
    assert moved_without.sum() <= 8  # a 4-triple BPR batch touches at most 8 items
    assert moved_with.all()  # the anchor's cross-entropy reaches every item row
    assert bridge._text_anchor is not None and bridge._text_anchor.queries.abs().sum() > 0


def test_text_anchor_survives_a_checkpoint(tmp_path):
    bridge, _ = _bridge_after_one_domain_step(tmp_path, anchor=1.0)
    checkpoint = {"state_dict": bridge.state_dict()}
    bridge.on_save_checkpoint(checkpoint)
    fresh = tiny_bridge(knowledge={"text_anchor_weight": 1.0})
    fresh.on_load_checkpoint(checkpoint)
    assert torch.equal(fresh._text_anchor.queries, bridge._text_anchor.queries)


def test_automatic_warm_start_stops_at_the_domain_models_best_and_starts_from_it(tmp_path, caplog):
    """A plain ``Trainer.fit`` from Python runs the warm start as the CLI does: BridgeModule brings it along
    (to fitting only: a test afterwards neither runs it again nor announces that it replaced it)."""
    bridge = tiny_bridge(warm_start={"auto": True, "max_epochs": 200, "patience": 2, "val_every": 1},
                         schedule={"domain_steps": 1, "lm_steps": 1})
    at_start = {}

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            at_start["item"] = pl_module.info.item.weight.detach().clone()

    checkpoint = RunCheckpoint(dirpath=tmp_path / "ckpt", monitor="domain/val/ndcg@10", mode="max",
                               filename="best-{epoch}-{step}")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, max_epochs=1, limit_train_batches=3, default_root_dir=tmp_path,
                        callbacks=[checkpoint, Spy()])
    trainer.fit(bridge, datamodule=_data(tmp_path))
    best, score = bridge.warm_started_from
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert torch.equal(at_start["item"], state["state_dict"]["recommender.info.item.weight"])
    assert state["epoch"] < 199  # early stopping ended it, not the epoch cap
    assert trainer.global_step == 3 and bridge.domain.trainer is trainer and trainer.datamodule.trainer is trainer
    assert {"train/domain_loss", "train/lm_loss"} <= set(trainer.callback_metrics)  # bridge batches, both sides
    assert checkpoint.best_model_score >= score  # the warm start was the first candidate
    with caplog.at_level(logging.INFO):
        trainer.test(bridge, datamodule=trainer.datamodule, verbose=False)
    assert "will override existing callbacks" not in caplog.text and bridge.warm_started_from == (best, score)


@pytest.mark.parametrize("warm_score", [1.0, -1.0])
def test_co_training_replaces_the_warm_start_only_if_it_beats_it_on_validation(tmp_path, warm_score):
    bridge = tiny_bridge()
    start = bridge.info.item.weight.detach().clone()
    checkpoint = RunCheckpoint(dirpath=tmp_path / "ckpt", monitor="domain/val/ndcg@10", mode="max",
                               filename="best-{epoch}-{step}")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, max_epochs=2, limit_train_batches=3,
                        callbacks=[checkpoint, WarmStartAsCandidate(warm_score)])
    trainer.fit(bridge, datamodule=_data(tmp_path))
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    if warm_score == 1.0:  # no NDCG beats 1: the model co-training started from stays the best
        assert best["global_step"] == 0 and checkpoint.best_model_score == 1.0
        assert torch.equal(best["state_dict"]["info.item.weight"], start)
    else:  # any validation beats -1: co-training's own best replaces it
        assert best["global_step"] > 0 and checkpoint.best_model_score >= 0


@pytest.mark.parametrize(("weights", "message"), [
    ({"next_item": 1.0, "titles": 1.0}, "unknown task 'titles'"),
    ({"next_item": 1.0, "item_text": -0.5}, "must be >= 0"),
    ({"next_item": 0.0}, "at least one task needs a positive weight"),
])
def test_task_weights_reject_bad_values(weights, message):
    with pytest.raises(ValueError, match=message):
        LMModule(NUM_USERS, NUM_ITEMS, backbone="tiny-decoder", task_weights=weights)


def test_item_text_task_on_data_without_item_text_names_the_option():
    lm = LMModule(2, 3, backbone="tiny-decoder", task_weights={"item_text": 1.0})
    data = SimpleNamespace(num_users=2, num_items=3, item_text=[None, "", None], user_text=[None, None])
    with pytest.raises(ValueError, match=r"task_weights\.item_text > 0 needs item text"):
        lm.recommender.attach(data)


def test_bridge_rejects_a_negative_anchor_and_two_warm_starts():
    def make(**kwargs):
        return BridgeModule(NUM_USERS, NUM_ITEMS, domain=lambda u, i, **kw: DomainModule(u, i, **kw),
                            lm=lambda u, i, **kw: LMModule(u, i, backbone="tiny-decoder", **kw), **kwargs)

    with pytest.raises(ValueError, match="text_anchor_weight must be >= 0"):
        make(knowledge={"text_anchor_weight": -1.0})
    with pytest.raises(ValueError, match="exclude each other"):
        make(warm_start={"auto": True, "checkpoint": "x.ckpt"})


def test_lm_item_text_steps_refresh_the_anchor_rows_they_read(tmp_path):
    bridge = tiny_bridge(lm={"task_weights": {"next_item": 1.0, "item_text": 1.0}},
                         schedule={"domain_steps": 1, "lm_steps": 1}, knowledge={"text_anchor_weight": 1.0})
    results, losses = [], bridge.lm.recommender.losses
    bridge.lm.recommender.losses = lambda batch: results.append(losses(batch)) or results[-1]
    _trainer(tmp_path, max_steps=2).fit(bridge, datamodule=_data(tmp_path))  # a domain step, then an LM step
    items, queries = results[-1].item_text_queries
    assert torch.equal(bridge._text_anchor.queries[items], queries)


def test_a_frozen_backbone_encodes_item_texts_once_and_gives_the_same_queries(tmp_path):
    lm = LMModule(NUM_USERS, NUM_ITEMS, backbone="tiny-encoder", finetune="frozen", embedding_dim=8,
                  task_weights={"item_text": 1.0})
    lm.recommender.attach(_data(tmp_path))
    items = torch.tensor([3, 7, 7, 0])
    lm.eval()
    with torch.no_grad():
        direct = lm.recommender.network(**lm.recommender._text_prompt(ITEM, items), info=lm.info)
        cached = lm.recommender.text_queries(ITEM, items)
    assert torch.allclose(cached, direct, atol=1e-5)
    assert lm.recommender._text_features[ITEM].shape[0] == NUM_ITEMS
    lm.train()
    assert lm.recommender.text_queries(ITEM, items).requires_grad  # the output projection still trains


def test_a_bridge_that_does_not_evaluate_its_lm_logs_only_the_domain_model(tmp_path):
    bridge = tiny_bridge(evaluate_lm=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(bridge, datamodule=_data(tmp_path), verbose=False)
    assert "domain/val/ndcg@10" in metrics and not any(k.startswith("lm/") for k in metrics)


def _channel_bridge(knowledge: dict | None = None, **kwargs) -> BridgeModule:
    torch.manual_seed(0)
    return tiny_bridge(knowledge={"text_channel": True, **(knowledge or {})}, **kwargs)


def test_a_cold_start_bridges_domain_model_is_described_as_one_that_loads_alone():
    """The warm start's and the domain export's checkpoints describe the domain model alone: LightGCN with
    isolated dropped items (the cold-start recipe) becomes the model that scores the same without dropout."""
    bridge = tiny_bridge({"encoder": "lightgcn", "dropped_items": "isolated", "isolated_nodes": "ego"},
                         knowledge={"text_channel": True}, cold_start={"item_id_dropout": 0.5})
    settings = {k: v for k, v in bridge.domain_hyper_parameters().items() if k != "_class_path"}
    alone = DomainModule(**settings)
    assert alone.hparams.dropped_items == "propagated" and alone.hparams.isolated_nodes == "ego"


def test_text_channel_gives_every_item_a_text_part_that_domain_steps_train(tmp_path):
    bridge = _channel_bridge(schedule={"domain_steps": 1, "lm_steps": 0})
    rows = bridge.info.item.weight.detach().clone()
    assert torch.equal(bridge.info.item_vectors(), bridge.info.item.weight)  # the map starts at zero
    _trainer(tmp_path, max_steps=3).fit(bridge, datamodule=_data(tmp_path, batch_size=4))
    info = bridge.info
    assert torch.allclose(info.item_text_features.norm(dim=1), torch.ones(NUM_ITEMS))  # every item has text
    assert bridge._text_channel_epoch == 0 and info.text_proj.weight.abs().sum() > 0
    untouched = (info.item.weight.detach() == rows).all(1)  # rows BPR's three 4-triple batches never drew
    assert untouched.any()
    moved = (info.item_vectors().detach() != rows).any(1)
    assert moved[untouched].all()  # their vectors follow the text part all the same


def test_text_channel_is_read_by_both_models_and_folds_into_plain_tables(tmp_path):
    bridge = _channel_bridge()
    data = _data(tmp_path)
    bridge.domain.recommender.attach(data)
    bridge.lm.recommender.attach(data)
    bridge.encode_item_texts(epoch=0)
    users = torch.arange(NUM_USERS)
    prompts = {"users": torch.tensor([0, 1]), "history": torch.tensor([[0, 1, 2], [3, -1, -1]])}
    bridge.eval()
    with torch.no_grad():
        before = [bridge.domain.recommender.scores({"users": users}), bridge.lm.recommender.scores(prompts)]
        bridge.info.text_proj.weight.normal_()  # the text part moves; the ID rows stay
        after = [bridge.domain.recommender.scores({"users": users}), bridge.lm.recommender.scores(prompts)]
    assert not torch.allclose(after[0], before[0]) and not torch.allclose(after[1], before[1])

    plain = DomainModule(NUM_USERS, NUM_ITEMS, encoder="mf", embedding_dim=8)
    plain.load_state_dict(fold_text_channel(bridge.domain.state_dict(), "recommender.info."))
    plain.recommender.attach(data)
    with torch.no_grad():
        assert torch.equal(plain.recommender.scores({"users": users}), after[0])


def test_text_channel_epoch_survives_a_checkpoint_and_needs_item_text(tmp_path):
    bridge = _channel_bridge(schedule={"domain_steps": 1, "lm_steps": 0})
    _trainer(tmp_path, max_steps=1).fit(bridge, datamodule=_data(tmp_path, batch_size=4))
    checkpoint = {"state_dict": bridge.state_dict()}
    bridge.on_save_checkpoint(checkpoint)
    fresh = _channel_bridge(schedule={"domain_steps": 1, "lm_steps": 0})
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert fresh._text_channel_epoch == 0
    assert torch.equal(fresh.info.item_text_features, bridge.info.item_text_features)

    no_text = _data(tmp_path)
    no_text.prepare_data()
    no_text.setup("fit")
    no_text.interactions.item_text[:] = [None] * NUM_ITEMS
    with pytest.raises(ValueError, match=r"model\.knowledge\.text_channel=true needs item text"):
        _trainer(tmp_path, max_steps=1).fit(_channel_bridge(), datamodule=no_text)


def test_automatic_warm_start_trains_the_text_channel_from_its_first_step(tmp_path):
    bridge = _channel_bridge(warm_start={"auto": True, "max_epochs": 3, "patience": 2, "val_every": 1})
    best, _ = warm_start_domain(bridge, _data(tmp_path), str(tmp_path))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert state["recommender.info.item_text_features"].norm(dim=1).allclose(torch.ones(NUM_ITEMS))
    assert state["recommender.info.text_proj.weight"].abs().sum() > 0  # BPR trained the map alongside the rows
    assert torch.equal(bridge.info.text_proj.weight, state["recommender.info.text_proj.weight"])
    assert bridge._text_channel_epoch == 0  # co-training's first epoch keeps these features


def test_text_channel_and_anchor_share_one_pass_over_the_catalogue(tmp_path, monkeypatch):
    bridge = _channel_bridge({"text_anchor_weight": 1.0}, schedule={"domain_steps": 1, "lm_steps": 0})
    data = _data(tmp_path)
    bridge.lm.recommender.attach(data)
    passes = []
    pooled = bridge.lm.recommender.network.pooled
    monkeypatch.setattr(bridge.lm.recommender.network, "pooled",
                        lambda *a, **kw: passes.append(1) or pooled(*a, **kw))
    bridge.trainer = SimpleNamespace(current_epoch=0)
    bridge.on_train_epoch_start()
    assert len(passes) == 1  # the catalogue's 30 texts, in one batch, once
    items = torch.arange(NUM_ITEMS)
    with torch.no_grad():
        direct = bridge.lm.recommender.encode_texts(ITEM, items)
    assert torch.allclose(bridge._text_anchor.queries, direct, atol=1e-5)  # as if the anchor encoded them


def test_attaching_the_same_texts_again_keeps_a_frozen_backbones_cached_states(tmp_path):
    lm = LMModule(NUM_USERS, NUM_ITEMS, backbone="tiny-encoder", finetune="frozen", embedding_dim=8)
    data = _data(tmp_path)
    lm.recommender.attach(data)
    states = lm.recommender._frozen_states(ITEM)
    lm.recommender.attach(data)  # the main fit after the warm start
    assert lm.recommender._frozen_states(ITEM) is states
    data.interactions.item_text[0] = "a different title"
    lm.recommender.attach(data)
    assert lm.recommender._frozen_states(ITEM) is not states


def test_items_without_training_interactions_read_their_text_alone_and_id_dropout_trains_the_text_part():
    info = InfoSharing(3, 6, dim=4)
    info.add_text_channel(5, id_dropout=0.5)
    info.set_item_text_features(torch.randn(6, 5), torch.arange(6))
    torch.nn.init.normal_(info.text_proj.weight)
    info.set_seen_items(torch.tensor([True, True, True, True, False, False]))
    text = info.text_proj(info.item_text_features)
    info.eval()
    expected = torch.cat([info.item.weight[:4] + text[:4], text[4:]])
    assert torch.allclose(info.item_vectors(), expected)
    pairs = torch.tensor([[5, 0], [1, 4]])  # e.g. (positive, negative) per row
    assert torch.allclose(info.item_rows(pairs), expected[pairs])
    info.train()
    torch.manual_seed(0)
    uses_id = torch.stack([(info.item_vectors() != text).any(1) for _ in range(400)]).float().mean(0)
    assert uses_id[4:].eq(0).all() and uses_id[:4].sub(0.5).abs().lt(0.1).all()  # seen items: half the passes


def test_text_channel_marks_the_cold_splits_new_items_and_folds_them_to_their_text(tmp_path):
    bridge = _channel_bridge(schedule={"domain_steps": 1, "lm_steps": 0}, cold_start={"item_id_dropout": 0.2})
    data = _data(tmp_path, batch_size=4, new_item_fraction=0.2)
    _trainer(tmp_path, max_steps=1).fit(bridge, datamodule=data)
    assert torch.equal(bridge.info.item_seen.bool(), ~torch.from_numpy(data.new_items))
    folded = fold_text_channel(bridge.state_dict(), "info.")["info.item.weight"]
    new = torch.from_numpy(data.new_items)
    assert torch.allclose(folded[new], bridge.info.text_proj(bridge.info.item_text_features[new]))
    with pytest.raises(ValueError, match=r"cold_start\.item_id_dropout > 0 needs model\.knowledge\.text_channel"):
        tiny_bridge(cold_start={"item_id_dropout": 0.1})
    with pytest.raises(ValueError, match=r"model\.cold_start\.item_id_dropout must be in \[0, 1\), got 1.0"):
        _channel_bridge(cold_start={"item_id_dropout": 1.0})
    with pytest.raises(ValueError, match=r"dropped_items=isolated needs model\.cold_start\.item_id_dropout > 0"):
        tiny_bridge({"encoder": "lightgcn", "dropped_items": "isolated"}, knowledge={"text_channel": True})


def _channel(num_items: int = 40, text_dim: int = 6, seen: int = 30) -> InfoSharing:
    torch.manual_seed(0)
    info = InfoSharing(3, num_items, dim=4)
    info.add_text_channel(text_dim)
    info.set_seen_items(torch.arange(num_items) < seen)
    info.set_item_text_features(torch.randn(num_items, text_dim), torch.arange(num_items))
    torch.nn.init.normal_(info.text_proj.weight)
    return info


def test_a_refitted_channel_keeps_the_seen_items_text_parts_and_moves_the_rest_through_the_new_reading():
    info, items = _channel(), torch.arange(40)
    before = info.text_vectors().detach()
    remixed = info.item_text_features @ torch.linalg.qr(torch.randn(6, 6)).Q  # the same reading, rotated
    info.set_item_text_features(remixed, items, refit=True)
    torch.testing.assert_close(info.text_vectors().detach(), before, atol=1e-5, rtol=0)  # every item's part
    unrefitted = _channel()
    unrefitted.set_item_text_features(remixed, items)
    assert not torch.allclose(unrefitted.text_vectors(), before, atol=1e-2)  # the old map on a new reading

    new_reading = torch.randn(40, 6)  # not a re-mixing of the old one: only a best fit is possible
    old_map = info.text_proj.weight.detach().clone()
    info.set_item_text_features(new_reading, items, refit=True)
    features = info.item_text_features[:30]

    def seen_error(weight: torch.Tensor) -> float:
        return (features @ weight.T - before[:30]).norm().item()

    fitted = info.text_proj.weight.detach()
    assert seen_error(fitted) < seen_error(old_map)
    assert all(seen_error(fitted) <= seen_error(fitted + 1e-3 * torch.randn_like(fitted)) for _ in range(5))
    assert not torch.allclose(info.text_vectors()[30:], before[30:], atol=1e-2)  # the unseen items moved


def test_a_first_reading_leaves_the_map_alone_and_refitting_needs_the_channel():
    info = InfoSharing(3, 5, dim=4)
    info.add_text_channel(6)
    torch.nn.init.normal_(info.text_proj.weight)
    weight = info.text_proj.weight.detach().clone()
    info.set_item_text_features(torch.randn(5, 6), torch.arange(5), refit=True)  # nothing to keep yet
    assert torch.equal(info.text_proj.weight, weight)
    with pytest.raises(ValueError, match="text_channel_refit=true refits the text channel: it needs "
                                         r"model.knowledge.text_channel=true"):
        tiny_bridge(knowledge={"text_channel_refit": True})


def test_a_bridge_refits_its_channel_when_a_trained_lm_reads_the_texts_again(tmp_path):
    bridge = _channel_bridge({"text_channel_refit": True, "text_anchor_weight": 0.0})
    data = _data(tmp_path)
    bridge.lm.recommender.attach(data)
    bridge.prepare_text_channel(data)
    bridge.trainer = SimpleNamespace(current_epoch=0)
    bridge.on_train_epoch_start()
    info = bridge.info
    torch.nn.init.normal_(info.text_proj.weight)  # as if the domain steps had trained the map
    before, old_map = info.text_vectors().detach(), info.text_proj.weight.detach().clone()
    with torch.no_grad():  # as if the LM steps had trained the LM
        for p in bridge.lm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    bridge.trainer = SimpleNamespace(current_epoch=1)
    bridge.on_train_epoch_start()
    assert bridge._text_channel_epoch == 1
    seen = info.item_seen > 0
    assert seen.any()
    kept = (info.text_vectors().detach() - before)[seen].norm()
    unrefitted = (info.item_text_features @ old_map.T - before)[seen].norm()
    assert 0 < kept < unrefitted
