"""The DataModules of each dataset: MovieLens, RecBole atomic folders, CSV files, Amazon Reviews and the
synthetic sets. Each says where its files are and how they are read; ``RecDataModule`` does the rest."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from lightning_bridge.data.amazon import read_amazon
from lightning_bridge.data.atomic import read_atomic
from lightning_bridge.data.datamodule import RecDataModule
from lightning_bridge.data.delimited import read_delimited
from lightning_bridge.data.download import ml1m_folder, ml100k_folder
from lightning_bridge.data.sources import RawData, read_ml1m, read_ml100k
from lightning_bridge.data.synthetic import synthetic_raw, synthetic_topics_raw


class MovieLensDataModule(RecDataModule):
    """MovieLens 100K or 1M. With ``data_dir`` unset the files are obtained into ``cache_dir`` (the
    official GroupLens zip where the internet is reachable; for 100K, the copy that ships in the
    ``recbole==1.2.1`` wheel on PyPI otherwise).

    Args:
        variant: ``ml-100k`` or ``ml-1m``.
        data_dir: a folder that already holds the GroupLens files (``u.data``... or ``ratings.dat``...).
    """

    def __init__(self, variant: Literal["ml-100k", "ml-1m"] = "ml-100k", data_dir: str | None = None,
                 **kwargs) -> None:
        if variant not in ("ml-100k", "ml-1m"):
            raise ValueError(f"data.variant must be 'ml-100k' or 'ml-1m', got {variant!r}")
        super().__init__(**kwargs)
        self.variant, self.data_dir = variant, data_dir

    def name(self) -> str:
        return self.variant

    @cached_property
    def _folder(self) -> tuple[Path, str]:
        if self.data_dir is not None:
            return Path(self.data_dir), "grouplens"
        fetch = ml100k_folder if self.variant == "ml-100k" else ml1m_folder
        return fetch(self.cache_dir / "downloads")

    def source_files(self) -> list[Path]:
        folder, fmt = self._folder
        if fmt == "atomic":
            return [folder / f"ml-100k.{ext}" for ext in ("inter", "item", "user")]
        names = ("u.data", "u.item", "u.user") if self.variant == "ml-100k" else (
            "ratings.dat", "movies.dat", "users.dat")
        return [folder / n for n in names if (folder / n).exists()]

    def read(self) -> RawData:
        folder, fmt = self._folder
        if fmt == "atomic":
            return read_atomic(folder, "ml-100k")
        return read_ml100k(folder) if self.variant == "ml-100k" else read_ml1m(folder)


class AtomicFilesDataModule(RecDataModule):
    """Any dataset in RecBole's atomic format: a folder with ``<name>.inter`` (and optionally ``.item``,
    ``.user``).

    Args:
        folder: the dataset folder.
        dataset_name: the files' stem (defaults to the folder's name, as in RecBole).
        item_text_fields: the ``.item`` fields written after the title (and year) in the item text; None takes
            them all (an Amazon-style ``.item`` would put ``price: 10.99`` into every prompt).
    """

    def __init__(self, folder: str, dataset_name: str | None = None, item_text_fields: list[str] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = Path(folder)
        self.dataset_name = dataset_name or self.folder.name
        self.item_text_fields = item_text_fields

    def reader_id(self) -> str:
        return f"{super().reader_id()}:{self.item_text_fields}"

    def name(self) -> str:
        return self.dataset_name

    def source_files(self) -> list[Path]:
        files = [self.folder / f"{self.dataset_name}.{ext}" for ext in ("inter", "item", "user")]
        return [f for f in files if f.exists()]

    def read(self) -> RawData:
        return read_atomic(self.folder, self.dataset_name, self.item_text_fields)


class CSVDataModule(RecDataModule):
    """Your own data: one interaction per line of a delimited text file with a header line (CSV, TSV, ``::``),
    its columns named here, and optionally an item file whose chosen columns become the item text the LM reads.
    With ``rating_threshold`` (implicit feedback from ratings) and ``min_user_interactions`` /
    ``min_item_interactions`` (k-core), as every data module.

    Args:
        path: the interactions file.
        separator: the field separator (``","``, ``"\\t"``, ``"::"``...); quoting follows the CSV rules when it
            is one character.
        user_field: the header name of the user id column.
        item_field: the header name of the item id column.
        time_field: the column that orders each user's interactions (numbers, or ISO 8601 dates); None keeps
            the file's order.
        rating_field: the rating column (read only for ``rating_threshold``); None: every line counts.
        items_path: an item file with a header line (optional).
        items_separator: its separator (default: ``separator``).
        item_id_field: its item id column (default: ``item_field``).
        title_field: its title column (shown beside predictions; first in the item text); None: no title.
        item_text_fields: the columns that follow the title in the item text, as ``field: value``; None takes
            every column, [] the title alone.
        dataset_name: the name runs and exports give the data (default: the file's stem).
    """

    def __init__(self, path: str, separator: str = ",", user_field: str = "user_id", item_field: str = "item_id",
                 time_field: str | None = None, rating_field: str | None = None, items_path: str | None = None,
                 items_separator: str | None = None, item_id_field: str | None = None,
                 title_field: str | None = "title", item_text_fields: list[str] | None = None,
                 dataset_name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reader_args = dict(path=path, separator=separator, user_field=user_field, item_field=item_field,
                                time_field=time_field, rating_field=rating_field, items_path=items_path,
                                items_separator=items_separator, item_id_field=item_id_field,
                                title_field=title_field, item_text_fields=item_text_fields)
        self.dataset_name = dataset_name or Path(path).stem

    def name(self) -> str:
        return self.dataset_name

    def source_files(self) -> list[Path]:
        files = [Path(self.reader_args["path"]), *([Path(self.reader_args["items_path"])]
                                                    if self.reader_args["items_path"] else [])]
        return files if all(f.is_file() for f in files) else []  # a missing file is read's error to name

    def reader_id(self) -> str:
        options = {k: v for k, v in self.reader_args.items() if k not in ("path", "items_path")}
        return f"{super().reader_id()}:{sorted(options.items())}"

    def read(self) -> RawData:
        return read_delimited(**self.reader_args)


class AmazonReviewsDataModule(RecDataModule):
    """Amazon Reviews, the datasets the LLM-recommendation literature reports on (Beauty, Sports, Toys...): a
    reviews file and optionally its metadata file, one JSON object a line, gzipped or not, from the 2014, 2018
    or 2023 release (``data/amazon.py`` lists the keys each has). Every review is an interaction; 5-core by
    default (users and items with at least 5 reviews, iterated), split by time leave-one-out as everywhere.
    The files are given by path (download links: README, "Amazon Reviews").

    Args:
        reviews_path: the reviews file (``reviews_Beauty_5.json.gz``, ``All_Beauty.jsonl.gz``...).
        metadata_path: its metadata file (``meta_Beauty.json.gz``...); None: no item text.
        item_text_fields: metadata fields written after the title in the item text (``categories``,
            ``description``, ``features``, ``brand``... as the file names them); [] for the title alone.
        min_user_interactions: as every data module; 5 here (the 5-core).
        min_item_interactions: as every data module; 5 here.
        dataset_name: the name runs give the data (default: the reviews file's name without extensions).
    """

    def __init__(self, reviews_path: str, metadata_path: str | None = None,
                 item_text_fields: tuple[str, ...] = ("categories",), min_user_interactions: int = 5,
                 min_item_interactions: int = 5, dataset_name: str | None = None, **kwargs) -> None:
        super().__init__(min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions,
                         **kwargs)
        self.reader_args = dict(reviews=reviews_path, metadata=metadata_path, item_text_fields=item_text_fields)
        self.dataset_name = dataset_name or Path(reviews_path).name.split(".")[0]

    def name(self) -> str:
        return self.dataset_name

    def source_files(self) -> list[Path]:
        files = [Path(p) for p in (self.reader_args["reviews"], self.reader_args["metadata"]) if p]
        return files if all(f.is_file() for f in files) else []  # a missing file is read's error to name

    def reader_id(self) -> str:
        return f"{super().reader_id()}:{list(self.reader_args['item_text_fields'])}"

    def read(self) -> RawData:
        return read_amazon(**self.reader_args)


class SyntheticDataModule(RecDataModule):
    """Users and items with planted latent factors, and item text that names each item's dominant factors,
    so that tests run in seconds and a language model can profit from the text.

    Args:
        num_users: users to generate.
        num_items: items to generate.
        num_factors: planted latent factors (each one also names a genre word in the item text).
        min_interactions: fewest interactions per user.
        max_interactions: most interactions per user.
        data_seed: seeds the generated data (``seed`` seeds training).
    """

    def __init__(self, num_users: int = 200, num_items: int = 100, num_factors: int = 4,
                 min_interactions: int = 5, max_interactions: int = 20, data_seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generator_args = dict(num_users=num_users, num_items=num_items, num_factors=num_factors,
                                   min_interactions=min_interactions, max_interactions=max_interactions,
                                   seed=data_seed)

    def name(self) -> str:
        return "synthetic"

    def read(self) -> RawData:
        return synthetic_raw(**self.generator_args)


class SyntheticTopicsDataModule(RecDataModule):
    """Sparse synthetic data whose item titles are real words that carry the preference signal: users like
    one or two topics, item popularity is Zipf-skewed (most items have at most three interactions) and each
    title is made of its topic's words. The setting where a language model's knowledge should help the domain
    model most (``lightning_bridge.data.synthetic.synthetic_topics_raw``).

    Args:
        generated_users: users to generate.
        generated_items: items to generate (items nobody picked are left out of the catalogue, so the data's
            ``num_items`` can be smaller).
        num_topics: topics, each with its own title words.
        mean_interactions: mean interactions per user (at least 3).
        popularity_exponent: Zipf exponent of item popularity within a topic.
        noise: share of each user's items picked at random, outside their topics.
        favourite_words: each user's favourite words per favourite topic; only items whose title has one are
            picked (0: any item of the topic). The part of the taste that only titles reveal for rare items.
        data_seed: seeds the generated data (``seed`` seeds training).
    """

    def __init__(self, generated_users: int = 1500, generated_items: int = 3000, num_topics: int = 10,
                 mean_interactions: float = 8.0, popularity_exponent: float = 1.0, noise: float = 0.1,
                 favourite_words: int = 2, data_seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generator_args = dict(num_users=generated_users, num_items=generated_items, num_topics=num_topics,
                                   mean_interactions=mean_interactions, popularity_exponent=popularity_exponent,
                                   noise=noise, favourite_words=favourite_words, seed=data_seed)

    def name(self) -> str:
        return "synthetic_topics"

    def read(self) -> RawData:
        return synthetic_topics_raw(**self.generator_args)
