"""syconn_ng: synaptic wiring diagrams from volume EM and KNOSSOS skeletons."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("syconn-ng")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
