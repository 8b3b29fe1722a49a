"""One rule for ids everywhere: no whitespace or control character around or inside an id (the issue's cases:
U+2003, U+0085 and a trailing NUL passed the old check, and a NUL merged 'u0\\x00' into 'u0'). Data files name
file and line; requests name the argument or file:line (test_requests.py); exports name the entry
(test_integrity.py)."""

from __future__ import annotations

import pytest
from builders import cli
from hostile_common import TINY

from lightning_bridge.data.ids import id_problem

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ATOMIC = "lightning_bridge.data.datasets.AtomicFilesDataModule"


def _rows() -> list[str]:
    return [f"u{u}\ti{(u + k) % 10}\t4\t{100 * u + k}" for u in range(6) for k in range(5)]


def _fit(folder, rows: list[str], item: str | None = None) -> tuple[int, str]:
    folder.mkdir()
    (folder / f"{folder.name}.inter").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    if item is not None:
        (folder / f"{folder.name}.item").write_text(item, encoding="utf-8")
    return cli("fit", "--config", TINY, "--data", ATOMIC, "--data.folder", str(folder), "--trainer.max_epochs", "1")


@pytest.mark.parametrize(("bad", "expected"), [
    ("u0\u2003", r"user id 'u0\u2003' has whitespace (U+2003 EM SPACE) at its end in field 1; ids may hold neither "
                 "whitespace nor control characters"),
    ("u0\x85", r"user id 'u0\x85' has whitespace (U+0085 control) at its end in field 1"),
    ("u0\x00", r"user id 'u0\x00' has a control character (U+0000 NUL) at its end in field 1"),
    ("u\u200b0", r"user id 'u\u200b0' has a control character (U+200B ZERO WIDTH SPACE) at position 1 in field 1"),
    ("u 0", "user id 'u 0' has whitespace (U+0020 SPACE) at position 1 in field 1"),
], ids=["em_space", "next_line", "nul", "zero_width_space", "inner_space"])
def test_an_id_with_whitespace_or_a_control_character_names_file_and_line(in_tmp, bad, expected):
    folder = in_tmp / "toy"
    status, message = _fit(folder, [*_rows()[:4], f"{bad}\ti9\t4\t999", *_rows()[4:]])
    assert status == 1 and f"{folder / 'toy.inter'}, line 6: {expected}" in message


def test_a_metadata_id_keeps_the_same_rule(in_tmp):
    folder = in_tmp / "toy"
    status, message = _fit(folder, _rows(), item="item_id:token\ttitle:token_seq\ni0\tA\ni1\x00\tB\n")
    assert status == 1
    assert f"{folder / 'toy.item'}, line 3: item id 'i1\\x00' has a control character (U+0000 NUL) at its end" \
        in message


def test_ordinary_ids_keep_the_rule():
    assert [id_problem(i) for i in ("u0", "196", "B00005N5PF", "tt0111161", "user@example.com", "é-ü_1")] == [None] * 6


def test_any_reader_s_ids_keep_the_rule():
    """Readers of JSON sources (Amazon reviews) name the source: the rule is checked where ids become rows."""
    import numpy as np

    from lightning_bridge.data.interactions import Interactions
    from lightning_bridge.data.sources import RawData

    raw = RawData(users=np.array(["A1", "A2"]), items=np.array(["B\x000", "B1"]), ratings=np.ones(2),
                  timestamps=np.arange(2.0), item_text={}, item_titles={}, user_text={}, source="reviews.json.gz")
    with pytest.raises(ValueError, match=r"^reviews.json.gz: item id 'B\\x000' has a control character \(U\+0000 "
                                         r"NUL\) at position 1"):
        Interactions.from_raw(raw)
