"""data.export_split_to writes a RecBole dataset: the split, every interaction, items and users, in the atomic
format, under a name and layout that RecBole 1.2.1 loads with data_path and dataset alone."""

import sys

import numpy as np
import pytest

from lightning_bridge.data.atomic import ATOMIC_TYPES, read_atomic
from lightning_bridge.data.datamodule import AtomicFilesDataModule

FIELDS = {"inter": ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
          "item": ["item_id:token", "title:token_seq", "item_text:token_seq"],
          "user": ["user_id:token", "user_text:token_seq"]}


@pytest.fixture
def exported(tmp_path):
    """A small atomic dataset named like RecBole's bundled one, with awkward titles, exported."""
    source = tmp_path / "ml-100k"
    source.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += [f"u{u}\ti{(u + k) % 9}\t{1 + k % 5}\t{100 * u + k}" for u in range(8) for k in range(5)]
    (source / "ml-100k.inter").write_text("\n".join(rows) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\tclass:token_seq"]
    items += [f"i{i}\t\"Quoted\" Movie {i}\tDrama" for i in range(8)]  # i8 has no row
    (source / "ml-100k.item").write_text("\n".join(items) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token"]
    users += [f"u{u}\t{20 + u}\tF\twriter" for u in range(8)]
    (source / "ml-100k.user").write_text("\n".join(users) + "\n")
    out = tmp_path / "recbole"
    data = AtomicFilesDataModule(folder=str(source), cache_dir=str(tmp_path / "cache"), export_split_to=str(out))
    data.split  # noqa: B018 (the split writes the export)
    return data, out


def test_export_layout_and_atomic_format(exported):
    _, out = exported
    folder = out / "ml-100k-split"  # never RecBole's hard-wired name "ml-100k"
    suffixes = ["inter", "train.inter", "valid.inter", "test.inter", "item", "user"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"ml-100k-split.{s}" for s in suffixes)
    for suffix in suffixes:
        lines = (folder / f"ml-100k-split.{suffix}").read_text().split("\n")
        assert lines[-1] == ""  # every line ends with a newline
        header = lines[0].split("\t")
        assert header == FIELDS[suffix.rsplit(".", 1)[-1]]
        assert all(column.partition(":")[2] in ATOMIC_TYPES for column in header)
        for line in lines[1:-1]:
            assert len(line.split("\t")) == len(header) and '"' not in line, line


def test_export_holds_the_split_and_reads_back(exported):
    data, out = exported
    folder = out / "ml-100k-split"

    def pairs(suffix):
        lines = (folder / f"ml-100k-split.{suffix}").read_text().splitlines()[1:]
        return [tuple(line.split("\t")[:2]) for line in lines]

    inter = data.interactions
    for part, rows in (("train", data.split.train), ("valid", data.split.valid), ("test", data.split.test)):
        expected = {(inter.user_ids[inter.users[r]], inter.item_ids[inter.items[r]]) for r in rows}
        assert set(pairs(f"{part}.inter")) == expected
    assert sorted(pairs("inter")) == sorted(pairs("train.inter") + pairs("valid.inter") + pairs("test.inter"))
    raw = read_atomic(folder, "ml-100k-split")
    assert len(raw.users) == len(inter.users)
    assert raw.item_titles["i3"] == "'Quoted' Movie 3"
    assert raw.item_titles.get("i8") is None or raw.item_titles["i8"] == ""  # an item without text stays without
    assert "writer" in raw.user_text["u2"]
    assert np.array_equal(np.sort(raw.items), np.sort(inter.item_ids[inter.items]))


@pytest.mark.slow
def test_recbole_loads_the_export(exported, monkeypatch, tmp_path):
    recbole = pytest.importorskip("recbole", reason="RecBole 1.2.1 is not installed (pip install recbole==1.2.1 "
                                                    "in its own environment: it pins old numpy/scipy)")
    if not hasattr(np, "float"):  # RecBole 1.2.1 still names removed numpy aliases
        np.float, np.int, np.bool = float, int, bool
    from recbole.config import Config
    from recbole.data import create_dataset

    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # RecBole's Config parses the command line too
    monkeypatch.chdir(tmp_path)
    data, out = exported
    assert recbole.__version__ == "1.2.1"
    base = {"data_path": str(out), "use_gpu": False, "show_progress": False, "state": "ERROR"}
    whole = create_dataset(Config(model="BPR", dataset="ml-100k-split", config_dict=base))
    assert (whole.user_num - 1, whole.item_num - 1, whole.inter_num) == (
        data.num_users, data.num_items, len(data.interactions.users))
    features = create_dataset(Config(model="BPR", dataset="ml-100k-split", config_dict={**base, "load_col": None}))
    assert {"title", "item_text"} <= set(features.item_feat.columns)
    assert "user_text" in features.user_feat.columns
    split = create_dataset(Config(model="BPR", dataset="ml-100k-split",
                                  config_dict={**base, "benchmark_filename": ["train", "valid", "test"]}))
    assert split.file_size_list == [len(data.split.train), len(data.split.valid), len(data.split.test)]
