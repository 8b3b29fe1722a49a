"""data.export_split_to writes a RecBole dataset: the split, every interaction, items and users (their text and
the source's own columns), in the atomic format, under a name and layout that RecBole 1.2.1 loads with data_path
and dataset alone."""

import json
import sys

import numpy as np
import pytest

from lightning_bridge.data.atomic import ATOMIC_TYPES, read_atomic
from lightning_bridge.data.datasets import AtomicFilesDataModule, CSVDataModule, MovieLensDataModule

FIELDS = {"inter": ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
          "item": ["item_id:token", "title:token_seq", "item_text:token_seq", "movie_title:token_seq",
                   "class:token_seq"],
          "user": ["user_id:token", "user_text:token_seq", "age:token", "gender:token", "occupation:token"]}
GENRES = "|".join("1" if g in (3, 5) else "0" for g in range(19))  # Animation, Comedy


def _table(path):
    """{id: {field: value}} of an exported .item / .user file, and its header."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    names = [column.partition(":")[0] for column in header]
    return header, {row[0]: dict(zip(names, row, strict=True)) for row in (line.split("\t") for line in lines[1:])}


@pytest.fixture
def exported(tmp_path):
    """A small atomic dataset named like RecBole's bundled one, with awkward titles, exported."""
    source = tmp_path / "ml-100k"
    source.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += [f"u{u}\ti{(u + k) % 9}\t{1 + k % 5}\t{100 * u + k}" for u in range(8) for k in range(5)]
    (source / "ml-100k.inter").write_text("\n".join(rows) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\tclass:token_seq\ttitle:token_seq"]
    items += [f"i{i}\t\"Quoted\" Movie {i}\tDrama\tOwn title" for i in range(8)]  # i8 has no row
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


def test_export_keeps_the_atomic_folders_own_columns(exported):
    data, out = exported
    folder = out / "ml-100k-split"
    header, items = _table(folder / "ml-100k-split.item")
    assert header.count("title:token_seq") == 1  # the source's own "title" does not come twice
    assert items["i3"]["movie_title"] == "'Quoted' Movie 3" and items["i3"]["class"] == "Drama"
    assert items["i8"]["movie_title"] == ""  # no row in the source: empty fields, not a shorter line
    _, users = _table(folder / "ml-100k-split.user")
    assert (users["u2"]["age"], users["u2"]["gender"], users["u2"]["occupation"]) == ("22", "F", "writer")
    again = read_atomic(folder, "ml-100k-split")  # the export read as an atomic folder keeps them all
    assert again.item_features.types == {"title": "token_seq", "item_text": "token_seq",
                                         "movie_title": "token_seq", "class": "token_seq"}
    assert again.item_features.values["i3"][2:] == ["'Quoted' Movie 3", "Drama"]
    assert data.interactions.item_features.values["i3"][2] == "Own title"  # kept in memory, not exported
    assert again.user_features.values["u2"][1:] == ["22", "F", "writer"]


@pytest.fixture
def ml100k(tmp_path):
    """A GroupLens ml-100k folder of four users and four movies."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("".join(f"{u}\t{(u + k) % 4 + 1}\t{1 + k}\t{100 * u + k}\n"
                                           for u in range(1, 5) for k in range(3)))
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (199{i})|01-Jan-199{i}||http://x|{GENRES}\n"
                                           for i in range(1, 5)), encoding="latin-1")
    (folder / "u.user").write_text("".join(f"{u}|{20 + u}|M|technician|8571{u}\n" for u in range(1, 5)))
    return folder


def test_ml100k_export_keeps_the_grouplens_fields(ml100k, tmp_path):
    out = tmp_path / "recbole"
    data = MovieLensDataModule(data_dir=str(ml100k), cache_dir=str(tmp_path / "cache"), export_split_to=str(out))
    data.split  # noqa: B018 (the split writes the export)
    folder = out / "ml-100k-split"
    header, users = _table(folder / "ml-100k-split.user")
    assert header == ["user_id:token", "user_text:token_seq", "age:token", "gender:token", "occupation:token",
                      "zip_code:token"]
    assert users["3"] == {"user_id": "3", "user_text": "age 23, gender M, occupation technician", "age": "23",
                          "gender": "M", "occupation": "technician", "zip_code": "85713"}
    header, items = _table(folder / "ml-100k-split.item")
    assert header == ["item_id:token", "title:token_seq", "item_text:token_seq", "movie_title:token_seq",
                      "release_year:token", "class:token_seq"]
    assert items["2"] == {"item_id": "2", "title": "Movie 2 (1992)", "item_text": "Movie 2 (1992); genres: "
                          "Animation, Comedy", "movie_title": "Movie 2", "release_year": "1992",
                          "class": "Animation Comedy"}
    cached = MovieLensDataModule(data_dir=str(ml100k), cache_dir=str(tmp_path / "cache")).interactions
    assert cached.user_features == data.interactions.user_features  # a cache hit keeps the fields too


def test_a_cache_without_the_fields_is_parsed_again(ml100k, tmp_path, monkeypatch, caplog):
    """A parsed-data cache from before the fields were kept never serves data without them: the format is part
    of its key, and a file of the current format that lacks them is read as damaged and parsed again."""
    from lightning_bridge.data import parsed_cache

    files = sorted(ml100k.iterdir())
    keys = {parsed_cache.content_key("grouplens", files)}
    monkeypatch.setattr(parsed_cache, "FORMAT", "lightning_bridge parsed-data cache v3")
    keys.add(parsed_cache.content_key("grouplens", files))
    monkeypatch.undo()
    assert len(keys) == 2
    cache = tmp_path / "cache"
    MovieLensDataModule(data_dir=str(ml100k), cache_dir=str(cache)).interactions  # noqa: B018 (writes the cache)
    (stored,) = cache.rglob("*.json")
    text = json.loads(stored.read_text())
    del text["user_features"]
    with np.load(stored.with_suffix(".npz")) as arrays:
        text["sha256"] = parsed_cache._digest({k: arrays[k] for k in parsed_cache.ARRAYS}, text)
    stored.write_text(json.dumps(text))
    again = MovieLensDataModule(data_dir=str(ml100k), cache_dir=str(cache)).interactions
    assert again.user_features.values["3"] == ["23", "M", "technician", "85713"]
    assert "ignoring unreadable parsed-data cache" in caplog.text


def test_csv_item_columns_are_exported_sanitised(tmp_path):
    (tmp_path / "ratings.csv").write_text("".join(f"u{u},m{(u + k) % 3},{k}\n" for u in range(3) for k in range(3))
                                          .join(["user,movie,time\n", ""]))
    (tmp_path / "items.csv").write_text('movie,title,tag line\nm0,Alien,"in space\tno one ""hears"""\n'
                                        "m1,Heat,\nm2,Fargo,snow\n")
    out = tmp_path / "recbole"
    data = CSVDataModule(path=str(tmp_path / "ratings.csv"), user_field="user", item_field="movie",
                         time_field="time", items_path=str(tmp_path / "items.csv"),
                         cache_dir=str(tmp_path / "cache"), export_split_to=str(out))
    data.split  # noqa: B018 (the split writes the export)
    (folder,) = out.iterdir()
    (item_file,) = folder.glob("*.item")
    header, items = _table(item_file)
    assert header == ["item_id:token", "title:token_seq", "item_text:token_seq", "tag_line:token_seq"]
    assert items["m0"]["tag_line"] == "in space no one 'hears'"


@pytest.mark.slow
def test_recbole_loads_the_export(exported, monkeypatch, tmp_path):
    recbole = pytest.importorskip("recbole", reason="RecBole 1.2.1 is not installed (pip install recbole==1.2.1 "
                                                    "in its own environment: it pins old numpy/scipy)")
    if int(pytest.importorskip("pandas").__version__.split(".")[0]) >= 3:
        pytest.skip("RecBole 1.2.1 fails under pandas 3 (its chained fillna(inplace=True) no longer writes); "
                    "run in the environment bench/README.md gives")
    aliases = {"float": float, "int": int, "bool": bool, "float_": np.float64, "complex_": np.complex128,
               "unicode_": np.str_}  # RecBole 1.2.1 still names numpy aliases that numpy 2 removed
    for name, value in aliases.items():
        if not hasattr(np, name):
            monkeypatch.setattr(np, name, value, raising=False)
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
    assert {"title", "item_text", "movie_title", "class"} <= set(features.item_feat.columns)
    assert {"user_text", "age", "gender", "occupation"} <= set(features.user_feat.columns)
    assert features.field2type["age"].value == "token" and features.field2type["class"].value == "token_seq"
    split = create_dataset(Config(model="BPR", dataset="ml-100k-split",
                                  config_dict={**base, "benchmark_filename": ["train", "valid", "test"]}))
    assert split.file_size_list == [len(data.split.train), len(data.split.valid), len(data.split.test)]
