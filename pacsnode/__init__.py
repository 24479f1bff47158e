"""pacsnode: a high-throughput DICOM archive."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pacsnode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
