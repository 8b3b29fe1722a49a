"""The one rule for raw user and item ids, wherever they come from (data files, users and histories files,
``recommend()``, an export's ``id_maps.json``): an id is a non-empty string without any whitespace or control
character, around it or inside it. ``'u0 '``, ``'u0\\u2003'`` or ``'u0\\x00'`` beside ``'u0'`` would silently be
another user (or, cut at the NUL by some tool, the same one), so each is an error naming where it was found.
"""

from __future__ import annotations

import re
import unicodedata

# Unicode whitespace (\s: spaces, U+0085, U+2003, U+3000...), C0/C1 controls, and the invisible format
# characters (zero-width spaces and joiners, direction marks, the byte-order mark)
_FORBIDDEN = re.compile("[\\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                        "\ufff9-\ufffb]")


def id_problem(id_: str) -> str | None:
    """What is wrong with ``id_`` (None: nothing), e.g. ``"has whitespace (U+2003 EM SPACE) at its end"``."""
    if not id_:
        return "is empty"
    found = _FORBIDDEN.search(id_)
    if found is None:
        return None
    char, at = found.group(), found.start()
    kind = "whitespace" if char.isspace() else "a control character"
    name = unicodedata.name(char, "") or {"\x00": "NUL"}.get(char, "control")
    where = "at its start" if at == 0 else "at its end" if at == len(id_) - 1 else f"at position {at}"
    return (f"has {kind} (U+{ord(char):04X} {name}) {where}; ids may hold neither whitespace nor control "
            "characters")


def first_bad_id(ids: list[str] | tuple[str, ...]) -> int | None:
    """The position of the first id that breaks the rule (None: all keep it); one pass over the joined ids
    when all are fine, so that millions of ids cost little."""
    if all(ids) and _FORBIDDEN.search("".join(ids)) is None:
        return None
    return next(k for k, id_ in enumerate(ids) if id_problem(id_) is not None)


def check_ids(ids: list[str] | tuple[str, ...], what: str, where: str) -> None:
    """Raises ``ValueError`` ``"<where>: <what> 'u0 ' has whitespace ..."`` for the first id breaking the rule
    (``where`` may hold ``{index}``, filled with the id's position)."""
    bad = first_bad_id(ids)
    if bad is not None:
        raise ValueError(f"{where.format(index=bad)}: {what} {ids[bad]!r} {id_problem(ids[bad])}")
