"""LMModule: prompt assembly, template errors, and fit / test / predict / reload through the real CLI (tiny
random backbones, synthetic data, CPU)."""

import csv
import logging

import numpy as np
import pytest
import torch
from conftest import CONFIGS, fit_in_own_folder
from peft import PeftModel

from lightning_bridge.cli import main
from lightning_bridge.models.checkpoint_contents import complete_slim_state_dict, slim_state_dict
from lightning_bridge.models.lm import LMModule
from lightning_bridge.modules.lm.backbone import ID_TOKEN, add_id_placeholder, load_backbone
from lightning_bridge.modules.lm.id_tokens import ITEM, USER, IDTokenLM
from lightning_bridge.modules.lm.prompts import PromptBuilder
from lightning_bridge.modules.lm.tiny import tiny_backbone

TINY_LM = str(CONFIGS / "tiny_lm.yaml")
ITEMS = ["apple", "banana", None, "cherry pie", "date"]
USERS = ["age 1", "age 22"]
TEMPLATE = "U {user} {user_text}. H: {history}. Next:"


def tokenizer_for(kind: str = "decoder"):
    """A tiny byte-level tokenizer: every byte is one token, so token counts are byte counts."""
    _, tokenizer = tiny_backbone(kind)
    return tokenizer, add_id_placeholder(tokenizer)


def builder(kind: str = "decoder", **kwargs) -> PromptBuilder:
    tokenizer, id_token = tokenizer_for(kind)
    return PromptBuilder(tokenizer, id_token, ITEMS, USERS, **{"template": TEMPLATE, "max_length": 128,
                                                               **kwargs})


def decoded(prompts: PromptBuilder, tokenizer, users: list[int], history: list[list[int]]) -> list[str]:
    out = prompts.build(torch.tensor(users), torch.tensor(history))
    return [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(out["input_ids"], out["attention_mask"],
                                                                     strict=True)]


# ---- prompt assembly ---------------------------------------------------------------------------------------
def test_prompt_reads_oldest_to_newest_with_id_tokens() -> None:
    tokenizer, _ = tokenizer_for()
    prompts = builder()
    (text,) = decoded(prompts, tokenizer, [1], [[-1, 0, 3, 2]])  # most recent last, -1 padding
    assert text == f"U {ID_TOKEN} age 22. H: {ID_TOKEN} apple;{ID_TOKEN} cherry pie;{ID_TOKEN}. Next:"

    out = prompts.build(torch.tensor([1]), torch.tensor([[-1, 0, 3, 2]]))
    ids = out["input_ids"][0]
    at_ids = ids == prompts.pool[prompts.seg_start[prompts.id_seg]]
    assert out["id_kind"][0][at_ids].tolist() == [USER, ITEM, ITEM, ITEM]
    assert out["id_index"][0][at_ids].tolist() == [1, 0, 3, 2]
    assert (out["id_kind"][0][~at_ids] == -1).all()


def test_truncation_drops_the_oldest_whole_items() -> None:
    tokenizer, _ = tokenizer_for()
    fixed = len(f"U {ID_TOKEN} age 1. H: . Next:") - len(ID_TOKEN) + 1  # bytes, the ID token counts as one
    # room for "date" and "cherry pie" (1 + 5 and 1 + 11 tokens, plus one separator) but not "banana"
    prompts = builder(max_length=fixed + 6 + 12 + 1, max_item_tokens=11)
    out = prompts.build(torch.tensor([0]), torch.tensor([[1, 3, 4]]))
    (text,) = decoded(prompts, tokenizer, [0], [[1, 3, 4]])
    assert text == f"U {ID_TOKEN} age 1. H: {ID_TOKEN} cherry pie;{ID_TOKEN} date. Next:"
    assert out["attention_mask"].sum() <= prompts.max_length
    # one token less and "cherry pie" goes whole, never cut to "cherry"
    (text,) = decoded(builder(max_length=prompts.max_length - 1, max_item_tokens=11), tokenizer, [0],
                      [[1, 3, 4]])
    assert text == f"U {ID_TOKEN} age 1. H: {ID_TOKEN} date. Next:"


def test_vectorised_builder_matches_a_plain_reference_on_random_batches() -> None:
    """Against a per-example string reference: byte-level tokens make every length a byte count."""
    tokenizer, _ = tokenizer_for()
    rng = np.random.default_rng(0)
    for max_length, max_item_tokens in ((128, 24), (60, 8), (40, 5)):
        prompts = builder(max_length=max_length, max_item_tokens=max_item_tokens)
        history = rng.integers(0, len(ITEMS), size=(16, 7))
        history[rng.random(history.shape) < 0.3] = -1
        users = rng.integers(0, len(USERS), size=16)
        got = decoded(prompts, tokenizer, users.tolist(), history.tolist())
        for user, row, text in zip(users, history, got, strict=True):
            texts = [" " + (ITEMS[i] or "")[: max_item_tokens - 1] if ITEMS[i] else "" for i in row if i >= 0]
            head = f"U {ID_TOKEN} {USERS[user][:max_item_tokens]}. H: "
            budget = max_length - (len(head) - len(ID_TOKEN) + 1) - len(". Next:")
            kept: list[str] = []
            for item_text in reversed(texts):  # newest first
                cost = 1 + len(item_text) + (1 if kept else 0)
                if cost > budget:
                    break
                budget -= cost
                kept.insert(0, ID_TOKEN + item_text)
            assert text == head + ";".join(kept) + ". Next:"


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_special_tokens_and_padding(kind: str) -> None:
    tokenizer, _ = tokenizer_for(kind)
    prompts = builder(kind)
    out = prompts.build(torch.tensor([0, 1]), torch.tensor([[0, 1], [-1, 4]]))
    ids, mask = out["input_ids"], out["attention_mask"]
    assert mask[0].all() and not mask[1].all() and mask[1].tolist() == sorted(mask[1].tolist(), reverse=True)
    assert (ids[1][~mask[1].bool()] == prompts.pad_id).all()  # right padding
    first, last = ids[:, 0], ids[torch.arange(2), mask.sum(1) - 1]
    if kind == "encoder":
        assert (first == tokenizer.cls_token_id).all() and (last == tokenizer.sep_token_id).all()
    else:  # Qwen-style: no BOS, no EOS
        assert tokenizer.decode(first[0]) == "U" and tokenizer.decode(last[0]) == ":"


def test_items_without_text_show_the_id_token_alone_and_are_counted(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lightning_bridge.modules.lm.prompts"):
        prompts = builder()
    assert "1 of 5 items have no text" in caplog.text
    assert prompts.item_lengths()[2] == 0


def test_template_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"missing the required field \{history\}"):
        builder(template="User {user} liked things")
    with pytest.raises(ValueError, match=r"\{items\} is not one of"):
        builder(template="{history} {items}")
    with pytest.raises(ValueError, match=r"\{history\} appears more than once"):
        builder(template="{history} and again {history}")
    with pytest.raises(ValueError, match="max_length=20 leaves no room"):
        builder(max_length=20)


def test_tiny_backbones_ignore_the_global_seed() -> None:
    torch.manual_seed(1)
    a, _ = tiny_backbone("decoder")
    after = torch.rand(1)
    torch.manual_seed(2)
    b, _ = tiny_backbone("decoder")
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)  # the global RNG is left where it was
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_param_groups_and_slim_state() -> None:
    model = LMModule(6, 5, backbone="tiny-encoder", embedding_dim=8, info_lr=0.1, head_lr=0.01)
    groups = model.param_groups()
    assert [g.get("lr") for g in groups] == [None, 0.01, 0.1]
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_parameters()) == len(
        [p for p in model.parameters() if p.requires_grad])
    slim = slim_state_dict(model, model.state_dict())
    assert "recommender.info.user.weight" in slim and any("lora_A" in k for k in slim)
    assert not any("lora_" not in k and "recommender.network.backbone" in k and k.endswith("weight") for k in slim)
    with pytest.raises(RuntimeError, match=r"missing keys \['recommender.info.item.weight'\]"):
        complete_slim_state_dict(model, {k: v for k, v in slim.items() if k != "recommender.info.item.weight"})
    with pytest.raises(RuntimeError, match="unexpected keys"):
        complete_slim_state_dict(model, {**slim, "extra.weight": torch.zeros(1)})
    complete_slim_state_dict(model, slim)
    assert slim.keys() == model.state_dict().keys()
    model.load_state_dict(slim)  # strict


def test_modules_train_in_train_mode_and_dropout_can_be_switched_off() -> None:
    """from_pretrained hands back eval-mode models; Lightning would keep them so (and drop dropout)."""
    model = LMModule(6, 5, backbone="tiny-encoder", embedding_dim=8, backbone_dropout=None, lora_dropout=0.1)
    assert all(m.training for m in model.modules())
    assert model.recommender.network.backbone.base_model.model.config.hidden_dropout_prob == 0.1  # BERT's default
    quiet = LMModule(6, 5, backbone="tiny-encoder", embedding_dim=8)  # no dropout by default
    config = quiet.recommender.network.backbone.base_model.model.config
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.0
    inputs = {"input_ids": torch.tensor([[2, 40, 41, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
              "id_kind": torch.full((1, 4), -1), "id_index": torch.zeros(1, 4, dtype=torch.long)}
    train_mode = quiet.recommender.network.scores(**inputs, info=quiet.info)
    torch.testing.assert_close(quiet.eval().recommender.network.scores(**inputs, info=quiet.info), train_mode)


# ---- the real CLI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny fit through the CLI, shared by the tests below (each only reads it)."""
    cli, root = fit_in_own_folder(tmp_path_factory, "lm_run", ["--config", TINY_LM])
    (run,) = sorted((root / "logs" / "run").iterdir())
    return cli, root, run


def _scores(model: LMModule, datamodule) -> torch.Tensor:
    model.eval()
    batch = datamodule.test_dataloader().dataset[(0, 0)]
    with torch.no_grad():
        return model.recommender.scores(batch)


def test_fit_logs_ranking_metrics_and_writes_slim_checkpoints(fitted) -> None:
    cli, _, run = fitted
    metrics = cli.trainer.callback_metrics
    for key in ("lm/val/ndcg@10", "lm/val/hr@20", "lm/val/sparse_ndcg@10", "train/lm_loss"):
        assert key in metrics
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = set(ckpt["state_dict"])
    assert {"recommender.info.user.weight", "recommender.info.item.weight", "recommender.network.out_proj.weight",
            "recommender.network.injector.item_proj.weight"} <= keys
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
    assert not any("base_layer" in k or "embed_tokens" in k for k in keys)  # frozen weights left out
    assert ckpt["optimizer_states"] and ckpt["optimizer_states"][0]["state"]


def test_checkpoint_reload_gives_identical_scores(fitted, tmp_path) -> None:
    cli, _, run = fitted
    expected = _scores(cli.model, cli.datamodule)
    reloaded = LMModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    reloaded.recommender.attach(cli.datamodule)
    torch.testing.assert_close(_scores(reloaded, cli.datamodule), expected, rtol=0, atol=0)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    del ckpt["state_dict"]["recommender.network.out_proj.weight"]
    torch.save(ckpt, tmp_path / "broken.ckpt")
    with pytest.raises(RuntimeError, match=r"missing keys \['recommender.network.out_proj.weight'\]"):
        LMModule.load_from_checkpoint(tmp_path / "broken.ckpt")


def test_test_and_predict_from_checkpoint_write_raw_ids(fitted, in_tmp) -> None:
    cli, _, run = fitted
    ckpt = str(run / "checkpoints" / "last.ckpt")
    tested = main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt])
    metrics = tested.trainer.callback_metrics
    assert 0.0 <= float(metrics["lm/test/ndcg@10"]) <= 1.0 and "lm/test/sparse_mrr@5" in metrics
    torch.testing.assert_close(_scores(tested.model, tested.datamodule), _scores(cli.model, cli.datamodule),
                               rtol=0, atol=0)

    out = in_tmp / "top.tsv"
    predicted = main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", ckpt,
                      "--predictions.path", str(out), "--model.init_args.predict_top_k", "3"])
    with out.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    data = predicted.datamodule
    inter = data.interactions
    assert len(rows) == data.num_users * 3
    seen = {(str(inter.user_ids[u]), str(inter.item_ids[i])) for u, i in zip(inter.users, inter.items, strict=True)}
    assert {r["user_id"] for r in rows} == {str(u) for u in inter.user_ids}
    assert all((r["user_id"], r["item_id"]) not in seen for r in rows)  # everything known is masked
    assert all(r["item_id"] in set(map(str, inter.item_ids)) and r["title"] for r in rows)


def test_adapter_save_and_reload_give_identical_scores(fitted, tmp_path) -> None:
    cli, _, _ = fitted
    model, data = cli.model, cli.datamodule
    expected = _scores(model, data)
    model.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    head = {k: v for k, v in model.state_dict().items() if "backbone" not in k}

    fresh = LMModule(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})
    fresh.load_state_dict(head, strict=False)
    fresh.recommender.attach(data)
    assert not torch.equal(_scores(fresh, data), expected)  # the trained LoRA matters
    fresh.load_adapter(tmp_path / "adapter")
    torch.testing.assert_close(_scores(fresh, data), expected, rtol=0, atol=0)

    # and with peft alone, from the backbone's source
    base, _, is_decoder = load_backbone(model.hparams.backbone, finetune="frozen")
    rec = IDTokenLM(PeftModel.from_pretrained(base, tmp_path / "adapter"), model.info.dim,
                        model.recommender.network.id_token_id, is_decoder=is_decoder).eval()
    rec.load_state_dict({k.removeprefix("recommender.network."): v for k, v in head.items()
                         if k.startswith("recommender.network.")}, strict=False)
    batch = data.test_dataloader().dataset[(0, 0)]
    with torch.no_grad():
        torch.testing.assert_close(rec.scores(**model.recommender.encode(batch), info=model.info), expected,
                                   rtol=0, atol=0)


def test_lm_only_resume_with_dropout_matches_an_uninterrupted_run(in_tmp):
    dropout = ["--model.init_args.lora_dropout", "0.3", "--model.init_args.backbone_dropout", "0.3"]
    full = main(["fit", "--config", TINY_LM, *dropout, "--trainer.max_epochs", "2",
                 "--trainer.logger.init_args.name", "full"])
    main(["fit", "--config", TINY_LM, *dropout, "--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "part"])
    part = in_tmp / "logs" / "part" / "version_0"
    resumed = main(["fit", "--config", str(part / "config.yaml"), "--trainer.max_epochs", "2",
                    "--ckpt_path", str(part / "checkpoints" / "last.ckpt")])
    assert resumed.trainer.global_step == full.trainer.global_step
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
