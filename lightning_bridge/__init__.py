"""lightning_bridge: BDLM co-training of a domain recommender and a language model (see README.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lightning_bridge")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"


def __getattr__(name: str):
    """``lightning_bridge.load_recommender``, imported on first use: the package itself stays light."""
    if name == "load_recommender":
        from lightning_bridge.serving.recommender import load_recommender

        return load_recommender
    raise AttributeError(f"module 'lightning_bridge' has no attribute {name!r}")
