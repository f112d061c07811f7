"""syconn_ng: synaptic wiring diagrams from volume EM and KNOSSOS skeletons."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("syconn-ng")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Analysis", "__version__"]


def __getattr__(name):
    """`syconn_ng.Analysis`, imported on first use so `import syconn_ng` (and the CLI) stay light."""
    if name == "Analysis":
        from syconn_ng.analysis import Analysis

        return Analysis
    raise AttributeError(f"module 'syconn_ng' has no attribute {name!r}")
