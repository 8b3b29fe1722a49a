"""Requests are checked at the door, by ``recommend()`` and by ``predict --predict_for``: each malformed request
is an error naming the argument (or file and line) and what was expected, never a misread request or a torch
traceback (the issue's cases: ``user_ids="12"`` answered for users 1 and 2, ``k=-3`` a torch error, an empty
users file exited 0 writing nothing, ``12#3`` predicted for ``12``, two histories under one label)."""

from __future__ import annotations

import pytest
from builders import cli

from lightning_bridge.serving.recommender import load_recommender


@pytest.fixture(scope="module")
def recommender(domain_run):
    return load_recommender(domain_run / "export")


BAD_CALLS = [
    ("user_ids_string", {"user_ids": "12"}, TypeError,
     "user_ids must be a list of ids, got the string '12' (which would be read as its characters); write ['12']"),
    ("history_string", {"history": "12"}, TypeError, "history must be a list of ids, got the string '12'"),
    ("user_ids_empty", {"user_ids": []}, ValueError, "user_ids is empty; expected at least one id"),
    ("history_empty", {"history": []}, ValueError, "history is empty; expected at least one id"),
    ("k_zero", {"user_ids": ["12"], "k": 0}, ValueError, "k must be at least 1, got 0"),
    ("k_negative", {"user_ids": ["12"], "k": -3}, ValueError, "k must be at least 1, got -3"),
    ("k_float", {"user_ids": ["12"], "k": 2.5}, TypeError, "k must be a whole number of items, got 2.5"),
    ("k_string", {"user_ids": ["12"], "k": "5"}, TypeError, "k must be a whole number of items, got '5'"),
    ("unknown_history", {"history": ["nope", "never"]}, ValueError,
     "histories (history): 2 unknown item id(s): 'nope', 'never'; the model knows only the items"),
    ("unknown_user", {"user_ids": ["12", "ghost"]}, ValueError, "user_ids: 1 unknown user id(s): 'ghost'"),
    ("repeated_user", {"user_ids": ["12", "3", "12"]}, ValueError,
     "user_ids[2]: id '12' is given twice (first as user_ids[0])"),
    ("padded_user", {"user_ids": ["12\u2003"]}, ValueError,
     "user_ids[0]: id '12\\u2003' has whitespace (U+2003 EM SPACE) at its end"),
    ("nul_in_history", {"history": ["1", "2\x00"]}, ValueError,
     "history[1]: id '2\\x00' has a control character (U+0000 NUL) at its end"),
    ("float_id", {"user_ids": [12.0]}, TypeError, "user_ids[0]: expected an id (a string or a whole number), got 12.0"),
    ("same_label_twice", {"histories": {1: ["1"], "1": ["2"]}}, ValueError,
     "histories' labels[1]: id '1' is given twice (first as histories' labels[0])"),
    ("label_of_history", {"history": ["1"], "histories": {"history": ["2"]}}, ValueError,
     "histories['history']: the label 'history' is history's; give this user another"),
    ("histories_list", {"histories": [["1"]]}, TypeError,
     "histories must map each new user's label to their items, got list"),
]


@pytest.mark.parametrize(("kwargs", "error", "expected"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_a_malformed_recommend_call_is_named(recommender, kwargs, error, expected):
    with pytest.raises(error) as raised:
        recommender.recommend(**kwargs)
    assert str(raised.value).startswith(expected)


def test_whole_numbers_are_ids_and_a_history_may_repeat_an_item(recommender):
    (by_number,) = recommender.recommend(user_ids=[12], k=3)
    (by_string,) = recommender.recommend(user_ids=["12"], k=3)
    assert by_number.user == "12" and by_number.items == by_string.items and len(by_number.items) == 3
    (new,) = recommender.recommend(history=["1", "2", "1"], k=2)
    assert new.user == "history" and len(new.items) == 2


def _predict(run, *extra: str) -> tuple[int, str]:
    return cli("predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
               *extra)


def _lines(path, *lines: str):
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: "[]", "predict_for.users is empty; expected at least one id"),
    (lambda d: _lines(d / "empty.txt", "# nobody", ""), "empty.txt: no user id in the file; expected one id per line"),
    (lambda d: _lines(d / "ids.txt", "12", "3 # the boss"),
     "ids.txt:2: user id '3 # the boss' has whitespace (U+0020 SPACE) at position 1"),
    (lambda d: _lines(d / "ids.txt", "12", "12"), "ids.txt:2: user id '12' is given twice (first on line 1)"),
    (lambda d: _lines(d / "ids.txt", "12#3"), "predict_for.users: 1 unknown user id(s): '12#3'"),
    (lambda d: _lines(d / "ids.txt", "12\x00"), "ids.txt:1: user id '12\\x00' has a control character (U+0000 NUL)"),
    (lambda d: str((d / "ids.txt").write_bytes(b"12\n\xe9t\xe9\n") and d / "ids.txt"),
     "ids.txt:2: expected UTF-8 text, found byte 0xe9"),
], ids=["inline_empty", "empty_file", "comment_after_id", "repeated", "junk_id", "nul", "latin1"])
def test_a_malformed_users_request_is_named(run_copy, make, expected):
    out = run_copy / "top.tsv"
    status, message = _predict(run_copy, "--predict_for.users", make(run_copy.parent), "--predictions.path", str(out))
    assert status == 1 and expected in message and not out.exists()


@pytest.mark.parametrize(("lines", "expected"), [
    (("ann\t1 2", "ann\t3"), "h.tsv:2: label 'ann' is given twice (first on line 1); each new user needs a label"),
    (("ann\t1\u20032",), "h.tsv:1: item id '1\\u20032' has whitespace (U+2003 EM SPACE) at position 1"),
    (("ann\t",), "h.tsv:1: expected 'label<TAB>item ids'"),
    (("# only a comment",), "h.tsv: no history in the file"),
], ids=["repeated_label", "em_space", "no_items", "no_history"])
def test_a_malformed_histories_file_is_named(run_copy, lines, expected):
    path = _lines(run_copy.parent / "h.tsv", *lines)
    status, message = _predict(run_copy, "--predict_for.histories", path)
    assert status == 1 and expected in message


def test_a_well_formed_users_file_predicts_for_exactly_its_users(run_copy):
    out = run_copy / "top.tsv"
    users = _lines(run_copy.parent / "ids.txt", "# header comment", "12", "", "3")
    assert _predict(run_copy, "--predict_for.users", users, "--predictions.path", str(out)) == (0, "")
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert sorted({r[0] for r in rows}) == ["12", "3"] and len(rows) == 40


def test_a_users_file_with_a_byte_order_mark_and_crlf_lines_reads_its_ids(run_copy):
    out = run_copy / "top.tsv"
    path = run_copy.parent / "ids.txt"
    path.write_bytes(b"\xef\xbb\xbf12\r\n3\r\n")
    assert _predict(run_copy, "--predict_for.users", str(path), "--predictions.path", str(out)) == (0, "")
    assert sorted({line.split("\t")[0] for line in out.read_text().splitlines()[1:]}) == ["12", "3"]


@pytest.mark.parametrize("k", ["0", "-3"])
def test_predict_top_k_below_one_is_refused_before_any_file_is_written(run_copy, k):
    out = run_copy / "top.tsv"
    status, message = _predict(run_copy, "--model.init_args.predict_top_k", k, "--predictions.path", str(out))
    assert status == 1 and f"ValueError: model.predict_top_k must be at least 1, got {k}" in message
    assert not out.exists()
