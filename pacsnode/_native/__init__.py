"""Native (Cython) kernels, with plain-Python twins in ``pacsnode._native._ref``.

``header`` is the module to use and ``IS_NATIVE`` says which one it is:

* ``PACSNODE_PURE=1`` selects the Python twin without importing the extension (debugging, or
  a host where the extension misbehaves).
* Otherwise the compiled extension is used; if it cannot be imported (not built, ABI
  mismatch) the twin is used and a warning is logged, unless ``PACSNODE_REQUIRE_NATIVE=1``
  turns that into an ImportError (CI and production images, where silently running 50x
  slower would be a bug).

Import the chosen module as ``from pacsnode._native import header``. Do not import
``pacsnode._native.header`` by its dotted name: that loads the extension, and Python then
rebinds this package's ``header`` attribute to it even when the twin was selected.
"""
import logging
import os

__all__ = ["header", "IS_NATIVE"]

log = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


IS_NATIVE: bool = False

if _flag("PACSNODE_PURE"):
    from ._ref import header
else:
    try:
        from . import header
    except ImportError as exc:
        if _flag("PACSNODE_REQUIRE_NATIVE"):
            raise ImportError(
                f"PACSNODE_REQUIRE_NATIVE is set but pacsnode._native.header cannot be "
                f"imported ({exc}); build it with `python setup.py build_ext --inplace` "
                f"or `pip install .`"
            ) from exc
        log.warning(
            "pacsnode._native.header is not available (%s); using the pure-Python twin, "
            "which is much slower",
            exc,
        )
        from ._ref import header
    else:
        IS_NATIVE = True
