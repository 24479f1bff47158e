# distutils: language = c++
"""pylibjpeg-libjpeg's decoder called straight into a caller's buffer, without the GIL.

``_libjpeg.decode`` reads the whole codestream twice (a parameter pass, ~a third of a lossless
decode, then the decode) and holds the GIL throughout. Its C++ ``Decode`` takes the output
buffer and checks its size itself, so when the caller knows that size (from the frame's SOF)
one pass suffices. The symbol is found by its mangled name, which encodes the signature: a
build with another signature simply leaves ``available()`` false and callers keep the public
path. Tests prove both paths give the same arrays on the whole corpus.
"""
from libc.stdint cimport uintptr_t
from libcpp.string cimport string

ctypedef string (*DecodeFn)(char*, char*, int, int, int) nogil

# std::string Decode(char* in, char* out, int in_length, int out_length, int colour_transform)
_SYMBOL = "_Z6DecodeB5cxx11PcS_iii"
# Its status when the output size is not what the codestream decodes to.
SIZE_MISMATCH = -8195

cdef DecodeFn _decode = NULL
_bound = None  # None: not tried yet


cdef bint _bind():
    global _decode, _bound
    if _bound is None:
        _bound = False
        try:
            import ctypes
            import _libjpeg
            # The module is loaded already: dlopen hands back the same library.
            address = ctypes.cast(getattr(ctypes.CDLL(_libjpeg.__file__), _SYMBOL), ctypes.c_void_p).value
        except (ImportError, OSError, AttributeError):
            return False
        _decode = <DecodeFn><uintptr_t>address
        _bound = True
    return _bound


def available():
    """Whether the direct decoder is bound (pylibjpeg-libjpeg installed, known signature)."""
    return _bind()


def decode_into(const unsigned char[::1] src, unsigned char[::1] out):
    """Decode one JPEG / JPEG-LS codestream into ``out``, which must be exactly its size.

    Returns ``(code, message)``: 0 on success, else libjpeg's error (SIZE_MISMATCH when
    ``out`` does not have the decoded size; nothing useful is then in ``out``).
    """
    cdef string status
    if not _bind():
        raise RuntimeError("pylibjpeg-libjpeg's decoder is not available")
    if src.shape[0] == 0 or out.shape[0] == 0:
        return SIZE_MISMATCH, "empty input or output"
    with nogil:
        status = _decode(<char*>&src[0], <char*>&out[0], <int>src.shape[0], <int>out.shape[0], 0)
    code, _, message = status.decode("utf-8", "replace").partition("::::")
    return int(code), message
