"""Files that changed after they were written are errors naming them: a checkpoint failing its zip CRC, an
export file whose sha256 differs from the export's manifest, and export files that contradict each other
(counts, widths, duplicate ids, out-of-range rows), instead of other rankings or a deep torch error."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest
import torch
from builders import cli
from safetensors.torch import load_file, save_file

from lightning_bridge.serving.manifest import MANIFEST, ExportIntegrityError
from lightning_bridge.serving.recommender import load_recommender


def _flip_a_weight_byte(checkpoint: Path) -> None:
    """Flips one byte inside a stored tensor (torch writes them uncompressed): the archive stays readable."""
    with zipfile.ZipFile(checkpoint) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    data = bytearray(checkpoint.read_bytes())
    name_len, extra_len = int.from_bytes(data[member.header_offset + 26: member.header_offset + 28], "little"), \
        int.from_bytes(data[member.header_offset + 28: member.header_offset + 30], "little")
    data[member.header_offset + 30 + name_len + extra_len + 7] ^= 0x40
    checkpoint.write_bytes(bytes(data))


def test_a_checkpoint_with_a_flipped_weight_byte_is_refused(run_copy):
    checkpoint = run_copy / "checkpoints" / "last.ckpt"
    _flip_a_weight_byte(checkpoint)
    torch.load(checkpoint, weights_only=True)  # torch alone loads it, with another weight
    status, message = cli("test", "--config", str(run_copy / "config.yaml"), "--ckpt_path", str(checkpoint))
    assert status == 1
    assert f"{checkpoint}: cannot be read as a checkpoint: corrupt (its member 'archive/data/" in message
    assert "fails its CRC check: the file changed after it was written)" in message


def _export(run_copy: Path) -> Path:
    return run_copy / "export"


def test_the_export_carries_a_manifest_of_every_file(run_copy):
    folder = _export(run_copy)
    manifest = json.loads((folder / MANIFEST).read_text())
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert set(manifest["files"]) == written >= {"recommender.json", "id_maps.json", "texts.json",
                                                 "histories.safetensors", "info_sharing.safetensors",
                                                 "domain.safetensors"}
    assert manifest["files"]["info_sharing.safetensors"]["tensors"] == {"domain.item": [40, 16],
                                                                      "domain.user": [60, 16]}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())


def _edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


CHANGED = [
    ("swapped_users", "id_maps.json",
     lambda p: _edit_json(p, lambda v: v.update(users=[v["users"][1], v["users"][0], *v["users"][2:]]))),
    ("num_layers", "recommender.json", lambda p: _edit_json(p, lambda v: v["domain"].update(num_layers=7))),
    ("flipped_table_byte", "info_sharing.safetensors",
     lambda p: p.write_bytes(p.read_bytes()[:-5] + bytes([p.read_bytes()[-5] ^ 1]) + p.read_bytes()[-4:])),
]


@pytest.mark.parametrize(("name", "edit"), [c[1:] for c in CHANGED], ids=[c[0] for c in CHANGED])
def test_an_export_file_changed_after_export_is_named(run_copy, name, edit):
    path = _export(run_copy) / name
    edit(path)
    with pytest.raises(ExportIntegrityError, match=rf"^{path}: (sha256 [0-9a-f]{{16}}\.\.\. does not match "
                                                   rf"manifest.json's|\d+ bytes, but manifest.json records)"):
        load_recommender(_export(run_copy))


def test_a_truncated_export_file_is_named(run_copy):
    path = _export(run_copy) / "info_sharing.safetensors"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(ExportIntegrityError, match=rf"^{path}: {size // 2} bytes, but manifest.json records {size} "
                                                   r"\(the file changed after export: truncated or replaced\)"):
        load_recommender(_export(run_copy))


def test_a_file_the_manifest_lists_but_that_is_gone_is_named(run_copy):
    (_export(run_copy) / "texts.json").unlink()
    with pytest.raises(ExportIntegrityError, match=r"texts.json: listed in manifest.json but missing"):
        load_recommender(_export(run_copy))


# Without a manifest (an export written by an older version, or edited with its manifest removed), the files
# are still checked against each other.
def _without_manifest(run_copy: Path, caplog) -> Path:
    (_export(run_copy) / MANIFEST).unlink()
    caplog.set_level(logging.WARNING)
    return _export(run_copy)


def _retensor(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


INCONSISTENT = [
    ("duplicate_item", "id_maps.json", lambda p: _edit_json(p, lambda v: v["items"].__setitem__(5, v["items"][3])),
     r"id_maps.json: items\[5\]: id '(\w+)' repeats items\[3\]; each row of a table has one id"),
    ("padded_user", "id_maps.json", lambda p: _edit_json(p, lambda v: v["users"].__setitem__(2, "10\u2003")),
     r"id_maps.json: users\[2\]: id '10\\u2003' has whitespace \(U\+2003 EM SPACE\) at its end"),
    ("num_users", "recommender.json", lambda p: _edit_json(p, lambda v: v.update(num_users=61)),
     r"recommender.json: num_users is 61, but .*id_maps.json lists 60 users"),
    ("embedding_dim", "recommender.json", lambda p: _edit_json(p, lambda v: v.update(embedding_dim=32)),
     r"info_sharing.safetensors: domain.user has shape \[60, 16\], but recommender.json says num_users=60, "
     r"embedding_dim=32"),
    ("encoder_settings", "recommender.json", lambda p: _edit_json(p, lambda v: v["domain"].update(encoder="sasrec",
                                                                                               loss="ce")),
     r"recommender.json: its domain settings do not build a sasrec encoder: model.max_len must be at least 1"),
    ("encoder_weights", "recommender.json", lambda p: _edit_json(p, lambda v: v["domain"].update(
        encoder="sasrec", loss="ce", max_len=5, num_blocks=1, num_heads=1, dropout=0.1)),
     r"domain.safetensors: the encoder's weights do not fit recommender.json's domain settings \(Missing key"),
    ("history_range", "histories.safetensors",
     lambda p: _retensor(p, lambda t: t["items"].__setitem__(0, 40)),
     r"histories.safetensors: items holds item rows outside 0..39 \(min \d+, max 40\)"),
    ("graph_range", "domain.safetensors",
     lambda p: _retensor(p, lambda t: t["graph.users"].__setitem__(0, -1)),
     r"domain.safetensors: graph.users holds user rows outside 0..59 \(min -1"),
    ("truncated", "info_sharing.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]),
     r"info_sharing.safetensors: not a readable safetensors file \(truncated or damaged"),
    ("texts", "texts.json", lambda p: _edit_json(p, lambda v: v["item_titles"].pop()),
     r"texts.json: item_titles must list one entry per row of id_maps.json \(40\), found 39"),
    ("text_type", "texts.json", lambda p: _edit_json(p, lambda v: v["item_text"].__setitem__(4, 7)),
     r"texts.json: item_text\[4\] must be a text or null, found 7"),
]


@pytest.mark.parametrize(("name", "edit", "expected"), [c[1:] for c in INCONSISTENT], ids=[c[0] for c in INCONSISTENT])
def test_export_files_that_contradict_each_other_are_named(run_copy, caplog, name, edit, expected):
    folder = _without_manifest(run_copy, caplog)
    edit(folder / name)
    with pytest.raises(ExportIntegrityError, match=expected):
        load_recommender(folder)
    assert f"{folder}: no manifest.json (written by an older version): its files' integrity cannot be checked" \
        in caplog.text


MALFORMED = [
    ("hyper_parameters_text", lambda c: c.update(hyper_parameters="junk"),
     "its 'hyper_parameters' must be a dict, found str"),
    ("state_dict_list", lambda c: c.update(state_dict=[1, 2]), "its 'state_dict' must map weight names to tensors"),
    ("fingerprint_fields", lambda c: c.update(dataset_fingerprint={"name": "x"}),
     "its 'dataset_fingerprint' lacks num_users, num_items, num_interactions, user_ids_sha256, item_ids_sha256, "
     "interactions_sha256: edited or damaged"),
    ("weight_missing", lambda c: c["state_dict"].pop("recommender.info.user.weight"),
     "its weights do not fit the model as configured (Missing key(s) in state_dict: "
     "\"recommender.info.user.weight\".)"),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_checkpoint_with_malformed_entries_is_named(run_copy, edit, expected):
    checkpoint = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)
    edit(checkpoint)
    path = run_copy.parent / "edited.ckpt"
    torch.save(checkpoint, path)
    status, message = cli("test", "--config", str(run_copy / "config.yaml"), "--ckpt_path", str(path))
    assert status == 1 and f"CheckpointError: {path}: {expected}" in message


def test_a_damaged_lm_head_is_named_with_or_without_the_manifest(in_tmp):
    from hostile_common import TINY_LM

    assert cli("fit", "--config", TINY_LM) == (0, "")
    folder = in_tmp / "logs" / "run" / "version_0" / "export"
    head = folder / "lm" / "head.safetensors"
    head.write_bytes(head.read_bytes()[:64])
    with pytest.raises(ExportIntegrityError, match=rf"^{head}: 64 bytes, but manifest.json records \d+"):
        load_recommender(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(ExportIntegrityError, match=rf"^{head}: not a readable safetensors file"):
        load_recommender(folder)


def test_a_checkpoint_with_non_finite_weights_is_not_exported(run_copy):
    from lightning_bridge.run.checkpoints import CheckpointError
    from lightning_bridge.serving.export import main as export_main

    checkpoint = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["recommender.info.item.weight"][0, 0] = float("inf")
    path = run_copy.parent / "inf.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: holds non-finite weights: recommender.info.item.weight "
                                              r"\(1 of 640 values\)"):
        export_main(["artefacts", str(path), "--out", str(run_copy.parent / "out")])
    assert not (run_copy.parent / "out").exists()
