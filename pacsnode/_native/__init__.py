"""Native (Cython) kernels, with plain-Python twins in ``pacsnode._native._ref``.

``header`` and ``pixels`` are the modules to use and ``IS_NATIVE`` says which ones they are
(both native or both twins):

* ``PACSNODE_PURE=1`` selects the Python twin without importing the extension (debugging, or
  a host where the extension misbehaves).
* Otherwise the compiled extensions are used; if one cannot be imported (not built, ABI
  mismatch) the twins are used and a warning is logged, unless ``PACSNODE_REQUIRE_NATIVE=1``
  turns that into an ImportError (CI and production images, where silently running 50x
  slower would be a bug).

Import the chosen modules as ``from pacsnode._native import header, pixels``. Do not import
``pacsnode._native.header`` (or ``.pixels``) by its dotted name: that loads the extension, and
Python then rebinds this package's attribute to it even when the twin was selected.
"""
import logging
import os

__all__ = ["header", "pixels", "IS_NATIVE"]

log = logging.getLogger(__name__)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


IS_NATIVE: bool = False

if _flag("PACSNODE_PURE"):
    from ._ref import header, pixels
else:
    try:
        from . import header, pixels
    except ImportError as exc:
        if _flag("PACSNODE_REQUIRE_NATIVE"):
            raise ImportError(
                f"PACSNODE_REQUIRE_NATIVE is set but the pacsnode._native extensions cannot be "
                f"imported ({exc}); build them with `python setup.py build_ext --inplace` "
                f"or `pip install .`"
            ) from exc
        log.warning(
            "the pacsnode._native extensions are not available (%s); using the pure-Python "
            "twins, which are much slower",
            exc,
        )
        from ._ref import header, pixels
    else:
        IS_NATIVE = True
