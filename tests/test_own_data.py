"""Your own data: delimited files with named columns, chosen item text, k-core filtering, rating threshold."""

import re
from pathlib import Path

import numpy as np
import pytest

from lightning_bridge.cli import main
from lightning_bridge.data.datasets import AtomicFilesDataModule, CSVDataModule
from lightning_bridge.data.delimited import read_delimited
from lightning_bridge.data.interactions import Interactions, k_core
from lightning_bridge.data.sources import RawData
from lightning_bridge.data.tables import DataFormatError

ROOT = Path(__file__).parent.parent


def _readme_example() -> dict[str, str]:
    """The README's "Your own data" files, by the name the text before each block gives it."""
    section = ROOT.joinpath("README.md").read_text().split("### Your own data", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"`([\w.]+)`[^`]*?:\n\n```\w+\n(.*?)```", section, re.S)
    return dict(blocks)


def test_the_readmes_own_data_example_trains(in_tmp):
    files = _readme_example()
    assert sorted(files) == ["items.csv", "my_data.yaml", "ratings.csv"]
    assert len(files["ratings.csv"].strip().splitlines()) == 10
    for name, text in files.items():
        (in_tmp / name).write_text(text)
    cli = main(["fit", "--config", str(ROOT / "configs" / "ml100k_lightgcn.yaml"), "--config", "my_data.yaml",
                "--trainer.max_epochs", "1", "--export_after_fit", "false"])
    data = cli.datamodule
    assert (data.num_users, data.num_items) == (3, 4)
    assert cli.trainer.global_step == 1
    inter = data.interactions
    text = dict(zip(inter.item_ids, inter.item_text, strict=True))
    assert text == {"m1": "Heat, The Remake; genres: Crime|Drama", "m2": "Toy Story; genres: Animation|Comedy",
                    "m3": "Alien; genres: Horror|Sci-Fi", "m4": "Fargo; genres: Crime|Comedy"}
    tested = {inter.user_ids[inter.users[r]]: inter.item_ids[inter.items[r]] for r in data.split.test}
    assert tested == {"ann": "m3", "bob": "m4", "cy": "m2"}  # the last by date, not by line


def test_k_core_iterates_to_a_fixed_point():
    # d has one interaction; dropping it leaves z with one, dropping (c, z) leaves c with one
    pairs = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z"), ("d", "z")]
    users, items = (np.array(column) for column in zip(*pairs, strict=True))
    _, user_codes = np.unique(users, return_inverse=True)
    _, item_codes = np.unique(items, return_inverse=True)
    keep = k_core(user_codes, item_codes, 2, 2)
    assert [p for p, k in zip(pairs, keep, strict=True) if k] == pairs[:4]

    raw = RawData(users, items, np.ones(7, np.float32), np.arange(7), {}, {}, {}, "pairs")
    inter = Interactions.from_raw(raw, min_user_interactions=2, min_item_interactions=2)
    assert list(inter.user_ids) == ["a", "b"] and list(inter.item_ids) == ["x", "y"]
    assert sorted(zip(inter.users.tolist(), inter.items.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(DataFormatError, match=r"pairs: no interactions left after k-core filtering "
                                              r"\(min_user_interactions=3, min_item_interactions=3\)"):
        Interactions.from_raw(raw, min_user_interactions=3, min_item_interactions=3)


def test_tsv_with_typed_header_threshold_and_k_core(tmp_path):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"u{u}\ti{i}\t{5 if i < 4 else 1}\t{10 * u + i}" for u in range(6) for i in range(6)]
    path = tmp_path / "data.inter.tsv"
    path.write_text("\n".join(lines) + "\n")
    data = CSVDataModule(str(path), separator="\t", time_field="timestamp", rating_field="rating",
                         rating_threshold=3, min_user_interactions=4, min_item_interactions=4)
    assert (data.num_users, data.num_items, len(data.interactions.users)) == (6, 4, 24)  # i4, i5 rated 1
    assert data.name() == "data.inter"
    strict = CSVDataModule(str(path), separator="\t", time_field="timestamp", rating_field="rating",
                           rating_threshold=3, min_user_interactions=5)
    with pytest.raises(DataFormatError, match="no interactions left after k-core filtering"):
        _ = strict.num_users


def test_multi_character_separator_and_file_order(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("UserID::MovieID\n1::10\n1::11\n")
    raw = read_delimited(path, "::", "UserID", "MovieID")
    assert raw.users.tolist() == ["1", "1"] and raw.items.tolist() == ["10", "11"]
    assert raw.timestamps.tolist() == [0, 1] and raw.ratings.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("content", "options", "error"), [
    ("user,item\nu1,i1\nu1,i2,3\n", {}, r"ratings\.csv, line 3: expected 2 ','-separated fields \(user, item\), "
                                        r"found 3"),
    ("userId,movieId\nu1,i1\n", {}, r"ratings\.csv, line 1: the header lacks the field\(s\) 'user', 'item'; found "
                                    r"'userId', 'movieId'"),
    ("user,item,time\nu1,i1,2021-03-01\nu1,i2,yesterday\n", {"time_field": "time"},
     r"ratings\.csv, line 3: expected a number or an ISO 8601 date .* found 'yesterday'"),
    ("user,item,rating\nu1,i1,5\nu1,i2,five\n", {"rating_field": "rating"},
     r"ratings\.csv, line 3: expected a finite number as rating in field 3, found 'five'"),
    ("user,item\n", {}, r"ratings\.csv: no interactions"),
])
def test_bad_interaction_files_are_named_with_their_line(tmp_path, content, options, error):
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=error):
        read_delimited(path, ",", "user", "item", **options)


def test_item_file_text_fields_and_bad_item_files(tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user,item\nu1,i1\nu1,i2\n")
    items = tmp_path / "items.csv"
    items.write_text("item,title,brand,price\ni1,Lipstick,Acme,10.99\ni2,Soap,,3.50\n")
    everything = read_delimited(ratings, ",", "user", "item", items_path=items)
    assert everything.item_text == {"i1": "Lipstick; brand: Acme; price: 10.99", "i2": "Soap; price: 3.50"}
    chosen = read_delimited(ratings, ",", "user", "item", items_path=items, item_text_fields=["brand"])
    assert chosen.item_text == {"i1": "Lipstick; brand: Acme", "i2": "Soap"}
    assert chosen.item_titles == {"i1": "Lipstick", "i2": "Soap"}
    with pytest.raises(DataFormatError, match=r"items\.csv, line 1: the header lacks the field\(s\) 'colour'"):
        read_delimited(ratings, ",", "user", "item", items_path=items, item_text_fields=["colour"])
    items.write_text("item,title\ni1,Lipstick\ni1,Soap\n")
    with pytest.raises(DataFormatError, match=r"items\.csv, line 3: duplicate item id 'i1', first given on line 2"):
        read_delimited(ratings, ",", "user", "item", items_path=items)


def test_atomic_item_text_fields_and_the_cache_follow_the_chosen_fields(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\n" + "".join(
        f"u{u}\ti{i}\n" for u in range(3) for i in range(3)))
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\tcategories:token_seq\tprice:float\n"
                                      "i0\tLipstick\tMakeup Lips\t10.99\ni1\tSoap\tBath\t3.5\n")
    cache = str(tmp_path / "cache")
    everything = AtomicFilesDataModule(str(folder), cache_dir=cache)
    assert everything.item_text[:2] == ["Lipstick; categories: Makeup Lips; price: 10.99",
                                      "Soap; categories: Bath; price: 3.5"]
    chosen = AtomicFilesDataModule(str(folder), cache_dir=cache, item_text_fields=["categories"])
    assert chosen.item_text[:2] == ["Lipstick; categories: Makeup Lips", "Soap; categories: Bath"]  # not cached
    with pytest.raises(DataFormatError, match=r"shop\.item: item_text_fields names 'colour', which the header lacks"):
        _ = AtomicFilesDataModule(str(folder), cache_dir=cache, item_text_fields=["colour"]).num_items


def test_csv_data_is_cached_per_reader_options(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,i,t\n" + "".join(f"u{u},i{i},{9 - i}\n" for u in range(3) for i in range(4)))
    cache = str(tmp_path / "cache")
    by_time = CSVDataModule(str(path), user_field="u", item_field="i", time_field="t", cache_dir=cache)
    in_order = CSVDataModule(str(path), user_field="u", item_field="i", cache_dir=cache)
    assert by_time.interactions.timestamps.tolist()[:4] == [9, 8, 7, 6]
    assert in_order.interactions.timestamps.tolist()[:4] == [0, 1, 2, 3]  # the file's order, not the cached times
    assert len(list((tmp_path / "cache" / "parsed").glob("*.npz"))) == 2
