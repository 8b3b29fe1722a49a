"""Puts MovieLens into a local cache folder, so a run needs no manual download step.

The official GroupLens zip is tried first and verified by MD5.  For ml-100k there is a fallback for
machines that reach a Python package index but not the wider internet: RecBole 1.2.1's wheel bundles
ml-100k as atomic files.  Every folder is staged in a temporary directory and renamed into place, so
an interrupted run never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_bridge.run.downloads import WheelDownloadError, download_wheel, sha256_file, staging_dir

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 10
RECBOLE_REQUIREMENT = "recbole==1.2.1"
# sha256 of recbole-1.2.1-py3-none-any.whl as published on PyPI (checked with `pip download`, 2026-11-26)
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_DIR = "recbole/dataset_example/ml-100k"
ATOMIC_SUFFIXES = ("inter", "item", "user")


@dataclass(frozen=True)
class GroupLensArchive:
    """One GroupLens zip: where it lives, its published MD5, and the files its folder must contain."""

    name: str
    url: str
    md5: str
    files: tuple[str, ...]


# MD5s of the GroupLens zips, as hard-coded by public loaders (e.g. eli-osherovich/papers_with_code
# datasets/movielens/dl_config.py lists both; PaddlePaddle's movielens loader uses the same ml-1m value).
ML100K = GroupLensArchive("ml-100k", "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                          "0e33842e24a9c977be4e0107933c0723", ("u.data", "u.item", "u.user"))
ML1M = GroupLensArchive("ml-1m", "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                        "c4d9eecfca2ab87c1945afe126590906", ("ratings.dat", "movies.dat", "users.dat"))


class DatasetUnavailableError(RuntimeError):
    """No way of obtaining a dataset worked; the message lists what was tried and how to supply it by hand."""


def ml100k_folder(cache_dir: str | Path) -> tuple[Path, str]:
    """(folder, format) of ml-100k, format "grouplens" or "atomic"; downloads into ``cache_dir`` if needed."""
    cache = Path(cache_dir)
    grouplens, atomic = cache / ML100K.name, cache / "atomic" / ML100K.name
    if _complete(grouplens, ML100K.files):
        log.info("ml-100k: using cached GroupLens folder %s", grouplens)
        return grouplens, "grouplens"
    if _complete(atomic, _atomic_files(ML100K.name)):
        log.info("ml-100k: using cached RecBole atomic folder %s", atomic)
        return atomic, "atomic"
    failures = []
    try:
        return _download_grouplens(ML100K, cache), "grouplens"
    except DatasetUnavailableError as err:
        failures.append(f"download {ML100K.url}: {err}")
        log.warning("ml-100k: GroupLens download failed (%s); trying the copy inside the %s wheel",
                    err, RECBOLE_REQUIREMENT)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = extract_recbole_ml100k(_pip_download_recbole(Path(tmp)), cache)
        log.info("ml-100k: extracted RecBole's atomic copy to %s", folder)
        return folder, "atomic"
    except DatasetUnavailableError as err:
        failures.append(f"pip download {RECBOLE_REQUIREMENT} (bundles ml-100k as atomic files): {err}")
    raise DatasetUnavailableError(_manual_help(ML100K, grouplens, failures))


def ml1m_folder(cache_dir: str | Path) -> tuple[Path, str]:
    """Folder holding ml-1m (always "grouplens" format), downloading into ``cache_dir`` if needed."""
    folder = Path(cache_dir) / ML1M.name
    if _complete(folder, ML1M.files):
        log.info("ml-1m: using cached GroupLens folder %s", folder)
        return folder, "grouplens"
    try:
        return _download_grouplens(ML1M, Path(cache_dir)), "grouplens"
    except DatasetUnavailableError as err:
        raise DatasetUnavailableError(_manual_help(ML1M, folder, [f"download {ML1M.url}: {err}"])) from err


def extract_recbole_ml100k(wheel: str | Path, cache_dir: str | Path) -> Path:
    """Copies ml-100k.{inter,item,user} out of a RecBole wheel into ``cache_dir/atomic/ml-100k``."""
    files = _atomic_files(ML100K.name)
    dest = Path(cache_dir) / "atomic" / ML100K.name
    try:
        with zipfile.ZipFile(wheel) as zf:
            contents = {f: zf.read(f"{RECBOLE_ML100K_DIR}/{f}") for f in files}
        with staging_dir(Path(cache_dir)) as tmp:
            staged = tmp / ML100K.name
            staged.mkdir()
            for filename, data in contents.items():
                (staged / filename).write_bytes(data)
            _publish(staged, dest, files)
    except KeyError as err:
        raise DatasetUnavailableError(f"{wheel} is not a {RECBOLE_REQUIREMENT} wheel: {err}") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise DatasetUnavailableError(f"could not extract ml-100k from {wheel}: {err}") from err
    return dest


def _download_grouplens(archive: GroupLensArchive, cache: Path) -> Path:
    data = _fetch(archive.url)
    digest = hashlib.md5(data).hexdigest()
    if digest != archive.md5:
        raise DatasetUnavailableError(f"MD5 of the download is {digest}, expected {archive.md5}")
    dest = cache / archive.name
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf, staging_dir(cache) as tmp:
            zf.extractall(tmp)
            _publish(tmp / archive.name, dest, archive.files)
    except (OSError, zipfile.BadZipFile) as err:
        raise DatasetUnavailableError(f"could not extract {archive.url}: {err}") from err
    log.info("%s: downloaded %s to %s", archive.name, archive.url, dest)
    return dest


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except OSError as err:  # URLError, HTTPError and socket timeouts are all OSErrors
        raise DatasetUnavailableError(str(err)) from err


def _pip_download_recbole(dest: Path) -> Path:
    try:
        wheel = download_wheel(RECBOLE_REQUIREMENT, dest)
    except WheelDownloadError as err:
        raise DatasetUnavailableError(str(err)) from err
    digest = sha256_file(wheel)
    if digest != RECBOLE_WHEEL_SHA256:
        raise DatasetUnavailableError(f"{wheel.name}: sha256 {digest}, expected {RECBOLE_WHEEL_SHA256} "
                                      f"(the package index served another file)")
    return wheel


def _publish(staged: Path, dest: Path, files: Sequence[str]) -> None:
    """Renames a fully written folder into place; a concurrent run that got there first also counts."""
    if not _complete(staged, files):
        raise DatasetUnavailableError(f"the archive lacks {', '.join(files)} under {staged.name}/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, dest)
    except OSError as err:
        if not _complete(dest, files):
            raise DatasetUnavailableError(
                f"{dest} exists but lacks some of {', '.join(files)}; remove it and retry") from err


def _complete(folder: Path, files: Sequence[str]) -> bool:
    return all((folder / f).is_file() for f in files)


def _atomic_files(name: str) -> tuple[str, ...]:
    return tuple(f"{name}.{suffix}" for suffix in ATOMIC_SUFFIXES)


def _manual_help(archive: GroupLensArchive, folder: Path, failures: list[str]) -> str:
    tried = "\n".join(f"  {i}. {failure}" for i, failure in enumerate(failures, 1))
    return (f"could not obtain MovieLens {archive.name}. Tried:\n{tried}\n"
            f"To provide it manually, download {archive.url} on a machine with internet access, unzip it, "
            f"and either pass the resulting folder (containing {', '.join(archive.files)}) in the config as "
            f"data.init_args.data_dir (--data.init_args.data_dir <folder>), or place it at {folder}.")
