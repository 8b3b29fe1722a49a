"""The split as a RecBole dataset (``data.export_split_to``), so that any RecBole model trains and is evaluated
on exactly the split this project's models see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lightning_bridge.data.interactions import Interactions, Split
from lightning_bridge.data.sources import Features


def recbole_dataset_name(name: str) -> str:
    """The dataset name the split is exported under: RecBole 1.2.1 replaces the data path of a dataset
    called ``ml-100k`` with its own bundled copy, so the export never takes a name RecBole knows."""
    return f"{name}-split"


def write_recbole_benchmark(inter: Interactions, split: Split, folder: str | Path, name: str) -> list[Path]:
    """Writes the split as a RecBole dataset ``<name>-split`` in ``folder/<name>-split/`` (raw ids), which
    RecBole 1.2.1 loads with ``data_path: <folder>`` and ``dataset: <name>-split`` alone:

    - ``.train.inter``, ``.valid.inter``, ``.test.inter``: the split, for ``benchmark_filename: [train,
      valid, test]`` (any RecBole model then trains and is evaluated on the identical split);
    - ``.inter``: every interaction (RecBole's default when ``benchmark_filename`` is unset);
    - ``.item``: each item's ``title`` and ``item_text``, and ``.user``: each user's ``user_text``, where the
      data has any (``token_seq`` fields; RecBole loads them with ``load_col: None``), each followed by the
      source's own columns with their RecBole types (ML-100K's ``age``, ``gender``, ``occupation``,
      ``zip_code``; an atomic folder's ``.item`` / ``.user`` fields as read), but for a name the text fields
      already take. Tabs and line breaks become spaces, and double quotes single ones, which RecBole's CSV
      reader would take for quoting.
    """
    dataset = recbole_dataset_name(name)
    folder = Path(folder) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    paths = []
    for part, rows in (*parts.items(), (None, np.concatenate(list(parts.values())))):
        path = folder / (f"{dataset}.{part}.inter" if part else f"{dataset}.inter")
        with path.open("w") as f:
            f.write(header)
            for r in rows[np.lexsort((rows, inter.timestamps[rows], inter.users[rows]))]:
                f.write(f"{inter.user_ids[inter.users[r]]}\t{inter.item_ids[inter.items[r]]}\t"
                        f"{inter.ratings[r]:g}\t{inter.timestamps[r]}\n")
        paths.append(path)
    items = [(inter.item_titles[n], inter.item_text[n]) for n in range(inter.num_items)]
    paths.append(_write_features(folder / f"{dataset}.item", ("item_id", "title", "item_text"), inter.item_ids,
                                 items, inter.item_features))
    if any(inter.user_text) or inter.user_features.values:
        users = [(text,) for text in inter.user_text]
        paths.append(_write_features(folder / f"{dataset}.user", ("user_id", "user_text"), inter.user_ids, users,
                                     inter.user_features))
    return paths


def _write_features(path: Path, names: tuple[str, ...], ids: np.ndarray, text: list[tuple[str | None, ...]],
                    features: Features) -> Path:
    """One row per id: the id (``token``), its text fields (``token_seq``), then the source's own fields that
    do not reuse one of these names."""
    own = [k for k, name in enumerate(features.types) if name not in names]
    header = [f"{names[0]}:token", *(f"{name}:token_seq" for name in names[1:]),
              *(f"{name}:{type_}" for k, (name, type_) in enumerate(features.types.items()) if k in own)]
    with path.open("w") as f:
        f.write("\t".join(header) + "\n")
        for id_, values in zip(ids, text, strict=True):
            row = features.values.get(id_)
            extra = [row[k] for k in own] if row is not None else [""] * len(own)
            f.write("\t".join(_atomic_value(v) for v in (id_, *values, *extra)) + "\n")
    return path


def _atomic_value(value: str | None) -> str:
    return " ".join((value or "").replace('"', "'").split())
