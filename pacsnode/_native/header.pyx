# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""Native DICOM header scanner.

Walks the top level of an encoded DICOM dataset once and returns the raw bytes of the wanted
elements, ~2 orders of magnitude faster than a pydicom parse. The walk runs in C without the
GIL and touches Python objects only to build the result; every read is bounds-checked by hand
(the module is compiled with boundscheck=False). pacsnode/_native/_ref/header.py is the
plain-Python twin: same names, same results, same exception classes. Keep them in step.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from pacsnode.errors import MalformedDatasetError

__all__ = ["scan_dataset", "read_file_meta"]

cdef uint32_t UNDEFINED_LENGTH = 0xFFFFFFFF
cdef uint32_t ITEM = 0xFFFEE000
cdef uint32_t ITEM_DELIMITER = 0xFFFEE00D
cdef uint32_t SEQUENCE_DELIMITER = 0xFFFEE0DD

cdef enum Error:
    E_NONE
    E_TRUNCATED_HEADER
    E_PAST_END
    E_UNTERMINATED
    E_NOT_AN_ITEM
    E_ITEM_IN_ITEM
    E_ITEM_AT_TOP


cdef struct Cursor:
    const uint8_t* data
    Py_ssize_t end
    # Filled in by _fail(); turned into a MalformedDatasetError once the GIL is held again.
    Error err
    Py_ssize_t err_pos
    uint64_t err_value
    Py_ssize_t err_start


cdef inline int _fail(Cursor* c, Error err, Py_ssize_t pos, uint64_t value,
                      Py_ssize_t start) noexcept nogil:
    c.err = err
    c.err_pos = pos
    c.err_value = value
    c.err_start = start
    return -1


cdef inline uint16_t _u16(const uint8_t* p, bint little) noexcept nogil:
    if little:
        return <uint16_t>(p[0] | (p[1] << 8))
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t _u32(const uint8_t* p, bint little) noexcept nogil:
    if little:
        return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
                | (<uint32_t>p[3] << 24))
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline uint32_t _tag(const uint8_t* p, bint little) noexcept nogil:
    return (<uint32_t>_u16(p, little) << 16) | _u16(p + 2, little)


cdef inline bint _is_long_vr(uint8_t a, uint8_t b) noexcept nogil:
    # Explicit VRs encoded as tag, VR, 2 reserved bytes, 4-byte length (PS3.5 7.1.2):
    # OB OD OF OL OV OW SQ SV UC UN UR UT UV.
    if a == b"O":
        return b == b"B" or b == b"D" or b == b"F" or b == b"L" or b == b"V" or b == b"W"
    if a == b"S":
        return b == b"Q" or b == b"V"
    if a == b"U":
        return b == b"C" or b == b"N" or b == b"R" or b == b"T" or b == b"V"
    return False


cdef inline int _header(Cursor* c, Py_ssize_t pos, bint implicit, bint little,
                        Py_ssize_t* size, uint32_t* length, bint* is_un) noexcept nogil:
    """Header size, value length (maybe undefined) and UN-ness of the element at pos."""
    cdef const uint8_t* p = c.data + pos
    if c.end - pos < 8:
        return _fail(c, E_TRUNCATED_HEADER, pos, 0, 0)
    if implicit:
        size[0] = 8
        length[0] = _u32(p + 4, little)
        is_un[0] = False
    elif _is_long_vr(p[4], p[5]):
        if c.end - pos < 12:
            return _fail(c, E_TRUNCATED_HEADER, pos, 0, 0)
        size[0] = 12
        length[0] = _u32(p + 8, little)
        is_un[0] = p[4] == b"U" and p[5] == b"N"
    else:
        size[0] = 8
        length[0] = _u16(p + 6, little)
        is_un[0] = False
    return 0


cdef inline int _check_value(Cursor* c, uint32_t length, Py_ssize_t pos) noexcept nogil:
    if <uint64_t>length > <uint64_t>(c.end - pos):
        return _fail(c, E_PAST_END, pos, length, 0)
    return 0


cdef int _skip_undefined(Cursor* c, Py_ssize_t pos, bint implicit, bint little,
                         Py_ssize_t* delimiter) noexcept nogil:
    """Walk an undefined-length value starting at pos; store the offset of its delimiter.

    Iterative so that hostile nesting cannot exhaust the C stack: depth is odd inside a
    sequence (expecting items) and even inside an item (expecting elements). Everything at or
    below un_depth is an undefined-length UN and thus implicit VR little endian (PS3.5 6.2.2).
    """
    cdef Py_ssize_t start = pos, depth = 1, un_depth = 0, size
    cdef uint32_t tag, length
    cdef bint impl, le, is_un
    while True:
        if un_depth and depth >= un_depth:
            impl = True
            le = True
        else:
            impl = implicit
            le = little
        if c.end - pos < 8:
            return _fail(c, E_UNTERMINATED, pos, 0, start)
        tag = _tag(c.data + pos, le)
        if depth & 1:  # in a sequence
            if tag == ITEM:
                length = _u32(c.data + pos + 4, le)
                pos += 8
                if length == UNDEFINED_LENGTH:
                    depth += 1
                else:
                    if _check_value(c, length, pos) < 0:
                        return -1
                    pos += length
            elif tag == SEQUENCE_DELIMITER:
                if depth == 1:
                    delimiter[0] = pos
                    return 0
                depth -= 1
                pos += 8
                if depth < un_depth:
                    un_depth = 0
            else:
                return _fail(c, E_NOT_AN_ITEM, pos, tag, 0)
        elif tag == ITEM_DELIMITER:
            depth -= 1
            pos += 8
        elif (tag >> 16) == 0xFFFE:
            return _fail(c, E_ITEM_IN_ITEM, pos, tag, 0)
        else:
            if _header(c, pos, impl, le, &size, &length, &is_un) < 0:
                return -1
            pos += size
            if length == UNDEFINED_LENGTH:
                depth += 1
                if is_un:
                    un_depth = depth
            else:
                if _check_value(c, length, pos) < 0:
                    return -1
                pos += length


cdef inline Py_ssize_t _find(const uint32_t* tags, Py_ssize_t count, uint32_t tag) noexcept nogil:
    # Binary search rather than a merge walk, so out-of-order datasets still find their tags.
    cdef Py_ssize_t lo = 0, hi = count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if tags[mid] < tag:
            lo = mid + 1
        else:
            hi = mid
    if lo < count and tags[lo] == tag:
        return lo
    return -1


cdef int _scan(Cursor* c, Py_ssize_t pos, bint implicit, bint little, const uint32_t* tags,
               Py_ssize_t count, Py_ssize_t* starts, Py_ssize_t* stops) noexcept nogil:
    """Walk the top level from pos; record the value span of each wanted tag (last one wins)."""
    cdef uint32_t max_tag = tags[count - 1], tag, length
    cdef Py_ssize_t size, start, stop, i
    cdef bint is_un
    while pos < c.end:
        if c.end - pos < 4:
            return _fail(c, E_TRUNCATED_HEADER, pos, 0, 0)
        tag = _tag(c.data + pos, little)
        if tag > max_tag:
            break  # all wanted tags are behind us: never walk the pixel data
        if (tag >> 16) == 0xFFFE:
            return _fail(c, E_ITEM_AT_TOP, pos, tag, 0)
        if _header(c, pos, implicit, little, &size, &length, &is_un) < 0:
            return -1
        start = pos + size
        if length == UNDEFINED_LENGTH:
            if _skip_undefined(c, start, implicit or is_un, little or is_un, &stop) < 0:
                return -1
            pos = stop + 8
        else:
            if _check_value(c, length, start) < 0:
                return -1
            stop = start + length
            pos = stop
        i = _find(tags, count, tag)
        if i >= 0:
            starts[i] = start
            stops[i] = stop
    return 0


cdef object _error(Cursor* c):
    if c.err == E_TRUNCATED_HEADER:
        msg = f"truncated element header at offset {c.err_pos}"
    elif c.err == E_PAST_END:
        msg = (f"value of length {c.err_value} at offset {c.err_pos} runs past the end of "
               f"the buffer ({c.end})")
    elif c.err == E_UNTERMINATED:
        msg = (f"undefined-length value starting at offset {c.err_start} is not terminated "
               f"(buffer ends at {c.end})")
    elif c.err == E_NOT_AN_ITEM:
        msg = (f"expected an item or sequence delimiter at offset {c.err_pos}, "
               f"got tag {c.err_value:08X}")
    elif c.err == E_ITEM_IN_ITEM:
        msg = f"unexpected item tag {c.err_value:08X} inside an item at offset {c.err_pos}"
    elif c.err == E_ITEM_AT_TOP:
        msg = f"item tag {c.err_value:08X} at the top level at offset {c.err_pos}"
    else:
        msg = f"malformed dataset at offset {c.err_pos}"
    return MalformedDatasetError(msg)


def scan_dataset(buf, tags, bint implicit_vr, bint little_endian, Py_ssize_t offset=0):
    """Return ``{tag: raw value bytes}`` for the wanted ``tags`` found at the dataset's top level.

    ``buf`` holds an encoded dataset starting at ``offset``; ``tags`` is a strictly ascending
    sequence of ``group << 16 | element`` ints. Values are returned exactly as encoded. The
    walk stops at the first element whose tag exceeds the largest wanted tag, so pixel data
    after the header is never touched. Raises MalformedDatasetError on truncated or invalid
    encodings.
    """
    cdef Py_buffer view
    cdef Cursor c
    cdef Py_ssize_t count, i
    cdef long long prev = -1
    cdef Py_ssize_t* starts = NULL
    cdef Py_ssize_t* stops
    cdef uint32_t* ctags
    cdef int rc
    # PyBUF_SIMPLE: any C-contiguous buffer, read as bytes; holding it also pins a
    # bytearray's size while the GIL is released.
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        tags = tuple(tags)
        count = len(tags)
        # One block: value spans first (keeps them aligned), then the C copy of the tags.
        starts = <Py_ssize_t*>PyMem_Malloc(count * (2 * sizeof(Py_ssize_t) + sizeof(uint32_t)) + 1)
        if starts == NULL:
            raise MemoryError()
        stops = starts + count
        ctags = <uint32_t*>(stops + count)
        for i in range(count):
            tag = tags[i]
            if not isinstance(tag, int):
                raise TypeError(f"tags must be ints, got {type(tag).__name__}")
            if not 0 <= tag <= 0xFFFFFFFF:
                raise ValueError(f"tag {tag:#x} out of range")
            if tag <= prev:
                raise ValueError("tags must be strictly ascending")
            prev = tag
            ctags[i] = <uint32_t>tag
            starts[i] = -1
            stops[i] = -1
        if not 0 <= offset <= view.len:
            raise ValueError(f"offset {offset} outside buffer of {view.len} bytes")
        if count == 0:
            return {}
        c.data = <const uint8_t*>view.buf
        c.end = view.len
        c.err = E_NONE
        with nogil:
            rc = _scan(&c, offset, implicit_vr, little_endian, ctags, count, starts, stops)
        if rc < 0:
            raise _error(&c)
        found = {}
        for i in range(count):
            if starts[i] >= 0:
                found[tags[i]] = PyBytes_FromStringAndSize(
                    <const char*>c.data + starts[i], stops[i] - starts[i])
        return found
    finally:
        PyMem_Free(starts)
        PyBuffer_Release(&view)


def read_file_meta(buf):
    """Parse the File Meta Information (group 0002, Explicit VR Little Endian) after "DICM".

    Returns ``({tag: raw value bytes}, offset of the first dataset byte)``, or ``({}, 0)`` when
    ``buf`` has no preamble + "DICM" prefix. The group ends at the first element whose group is
    not 0002; (0002,0000) Group Length is only used to detect a buffer that ends inside the group.
    """
    cdef Py_buffer view
    cdef Cursor c
    cdef Py_ssize_t pos = 132, size, start, group_end = -1
    cdef uint32_t tag, length
    cdef bint is_un
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        c.data = <const uint8_t*>view.buf
        c.end = view.len
        c.err = E_NONE
        if c.end < 132 or (c.data[128] != b"D" or c.data[129] != b"I"
                           or c.data[130] != b"C" or c.data[131] != b"M"):
            return {}, 0
        meta = {}
        while True:
            if pos == c.end:
                if group_end > pos:
                    raise MalformedDatasetError(
                        f"file meta group ends at offset {pos}, group length says {group_end}")
                break
            if c.end - pos < 4:
                raise MalformedDatasetError(f"truncated file meta element header at offset {pos}")
            tag = _tag(c.data + pos, True)
            if (tag >> 16) != 0x0002:
                break
            if _header(&c, pos, False, True, &size, &length, &is_un) < 0:
                raise _error(&c)
            start = pos + size
            if length == UNDEFINED_LENGTH:
                raise MalformedDatasetError(f"undefined length in file meta at offset {pos}")
            if _check_value(&c, length, start) < 0:
                raise _error(&c)
            pos = start + length
            if tag == 0x00020000 and length == 4 and group_end < 0:
                group_end = pos + _u32(c.data + start, True)
            meta[tag] = PyBytes_FromStringAndSize(<const char*>c.data + start, pos - start)
        return meta, pos
    finally:
        PyBuffer_Release(&view)
