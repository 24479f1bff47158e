"""Pure-Python twin of ``pacsnode._native.header``.

Walks the top level of an encoded DICOM dataset once and returns the raw bytes of the wanted
elements. It mirrors header.pyx step for step (same names, results and exception classes) so
that PACSNODE_PURE=1 runs, and hosts without a compiler, behave exactly like the native build;
keep the two in step when changing either.
"""
from operator import index
from struct import Struct

from pacsnode.errors import MalformedDatasetError

__all__ = ["scan_dataset", "read_file_meta"]

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD

# Explicit VRs encoded as tag, VR, 2 reserved bytes, 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)

_U16 = (Struct(">H").unpack_from, Struct("<H").unpack_from)
_U32 = (Struct(">I").unpack_from, Struct("<I").unpack_from)
_TAG = (Struct(">HH").unpack_from, Struct("<HH").unpack_from)

_PY_SSIZE_MAX = (1 << 63) - 1


def _byte_view(buf):
    """``buf`` as flat unsigned bytes, accepting what Cython's PyBUF_SIMPLE request accepts."""
    view = memoryview(buf)
    if not view.c_contiguous:
        raise BufferError("buffer is not C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _wanted_tags(tags):
    """Validate ``tags``: strictly ascending ints in 0..0xFFFFFFFF (binary search relies on it)."""
    tags = tuple(tags)
    previous = -1
    for tag in tags:
        if not isinstance(tag, int):
            raise TypeError(f"tags must be ints, got {type(tag).__name__}")
        if not 0 <= tag <= 0xFFFFFFFF:
            raise ValueError(f"tag {tag:#x} out of range")
        if tag <= previous:
            raise ValueError("tags must be strictly ascending")
        previous = tag
    return tags


def _tag(view, pos, little):
    group, element = _TAG[little](view, pos)
    return group << 16 | element


def _header(view, pos, end, implicit, little):
    """(header size, value length, is UN) of the element at ``pos``; the length may be undefined."""
    if end - pos < 8:
        raise MalformedDatasetError(f"truncated element header at offset {pos}")
    if implicit:
        return 8, _U32[little](view, pos + 4)[0], False
    vr = bytes(view[pos + 4 : pos + 6])
    if vr in LONG_VRS:
        if end - pos < 12:
            raise MalformedDatasetError(f"truncated element header at offset {pos}")
        return 12, _U32[little](view, pos + 8)[0], vr == b"UN"
    return 8, _U16[little](view, pos + 6)[0], False


def _check_value(length, pos, end):
    if length > end - pos:
        raise MalformedDatasetError(
            f"value of length {length} at offset {pos} runs past the end of the buffer ({end})"
        )


def _skip_undefined(view, pos, end, implicit, little):
    """Walk an undefined-length value starting at ``pos``; return the offset of its delimiter.

    Iterative so that hostile nesting cannot exhaust the stack: ``depth`` is odd inside a
    sequence (expecting items) and even inside an item (expecting elements). Everything at or
    below ``un_depth`` is an undefined-length UN and thus implicit VR little endian (PS3.5 6.2.2).
    """
    start = pos
    depth = 1
    un_depth = 0
    while True:
        if un_depth and depth >= un_depth:
            impl, le = True, True
        else:
            impl, le = implicit, little
        if end - pos < 8:
            raise MalformedDatasetError(
                f"undefined-length value starting at offset {start} is not terminated "
                f"(buffer ends at {end})"
            )
        tag = _tag(view, pos, le)
        if depth & 1:  # in a sequence
            if tag == ITEM:
                length = _U32[le](view, pos + 4)[0]
                pos += 8
                if length == UNDEFINED_LENGTH:
                    depth += 1
                else:
                    _check_value(length, pos, end)
                    pos += length
            elif tag == SEQUENCE_DELIMITER:
                if depth == 1:
                    return pos
                depth -= 1
                pos += 8
                if depth < un_depth:
                    un_depth = 0
            else:
                raise MalformedDatasetError(
                    f"expected an item or sequence delimiter at offset {pos}, got tag {tag:08X}"
                )
        elif tag == ITEM_DELIMITER:
            depth -= 1
            pos += 8
        elif tag >> 16 == 0xFFFE:
            raise MalformedDatasetError(
                f"unexpected item tag {tag:08X} inside an item at offset {pos}"
            )
        else:
            size, length, is_un = _header(view, pos, end, impl, le)
            pos += size
            if length == UNDEFINED_LENGTH:
                depth += 1
                if is_un:
                    un_depth = depth
            else:
                _check_value(length, pos, end)
                pos += length


def scan_dataset(buf, tags, implicit_vr, little_endian, offset=0):
    """Return ``{tag: raw value bytes}`` for the wanted ``tags`` found at the dataset's top level.

    ``buf`` holds an encoded dataset starting at ``offset``; ``tags`` is a strictly ascending
    sequence of ``group << 16 | element`` ints. Values are returned exactly as encoded. The
    walk stops at the first element whose tag exceeds the largest wanted tag, so pixel data
    after the header is never touched. Raises MalformedDatasetError on truncated or invalid
    encodings.
    """
    # Argument checks in the order Cython performs them, so both twins raise the same class.
    offset = index(offset)
    if not -_PY_SSIZE_MAX - 1 <= offset <= _PY_SSIZE_MAX:
        raise OverflowError("offset out of range")
    view = _byte_view(buf)
    wanted = _wanted_tags(tags)
    end = len(view)
    if not 0 <= offset <= end:
        raise ValueError(f"offset {offset} outside buffer of {end} bytes")
    if not wanted:
        return {}
    implicit = bool(implicit_vr)
    little = bool(little_endian)
    max_tag = wanted[-1]
    wanted_set = frozenset(wanted)
    spans = {}
    pos = offset
    while pos < end:
        if end - pos < 4:
            raise MalformedDatasetError(f"truncated element header at offset {pos}")
        tag = _tag(view, pos, little)
        if tag > max_tag:
            break
        if tag >> 16 == 0xFFFE:
            raise MalformedDatasetError(f"item tag {tag:08X} at the top level at offset {pos}")
        size, length, is_un = _header(view, pos, end, implicit, little)
        start = pos + size
        if length == UNDEFINED_LENGTH:
            if is_un:
                stop = _skip_undefined(view, start, end, True, True)
            else:
                stop = _skip_undefined(view, start, end, implicit, little)
            pos = stop + 8
        else:
            _check_value(length, start, end)
            stop = pos = start + length
        if tag in wanted_set:
            spans[tag] = (start, stop)
    return {tag: bytes(view[spans[tag][0] : spans[tag][1]]) for tag in wanted if tag in spans}


def read_file_meta(buf):
    """Parse the File Meta Information (group 0002, Explicit VR Little Endian) after "DICM".

    Returns ``({tag: raw value bytes}, offset of the first dataset byte)``, or ``({}, 0)`` when
    ``buf`` has no preamble + "DICM" prefix. The group ends at the first element whose group is
    not 0002; (0002,0000) Group Length is only used to detect a buffer that ends inside the group.
    """
    view = _byte_view(buf)
    end = len(view)
    if end < 132 or view[128:132] != b"DICM":
        return {}, 0
    meta = {}
    group_end = -1
    pos = 132
    while True:
        if pos == end:
            if group_end > pos:
                raise MalformedDatasetError(
                    f"file meta group ends at offset {pos}, group length says {group_end}"
                )
            break
        if end - pos < 4:
            raise MalformedDatasetError(f"truncated file meta element header at offset {pos}")
        tag = _tag(view, pos, True)
        if tag >> 16 != 0x0002:
            break
        size, length, _ = _header(view, pos, end, False, True)
        start = pos + size
        if length == UNDEFINED_LENGTH:
            raise MalformedDatasetError(f"undefined length in file meta at offset {pos}")
        _check_value(length, start, end)
        pos = start + length
        if tag == 0x00020000 and length == 4 and group_end < 0:
            group_end = pos + _U32[True](view, start)[0]
        meta[tag] = bytes(view[start:pos])
    return meta, pos
