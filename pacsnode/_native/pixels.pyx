# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Native pixel kernels: encapsulated frame extraction, RLE Lossless, the JPEG-family frame loop.

* Frame extraction walks the item sequence of an encapsulated Pixel Data value once and returns
  (start, length) spans of every frame's fragments; nothing is copied until a frame is asked for.
* RLE Lossless (PS3.5 Annex G) is decoded here, without the GIL, straight into the caller's array.
* JPEG, JPEG-LS and JPEG 2000 frames go through pylibjpeg-libjpeg / pylibjpeg-openjpeg; this
  module feeds them frame by frame and casts their output into the caller's array. libjpeg's
  decoder is called directly where it can be (libjpeg_call: one pass instead of two, no GIL).

Results follow pydicom 3's ``pixel_array`` conventions (see pacsnode/pixels/decode.py). Every read
is bounds-checked by hand (the module is compiled with boundscheck=False). Kernels assume a
little-endian host. pacsnode/_native/_ref/pixels.py is the plain-Python twin: same names, same
results, same exception classes; keep them in step.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from io import BytesIO
from operator import index

from pacsnode.errors import MalformedDatasetError

try:
    from pacsnode._native import libjpeg_call
except ImportError:  # built without a C++ compiler (setup.py): the public decoder only
    libjpeg_call = None

__all__ = [
    "frame_offsets", "get_frame", "rle_decode", "jpeg_info", "j2k_info", "decode_frames",
    "correct_bits", "ybr_to_rgb",
]

cdef uint32_t ITEM = 0xFFFEE000
cdef uint32_t SEQUENCE_DELIMITER = 0xFFFEE0DD
cdef uint32_t UNDEFINED_LENGTH = 0xFFFFFFFF


cdef inline uint32_t _u32le(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _u64le(const uint8_t* p) noexcept nogil:
    return <uint64_t>_u32le(p) | (<uint64_t>_u32le(p + 4) << 32)


cdef inline uint32_t _tag(const uint8_t* p) noexcept nogil:
    return (<uint32_t>(p[0] | (p[1] << 8)) << 16) | <uint32_t>(p[2] | (p[3] << 8))


cdef inline uint16_t _u16be(const uint8_t* p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef class _Buffer:
    """A held PyBUF_SIMPLE (or writable) view; holding it pins a bytearray's size without the GIL."""
    cdef Py_buffer view
    cdef bint held

    def __cinit__(self, obj, bint writable=False):
        PyObject_GetBuffer(obj, &self.view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
        self.held = True

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef inline const uint8_t* data(self) noexcept nogil:
        return <const uint8_t*>self.view.buf


# --------------------------------------------------------------------------------------------
# Frame extraction

cdef enum ItemError:
    I_NONE
    I_NO_BOT
    I_BOT_LENGTH
    I_BOT_PAST_END
    I_ITEM_HEADER
    I_NOT_ITEM
    I_UNDEFINED
    I_PAST_END


cdef struct Items:
    # Input
    const uint8_t* data
    Py_ssize_t end
    # Basic Offset Table and fragments (start of value, length), filled by _parse_items()
    const uint8_t* bot
    Py_ssize_t n_bot
    Py_ssize_t first  # offset of the first fragment's item tag
    Py_ssize_t* frags  # pairs: start, length
    Py_ssize_t n_frags
    Py_ssize_t cap
    ItemError err
    Py_ssize_t err_pos
    uint64_t err_value


cdef int _item_fail(Items* it, ItemError err, Py_ssize_t pos, uint64_t value) noexcept nogil:
    it.err = err
    it.err_pos = pos
    it.err_value = value
    return -1


cdef int _parse_items(Items* it) noexcept nogil:
    """Basic Offset Table, then every fragment item up to the end (or a sequence delimiter)."""
    cdef Py_ssize_t pos, length
    cdef uint32_t tag, value
    cdef Py_ssize_t* grown
    if it.end < 8 or _tag(it.data) != ITEM:
        return _item_fail(it, I_NO_BOT, 0, 0)
    value = _u32le(it.data + 4)
    if value % 4:
        return _item_fail(it, I_BOT_LENGTH, 0, value)
    if <uint64_t>value > <uint64_t>(it.end - 8):
        return _item_fail(it, I_BOT_PAST_END, 0, value)
    it.bot = it.data + 8
    it.n_bot = value // 4
    pos = 8 + <Py_ssize_t>value
    it.first = pos
    while pos < it.end:
        if it.end - pos < 8:
            return _item_fail(it, I_ITEM_HEADER, pos, 0)
        tag = _tag(it.data + pos)
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM:
            return _item_fail(it, I_NOT_ITEM, pos, tag)
        value = _u32le(it.data + pos + 4)
        if value == UNDEFINED_LENGTH:
            return _item_fail(it, I_UNDEFINED, pos, 0)
        if <uint64_t>value > <uint64_t>(it.end - pos - 8):
            return _item_fail(it, I_PAST_END, pos, value)
        length = <Py_ssize_t>value
        if it.n_frags == it.cap:
            it.cap = it.cap * 2 + 16
            grown = <Py_ssize_t*>realloc(it.frags, it.cap * 2 * sizeof(Py_ssize_t))
            if grown == NULL:
                it.cap = -1
                return -1
            it.frags = grown
        it.frags[2 * it.n_frags] = pos + 8
        it.frags[2 * it.n_frags + 1] = length
        it.n_frags += 1
        pos += 8 + length
    return 0


cdef object _item_error(Items* it):
    if it.cap < 0:
        return MemoryError()
    if it.err == I_NO_BOT:
        msg = "encapsulated Pixel Data does not start with a Basic Offset Table item"
    elif it.err == I_BOT_LENGTH:
        msg = f"Basic Offset Table length {it.err_value} is not a multiple of 4"
    elif it.err == I_BOT_PAST_END:
        msg = f"Basic Offset Table of length {it.err_value} runs past the end of the Pixel Data ({it.end})"
    elif it.err == I_ITEM_HEADER:
        msg = f"truncated item header at offset {it.err_pos} of the Pixel Data ({it.end} bytes)"
    elif it.err == I_NOT_ITEM:
        msg = f"expected a fragment item at offset {it.err_pos} of the Pixel Data, got tag {it.err_value:08X}"
    elif it.err == I_UNDEFINED:
        msg = f"fragment item with undefined length at offset {it.err_pos} of the Pixel Data"
    else:
        msg = (f"fragment of length {it.err_value} at offset {it.err_pos} runs past the end "
               f"of the Pixel Data ({it.end})")
    return MalformedDatasetError(msg)


cdef bint _has_eoi(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # pydicom's test: b"\xff\xd9" in fragment[-10:] (JPEG EOI, also the JPEG 2000 EOC marker)
    cdef Py_ssize_t i = n - 10 if n > 10 else 0
    while i + 1 < n:
        if p[i] == 0xFF and p[i + 1] == 0xD9:
            return True
        i += 1
    return False


cdef object _ext_table(ext):
    """(7FE0,0001)/(7FE0,0002) raw value as a held buffer, or None."""
    if ext is None:
        return None
    return _Buffer(ext)


cdef list _spans(Items* it, Py_ssize_t n_frames, ext_offsets, ext_lengths):
    """Frames as lists of (start, length) fragment spans; pydicom's generate_fragmented_frames rules."""
    cdef _Buffer offs, lens
    cdef Py_ssize_t i, count, frame, k, n = it.n_frags
    cdef uint64_t off, length
    cdef Py_ssize_t item
    cdef list frames, current
    cdef Py_ssize_t next_offset, position
    # Extended Offset Table first (one fragment per frame, PS3.3 C.7.6.3.1.8); tables whose
    # counts disagree are ignored, as pydicom does.
    offs = _ext_table(ext_offsets)
    lens = _ext_table(ext_lengths)
    if offs is not None and lens is not None and offs.view.len // 8 == lens.view.len // 8 \
            and offs.view.len >= 8:
        count = offs.view.len // 8
        frames = []
        for i in range(count):
            off = _u64le(offs.data() + 8 * i)
            length = _u64le(lens.data() + 8 * i)
            if off > <uint64_t>(it.end - it.first) or it.end - it.first - <Py_ssize_t>off < 8 \
                    or _tag(it.data + it.first + off) != ITEM:
                raise MalformedDatasetError(
                    f"Extended Offset Table entry {i} ({off}) does not point at a fragment item")
            item = it.first + <Py_ssize_t>off + 8
            if length > <uint64_t>(it.end - item):
                raise MalformedDatasetError(
                    f"Extended Offset Table length {length} of frame {i} runs past the end of "
                    f"the Pixel Data ({it.end})")
            frames.append([(item, <Py_ssize_t>length)])
        return frames
    if n == 0:
        raise MalformedDatasetError("encapsulated Pixel Data holds no fragments")
    if it.n_bot:
        # A new frame starts with the first fragment at or past the next table offset.
        frames = []
        current = []
        frame = 0
        position = 0
        for k in range(n):
            if frame == it.n_bot - 1:
                current.append((it.frags[2 * k], it.frags[2 * k + 1]))
                continue
            next_offset = _u32le(it.bot + 4 * (frame + 1))
            if position < next_offset:
                current.append((it.frags[2 * k], it.frags[2 * k + 1]))
            else:
                frames.append(current)
                frame += 1
                current = [(it.frags[2 * k], it.frags[2 * k + 1])]
            position += it.frags[2 * k + 1] + 8
        frames.append(current)
        return frames
    if n == 1:
        return [[(it.frags[0], it.frags[1])]]
    if n_frames <= 0:
        raise ValueError(
            f"{n} fragments and no offset table: the number of frames is needed to split them")
    if n == n_frames:
        return [[(it.frags[2 * k], it.frags[2 * k + 1])] for k in range(n)]
    if n_frames == 1:
        return [[(it.frags[2 * k], it.frags[2 * k + 1]) for k in range(n)]]
    if n < n_frames:
        raise MalformedDatasetError(f"{n} fragments cannot hold {n_frames} frames")
    # More fragments than frames: a frame ends with the fragment holding a JPEG EOI marker.
    frames = []
    current = []
    for k in range(n):
        current.append((it.frags[2 * k], it.frags[2 * k + 1]))
        if _has_eoi(it.data + it.frags[2 * k], it.frags[2 * k + 1]):
            frames.append(current)
            current = []
    if current:
        frames.append(current)
    return frames


cdef Py_ssize_t _frame_count(n_frames) except -1:
    if n_frames is None:
        return 0
    count = index(n_frames)
    if count < 0:
        raise ValueError(f"n_frames must not be negative, got {count}")
    return count


def frame_offsets(buf, n_frames, ext_offsets=None, ext_lengths=None):
    """Fragment spans of every frame in an encapsulated Pixel Data value.

    ``buf`` is the element's value (Basic Offset Table item first; a trailing sequence delimiter
    is allowed). ``ext_offsets`` / ``ext_lengths`` are the raw (7FE0,0001) / (7FE0,0002) values.
    Returns one list of ``(start, length)`` spans into ``buf`` per frame, grouped like pydicom's
    ``generate_fragmented_frames`` (so without offset tables more frames than ``n_frames`` may
    come back when the fragments hold them). Raises MalformedDatasetError on truncated or
    invalid items.
    """
    cdef _Buffer b = _Buffer(buf)
    cdef Items it
    cdef int rc
    cdef Py_ssize_t count = _frame_count(n_frames)
    memset(&it, 0, sizeof(Items))
    it.data = b.data()
    it.end = b.view.len
    try:
        with nogil:
            rc = _parse_items(&it)
        if rc < 0:
            raise _item_error(&it)
        return _spans(&it, count, ext_offsets, ext_lengths)
    finally:
        free(it.frags)


cdef bytes _join(const uint8_t* data, list spans):
    """The bytes of one frame: its fragments concatenated."""
    cdef Py_ssize_t total = 0, start, length, pos = 0
    cdef bytes out
    cdef char* dst
    if len(spans) == 1:
        start, length = spans[0]
        return PyBytes_FromStringAndSize(<const char*>data + start, length)
    for start, length in spans:
        total += length
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(out)
    for start, length in spans:
        memcpy(dst + pos, data + start, length)
        pos += length
    return out


def get_frame(buf, Py_ssize_t index, n_frames, ext_offsets=None, ext_lengths=None):
    """The encoded bytes of frame ``index`` (its fragments joined); IndexError past the last frame."""
    cdef _Buffer b = _Buffer(buf)
    frames = frame_offsets(buf, n_frames, ext_offsets, ext_lengths)
    if not 0 <= index < len(frames):
        raise IndexError(f"frame index {index} out of range ({len(frames)} frames)")
    return _join(b.data(), frames[index])


cdef class _Frames:
    """Pointers to each frame's encoded bytes: spans into the buffer, multi-fragment frames joined."""
    cdef const uint8_t** ptrs
    cdef Py_ssize_t* lens
    cdef Py_ssize_t count
    cdef list joined  # per frame: its joined bytes (kept alive for the pointers), or None

    def __cinit__(self, _Buffer b, list frames):
        cdef Py_ssize_t i, start, length
        self.count = len(frames)
        self.ptrs = <const uint8_t**>malloc((self.count + 1) * sizeof(uint8_t*))
        self.lens = <Py_ssize_t*>malloc((self.count + 1) * sizeof(Py_ssize_t))
        if self.ptrs == NULL or self.lens == NULL:
            raise MemoryError()
        self.joined = [None] * self.count
        for i in range(self.count):
            spans = frames[i]
            for start, length in spans:
                if start < 0 or length < 0 or start > b.view.len - length:
                    raise ValueError(f"span ({start}, {length}) of frame {i} is outside the buffer")
            if len(spans) == 1:
                start, length = spans[0]
                self.ptrs[i] = b.data() + start
                self.lens[i] = length
            else:
                joined = _join(b.data(), spans)
                self.joined[i] = joined
                self.ptrs[i] = <const uint8_t*>PyBytes_AS_STRING(joined)
                self.lens[i] = len(joined)

    def __dealloc__(self):
        free(self.ptrs)
        free(self.lens)

    cdef bytes frame_bytes(self, Py_ssize_t i):
        """Frame i as bytes (what the codecs take): the joined copy, or a copy of its fragment."""
        if self.joined[i] is not None:
            return self.joined[i]
        return PyBytes_FromStringAndSize(<const char*>self.ptrs[i], self.lens[i])


# --------------------------------------------------------------------------------------------
# RLE Lossless (PS3.5 Annex G)

cdef enum RleError:
    R_NONE
    R_SHORT_HEADER
    R_SEGMENT_COUNT
    R_SHORT_SEGMENT


cdef struct Rle:
    Py_ssize_t frame
    Py_ssize_t segment
    Py_ssize_t value
    Py_ssize_t expected
    RleError err


cdef struct Segment:
    # A PackBits decoder that can stop anywhere and resume: segments of multi-byte samples are
    # decoded side by side, a chunk at a time, then interleaved.
    const uint8_t* src
    Py_ssize_t n
    Py_ssize_t pos
    Py_ssize_t left  # bytes left in the current run
    bint literal
    uint8_t value
    Py_ssize_t produced


cdef Py_ssize_t _segment_read(Segment* g, uint8_t* dst, Py_ssize_t want) noexcept nogil:
    """Up to ``want`` more decoded bytes into dst; fewer only when the segment is exhausted.

    A run cut short by the end of the segment yields what it has, as pydicom's reference
    decoder does; anything after the bytes wanted (padding) is never read. The state lives in
    locals while decoding: through the pointer, every store to dst would force a reload.
    """
    cdef const uint8_t* src = g.src
    cdef Py_ssize_t n = g.n, pos = g.pos, left = g.left, got = 0, count
    cdef bint literal = g.literal
    cdef uint8_t value = g.value, header
    while got < want:
        if left == 0:
            # Whole runs while any run (at most 128 bytes after its header) fits in both what is
            # left of the segment and of dst: each is copied or set as a constant 128 bytes, a
            # few vector moves where an exact length costs a call and mispredicted branches;
            # the next runs overwrite the excess.
            while want - got >= 128 and n - pos > 128:
                header = src[pos]
                if header < 128:
                    memcpy(dst + got, src + pos + 1, 128)
                    got += header + 1
                    pos += header + 2
                elif header > 128:
                    memset(dst + got, src[pos + 1], 128)
                    got += 257 - header
                    pos += 2
                else:
                    pos += 1
            # Near either end: one run at a time, exactly.
            if got == want or pos >= n:
                break
            header = src[pos]
            pos += 1
            if header < 128:  # literal run of header + 1 bytes
                literal = True
                left = header + 1
                if left > n - pos:
                    left = n - pos
            elif header > 128:  # the next byte 257 - header times
                if pos >= n:
                    break
                literal = False
                left = 257 - header
                value = src[pos]
                pos += 1
            continue  # header == 128: no operation
        count = left if left < want - got else want - got
        if literal:
            memcpy(dst + got, src + pos, count)
            pos += count
        else:
            memset(dst + got, value, count)
        left -= count
        got += count
    g.pos = pos
    g.left = left
    g.literal = literal
    g.value = value
    g.produced += got
    return got


cdef void _interleave(const uint8_t* planes, Py_ssize_t stride, uint8_t* out, Py_ssize_t count,
                      int bps, int shift, bint signed) noexcept nogil:
    """Byte planes (most significant first, ``stride`` apart) into little endian samples,
    corrected on the way; the loops vectorize."""
    cdef Py_ssize_t i
    cdef const uint8_t* b0 = planes
    cdef const uint8_t* b1 = planes + stride
    cdef const uint8_t* b2 = planes + 2 * stride
    cdef const uint8_t* b3 = planes + 3 * stride
    cdef uint16_t* o16 = <uint16_t*>out
    cdef uint32_t* o32 = <uint32_t*>out
    cdef uint64_t* o64 = <uint64_t*>out
    cdef uint64_t v
    cdef int k
    cdef uint8_t high, low
    if bps == 2:
        if signed and shift:
            for i in range(count):
                o16[i] = <uint16_t>(<int16_t>(((b0[i] << 8) | b1[i]) << shift) >> shift)
        else:
            # Clearing unused high bits is a mask on each byte, so the bytes interleave as they
            # are: two unpacks per 16 pixels, where building 16-bit words widens, shifts and ors.
            high = (0xFFFF >> shift) >> 8
            low = (0xFFFF >> shift) & 0xFF
            for i in range(count):
                out[2 * i] = b1[i] & low
                out[2 * i + 1] = b0[i] & high
        return
    if bps == 4:
        for i in range(count):
            o32[i] = (<uint32_t>b0[i] << 24) | (<uint32_t>b1[i] << 16) | (<uint32_t>b2[i] << 8) | b3[i]
    else:
        for i in range(count):
            v = 0
            for k in range(8):
                v = (v << 8) | planes[k * stride + i]
            o64[i] = v
    _correct(out, count, bps, shift, signed)


cdef Py_ssize_t CHUNK = 8192  # pixels per interleaving step: bps * CHUNK bytes of scratch


cdef int _rle_frame(const uint8_t* src, Py_ssize_t n, uint8_t* out, Py_ssize_t pixels, int samples,
                    int bps, uint8_t* scratch, int shift, bint signed, Rle* r) noexcept nogil:
    """One frame into out: sample planes one after the other, each pixel little endian."""
    cdef uint32_t segments
    cdef Py_ssize_t s, start, stop, done, count, got
    cdef int sample, k
    cdef Segment seg[15]
    cdef uint8_t* plane
    if n < 64:
        r.err = R_SHORT_HEADER
        r.value = n
        return -1
    segments = _u32le(src)
    if segments != <uint32_t>(samples * bps):
        r.err = R_SEGMENT_COUNT
        r.value = segments
        r.expected = samples * bps
        return -1
    for s in range(segments):
        # Segment s spans src[offset s : offset s+1] with Python slice semantics, like pydicom's
        # reference decoder: offsets past the end or out of order give short segments.
        start = _u32le(src + 4 + 4 * s)
        stop = _u32le(src + 8 + 4 * s) if s + 1 < segments else n
        if start > n:
            start = n
        if stop > n:
            stop = n
        if stop < start:
            stop = start
        memset(&seg[s], 0, sizeof(Segment))
        seg[s].src = src + start
        seg[s].n = stop - start
    # Segments go sample by sample, most significant byte first (PS3.5 G.2).
    for sample in range(samples):
        plane = out + sample * pixels * bps
        done = 0
        while done < pixels:
            count = pixels - done if bps == 1 else min(CHUNK, pixels - done)
            for k in range(bps):
                s = sample * bps + k
                got = _segment_read(&seg[s], (plane + done) if bps == 1 else scratch + k * CHUNK, count)
                if got < count:
                    r.err = R_SHORT_SEGMENT
                    r.segment = s
                    r.value = seg[s].produced
                    r.expected = pixels
                    return -1
            if bps > 1:
                _interleave(scratch, CHUNK, plane + done * bps, count, bps, shift, signed)
            elif shift:
                _correct(plane + done, count, 1, shift, signed)
            done += count
    return 0


cdef object _rle_error(Rle* r):
    where = f"RLE frame {r.frame}"
    if r.err == R_SHORT_HEADER:
        msg = f"{where} has {r.value} bytes, less than its 64-byte header"
    elif r.err == R_SEGMENT_COUNT:
        msg = f"{where} header gives {r.value} segments, expected {r.expected}"
    else:
        msg = f"{where} segment {r.segment} decodes to {r.value} bytes, expected {r.expected}"
    return MalformedDatasetError(msg)


def rle_decode(buf, list frames, out, Py_ssize_t rows, Py_ssize_t columns, int samples_per_pixel,
               int bits_allocated, int bits_stored, bint signed):
    """Decode RLE Lossless frames into ``out``, pydicom's layout: planar, little endian.

    ``frames`` are fragment spans into ``buf`` (from frame_offsets); frame i fills bytes
    ``[i * frame_bytes, (i + 1) * frame_bytes)`` of the writable ``out``, one sample plane after
    the other. When ``bits_stored < bits_allocated`` each value is then corrected like pydicom
    does (unused high bits cleared, or the sign extended when ``signed``).
    """
    cdef _Buffer b = _Buffer(buf)
    cdef _Buffer o = _Buffer(out, True)
    cdef int bps = bits_allocated // 8
    cdef Py_ssize_t pixels, frame_bytes, i
    cdef Rle r
    cdef int rc = 0
    if bits_allocated not in (8, 16, 32, 64):
        raise NotImplementedError(f"RLE with {bits_allocated} bits allocated is not supported")
    if not 1 <= bits_stored <= bits_allocated:
        raise ValueError(f"bits stored {bits_stored} outside 1..{bits_allocated}")
    if rows <= 0 or columns <= 0 or samples_per_pixel <= 0:
        raise ValueError("rows, columns and samples per pixel must be positive")
    if samples_per_pixel * bps > 15:
        raise ValueError(f"{samples_per_pixel} samples of {bits_allocated} bits need more than 15 RLE segments")
    pixels = rows * columns
    frame_bytes = pixels * samples_per_pixel * bps
    if o.view.len != frame_bytes * len(frames):
        raise ValueError(f"out has {o.view.len} bytes, {len(frames)} frames need {frame_bytes * len(frames)}")
    cdef _Frames f = _Frames(b, frames)
    cdef uint8_t* dst = <uint8_t*>o.view.buf
    cdef uint8_t* scratch = NULL
    if bps > 1:
        scratch = <uint8_t*>malloc(bps * CHUNK)
        if scratch == NULL:
            raise MemoryError()
    memset(&r, 0, sizeof(Rle))
    try:
        with nogil:
            for i in range(f.count):
                r.frame = i
                rc = _rle_frame(f.ptrs[i], f.lens[i], dst + i * frame_bytes, pixels, samples_per_pixel, bps,
                                scratch, bits_allocated - bits_stored, signed, &r)
                if rc < 0:
                    break
    finally:
        free(scratch)
    if rc < 0:
        raise _rle_error(&r)


# --------------------------------------------------------------------------------------------
# Value fix-ups: pydicom's unused-bits / sign corrections, integer casts

cdef void _correct(uint8_t* p, Py_ssize_t count, int size, int shift, bint signed) noexcept nogil:
    """``(x << shift) >> shift`` in place on ``count`` native values of ``size`` bytes."""
    cdef Py_ssize_t i
    cdef uint8_t* u8 = p
    cdef uint16_t* u16 = <uint16_t*>p
    cdef uint32_t* u32 = <uint32_t*>p
    cdef uint64_t* u64 = <uint64_t*>p
    if shift <= 0:
        return
    if shift >= 8 * size:  # numpy shifts everything out
        memset(p, 0, count * size)
        return
    if size == 1:
        for i in range(count):
            u8[i] = <uint8_t>(<int8_t>(u8[i] << shift) >> shift) if signed else <uint8_t>(u8[i] << shift) >> shift
    elif size == 2:
        for i in range(count):
            u16[i] = <uint16_t>(<int16_t>(u16[i] << shift) >> shift) if signed else <uint16_t>(u16[i] << shift) >> shift
    elif size == 4:
        for i in range(count):
            u32[i] = <uint32_t>(<int32_t>(u32[i] << shift) >> shift) if signed else <uint32_t>(u32[i] << shift) >> shift
    else:
        for i in range(count):
            u64[i] = <uint64_t>(<int64_t>(u64[i] << shift) >> shift) if signed else <uint64_t>(u64[i] << shift) >> shift


def correct_bits(out, int itemsize, int shift, bint signed):
    """In place ``x = (x << shift) >> shift`` on the native integers of ``itemsize`` bytes in ``out``.

    pydicom's correction for unused high bits (and for JPEG-LS / JPEG 2000 signedness): clears
    them, or with ``signed`` extends the sign of the remaining ``8 * itemsize - shift`` bits.
    """
    cdef _Buffer o = _Buffer(out, True)
    if itemsize not in (1, 2, 4, 8):
        raise ValueError(f"itemsize must be 1, 2, 4 or 8, got {itemsize}")
    if o.view.len % itemsize:
        raise ValueError(f"buffer of {o.view.len} bytes is not a whole number of {itemsize}-byte values")
    with nogil:
        _correct(<uint8_t*>o.view.buf, o.view.len // itemsize, itemsize, shift, signed)


cdef inline int64_t _load(const uint8_t* p, int size, bint signed) noexcept nogil:
    if size == 1:
        return (<const int8_t*>p)[0] if signed else p[0]
    if size == 2:
        return (<const int16_t*>p)[0] if signed else (<const uint16_t*>p)[0]
    if size == 4:
        return (<const int32_t*>p)[0] if signed else (<const uint32_t*>p)[0]
    return (<const int64_t*>p)[0]


cdef inline void _store(uint8_t* p, int size, int64_t v) noexcept nogil:
    if size == 1:
        p[0] = <uint8_t>v
    elif size == 2:
        (<uint16_t*>p)[0] = <uint16_t>v
    elif size == 4:
        (<uint32_t*>p)[0] = <uint32_t>v
    else:
        (<uint64_t*>p)[0] = <uint64_t>v


cdef void _cast(const uint8_t* src, int src_size, uint8_t* dst, int dst_size, bint signed,
                Py_ssize_t count) noexcept nogil:
    """numpy's integer cast: sign- or zero-extend, or truncate (C semantics)."""
    cdef Py_ssize_t i
    if src_size == dst_size:
        memcpy(dst, src, count * src_size)
    elif src_size == 1 and dst_size == 2 and not signed:
        for i in range(count):
            (<uint16_t*>dst)[i] = src[i]
    else:
        for i in range(count):
            _store(dst + i * dst_size, dst_size, _load(src + i * src_size, src_size, signed))


# --------------------------------------------------------------------------------------------
# JPEG family and JPEG 2000: codestream parameters (pydicom's parsers) and the frame loop

cdef inline bint _is_sof(const uint8_t* p) noexcept nogil:
    # pydicom's _SOF: FFC0-FFCF except DHT (C4), JPG (C8), DAC (CC); plus JPEG-LS SOF55 (F7)
    if p[0] != 0xFF:
        return False
    if 0xC0 <= p[1] <= 0xCF:
        return p[1] != 0xC4 and p[1] != 0xC8 and p[1] != 0xCC
    return p[1] == 0xF7


cdef int _jpeg_params(const uint8_t* s, Py_ssize_t n, int* precision, bint* rgb_ids,
                      bint* jfif) noexcept nogil:
    """pydicom's _get_jpg_parameters, reduced to what decoding uses; -1 where it returns {}."""
    cdef Py_ssize_t off = 2, length, comps, i
    cdef bint app_jfif[16]
    cdef bint ls
    memset(app_jfif, 0, sizeof(app_jfif))
    if n < 2 or s[0] != 0xFF or s[1] != 0xD8:
        return -1
    while not (n - off >= 2 and _is_sof(s + off)):
        if n - off < 4:
            return -1
        length = _u16be(s + off + 2)
        if s[off] == 0xFF and (s[off + 1] & 0xF0) == 0xE0:
            # APPn value s[off + 4 : off + 2 + length]; a later APPn replaces an earlier one.
            app_jfif[s[off + 1] & 0x0F] = (length >= 6 and n - off >= 8 and s[off + 4] == b"J"
                                           and s[off + 5] == b"F" and s[off + 6] == b"I"
                                           and s[off + 7] == b"F")
        off += length + 2
    ls = s[off + 1] == 0xF7
    off += 2  # SOF length, then precision, rows, columns, component count, components
    if n - off < 8:
        return -1
    precision[0] = s[off + 2]
    comps = s[off + 7]
    off += 8
    if comps and n - off <= 3 * (comps - 1):
        return -1
    rgb_ids[0] = comps == 3 and (
        (s[off] == 82 and s[off + 3] == 71 and s[off + 6] == 66)
        or (s[off] == 114 and s[off + 3] == 103 and s[off + 6] == 98))
    jfif[0] = False
    for i in range(16):
        jfif[0] = jfif[0] or app_jfif[i]
    if ls:  # pydicom then reads NEAR and ILV from the SOS; failing that it returns {}
        off += 3 * comps
        while not (n - off >= 2 and s[off] == 0xFF and s[off + 1] == 0xDA):
            if n - off < 4:
                return -1
            off += _u16be(s + off + 2) + 2
        if n - off < 5:
            return -1
        off += 5 + s[off + 4] * 2
        if n - off < 2:
            return -1
    return 0


cdef int _j2k_params(const uint8_t* s, Py_ssize_t n, int* precision, int* signed) noexcept nogil:
    """pydicom's get_j2k_parameters: SIZ of the codestream, after the JP2 boxes if any."""
    cdef Py_ssize_t off = 0, length, i
    if n >= 8 and s[0] == 0 and s[1] == 0 and s[2] == 0 and s[3] == 0x0C and s[4] == 0x6A \
            and s[5] == 0x50 and s[6] == 0x20 and s[7] == 0x20:
        off = 12
        while off < n:
            length = 0
            for i in range(4):
                if off + i < n:
                    length = (length << 8) | s[off + i]
            if n - off >= 8 and s[off + 4] == b"j" and s[off + 5] == b"p" and s[off + 6] == b"2" \
                    and s[off + 7] == b"c":
                off += 8
                break
            if length == 0:  # pydicom would loop forever here
                return -1
            off += length
    if n - off < 43 or s[off] != 0xFF or s[off + 1] != 0x4F or s[off + 2] != 0xFF \
            or s[off + 3] != 0x51:
        return -1
    precision[0] = (s[off + 42] & 0x7F) + 1
    signed[0] = 1 if s[off + 42] & 0x80 else 0
    return 0


def jpeg_info(src):
    """``(precision, rgb_component_ids, jfif)`` of a JPEG / JPEG-LS codestream, read like pydicom.

    ``(-1, False, False)`` where pydicom's parser gives up (it then assumes Bits Stored).
    """
    cdef _Buffer b = _Buffer(src)
    cdef int precision = -1
    cdef bint rgb_ids = False, jfif = False
    if _jpeg_params(b.data(), b.view.len, &precision, &rgb_ids, &jfif) < 0:
        return (-1, False, False)
    return (precision, rgb_ids, jfif)


def j2k_info(src):
    """``(precision, signed)`` of the first component of a JPEG 2000 codestream, or ``(-1, -1)``."""
    cdef _Buffer b = _Buffer(src)
    cdef int precision = -1, signed = -1
    if _j2k_params(b.data(), b.view.len, &precision, &signed) < 0:
        return (-1, -1)
    return (precision, signed)


_CODECS = {}


cdef object _codec(str name):
    """The codec module, imported on first use so that the kernels load without it."""
    module = _CODECS.get(name)
    if module is None:
        try:
            module = __import__(name)
        except ImportError as exc:
            package = "pylibjpeg-libjpeg" if name == "_libjpeg" else "pylibjpeg-openjpeg"
            raise NotImplementedError(f"decoding this transfer syntax needs {package}") from exc
        _CODECS[name] = module
    return module


cdef object _decode_libjpeg(bytes src, Py_ssize_t index, int precision, Py_ssize_t samples):
    # One pass straight into a buffer of the size the SOF gives (samples, precision); libjpeg
    # checks that size itself. Where it differs, the public path decodes (two passes) and the
    # caller judges what came out.
    if precision > 0 and libjpeg_call is not None and libjpeg_call.available():
        data = bytearray(samples * (1 if precision <= 8 else 2))
        code, message = libjpeg_call.decode_into(src, data)
        if code == 0:
            return data
        if code != libjpeg_call.SIZE_MISMATCH:
            raise MalformedDatasetError(f"libjpeg cannot decode frame {index}: {message or code} ({code})")
    status, data, _ = _codec("_libjpeg").decode(src, 0, False)
    code, _, message = status.decode("utf-8", "replace").partition("::::")
    if code != "0" or data is None:
        raise MalformedDatasetError(f"libjpeg cannot decode frame {index}: {message or code} ({code})")
    return data


cdef object _decode_openjpeg(bytes src, Py_ssize_t index):
    cdef int fmt
    if src[:4] == b"\xff\x4f\xff\x51":
        fmt = 0
    elif src[:4] == b"\x0d\x0a\x87\x0a" or src[:12] == b"\x00\x00\x00\x0c\x6a\x50\x20\x20\x0d\x0a\x87\x0a":
        fmt = 2
    else:
        raise MalformedDatasetError(f"frame {index} is not a JPEG 2000 codestream")
    try:
        code, data = _codec("_openjpeg").decode(BytesIO(src), fmt, False)
    except RuntimeError as exc:  # the header did not parse
        raise MalformedDatasetError(f"openjpeg cannot decode frame {index}: {exc}") from None
    if code != 0:
        raise MalformedDatasetError(f"openjpeg cannot decode frame {index} (error {code})")
    return data


cdef int _view_size(str codec, int precision, int itemsize) noexcept:
    # The container pydicom reads each decoded frame as: JPEG-LS and JPEG 2000 output is sized
    # by the codestream's precision, JPEG output by Bits Allocated.
    if codec == "jpegls":
        return 1 if 0 < precision <= 8 else 2 if 8 < precision <= 16 else itemsize
    if codec == "j2k":
        return 1 if 0 < precision <= 8 else 2 if 8 < precision <= 16 else 4 if 16 < precision <= 32 else itemsize
    return itemsize


def decode_frames(str codec, buf, list frames, out, Py_ssize_t frame_pixels, int itemsize,
                  bint signed, int bits_stored, Py_ssize_t required):
    """Decode JPEG (``"jpeg"``), JPEG-LS (``"jpegls"``) or JPEG 2000 (``"j2k"``) frames into ``out``.

    ``frames`` are fragment spans into ``buf``; each decoded frame must hold ``frame_pixels``
    samples, read the way pydicom reads them (see _view_size) and cast to the ``itemsize``-byte
    integers of ``out`` (signed or not), frame after frame. Frames past ``required`` whose size
    does not fit are skipped, as pydicom does with excess frames. Returns ``(frames written,
    [(precision, signed, rgb_component_ids, jfif) per written frame])`` with precision and
    signedness as pydicom assumes them (Bits Stored, Pixel Representation when unknown).
    """
    cdef _Buffer b = _Buffer(buf)
    cdef _Buffer o = _Buffer(out, True)
    cdef Py_ssize_t i, written = 0, frame_bytes = frame_pixels * itemsize
    cdef int precision, is_signed, size
    cdef bint rgb_ids, jfif
    cdef const uint8_t* src
    cdef uint8_t* dst
    if codec not in ("jpeg", "jpegls", "j2k"):
        raise ValueError(f"unknown codec {codec!r}")
    if itemsize not in (1, 2, 4, 8):
        raise ValueError(f"itemsize must be 1, 2, 4 or 8, got {itemsize}")
    if o.view.len != frame_bytes * len(frames):
        raise ValueError(f"out has {o.view.len} bytes, {len(frames)} frames need {frame_bytes * len(frames)}")
    cdef _Frames f = _Frames(b, frames)
    infos = []
    for i in range(f.count):
        src_bytes = f.frame_bytes(i)
        precision = is_signed = -1
        rgb_ids = jfif = False
        if codec == "j2k":
            _j2k_params(f.ptrs[i], f.lens[i], &precision, &is_signed)
            decoded = _decode_openjpeg(src_bytes, i)
        else:
            _jpeg_params(f.ptrs[i], f.lens[i], &precision, &rgb_ids, &jfif)
            decoded = _decode_libjpeg(src_bytes, i, precision, frame_pixels)
        del src_bytes
        if precision < 0:
            precision = bits_stored
        if is_signed < 0:
            is_signed = signed
        size = _view_size(codec, precision, itemsize)
        if len(decoded) != frame_pixels * size:
            if i >= required:
                continue
            raise MalformedDatasetError(
                f"frame {i} decodes to {len(decoded)} bytes, expected {frame_pixels} samples "
                f"of {size} bytes")
        src = <const uint8_t*>(<char*>decoded)
        dst = <uint8_t*>o.view.buf + written * frame_bytes
        with nogil:
            _cast(src, size, dst, itemsize, signed, frame_pixels)
        infos.append((precision, is_signed, rgb_ids, jfif))
        written += 1
    return written, infos


# --------------------------------------------------------------------------------------------
# YBR_FULL to RGB, exactly as pydicom's float32 formula rounds

# PS3.3 C.7.6.3.1.2 with pydicom's float32 coefficients, in 16.16 fixed point: each channel is
# Y plus one or two table terms. pydicom's float32 pipeline lands within ~1e-4 of the exact value
# and the tables within ~2e-5, so a result can only differ from pydicom's when the exact value
# lies within _TIE of a rounding boundary; those few pixels are recomputed with pydicom's own
# numpy formula (ybr_to_rgb_exact).
cdef int32_t _R_CR[256]
cdef int32_t _G_CB[256]
cdef int32_t _G_CR[256]
cdef int32_t _B_CB[256]
cdef int32_t _TIE = 66  # ~1e-3 in 1/65536 units
cdef int32_t _BIAS = (1024 << 16) + 32768  # + 0.5, and keeps the sums positive
cdef uint8_t _CLAMP[2048]  # integer part + 1024 -> clipped to 0..255, without branches


cdef void _init_tables():
    import numpy as np
    m = np.asarray([[1.000, 1.000, 1.000],
                    [0.000, -0.114 * 1.772 / 0.587, 1.772],
                    [1.402, -0.299 * 1.402 / 0.587, 0.000]], dtype=np.float32)
    cdef double r_cr = float(m[2, 0]), g_cb = float(m[1, 1]), g_cr = float(m[2, 1])
    cdef double b_cb = float(m[1, 2])
    cdef int v
    for v in range(2048):
        _CLAMP[v] = 0 if v < 1024 else 255 if v > 1024 + 255 else v - 1024
    for v in range(256):
        _R_CR[v] = <int32_t>round((v - 128) * r_cr * 65536)
        _G_CB[v] = <int32_t>round((v - 128) * g_cb * 65536)
        _G_CR[v] = <int32_t>round((v - 128) * g_cr * 65536)
        _B_CB[v] = <int32_t>round((v - 128) * b_cb * 65536)


_init_tables()


cdef Py_ssize_t _ybr_rgb(const uint8_t* src, uint8_t* dst, Py_ssize_t pixels, int64_t** ties,
                         uint8_t** saved) noexcept nogil:
    """Convert; return the count of near-tie pixels (index and original YBR saved), -1 on OOM."""
    cdef Py_ssize_t i, n = 0, cap = 0
    cdef int32_t y, r, g, b
    cdef uint8_t yy, bb, rr
    cdef void* grown
    for i in range(pixels):
        yy = src[3 * i]
        bb = src[3 * i + 1]
        rr = src[3 * i + 2]
        y = (<int32_t>yy << 16) + _BIAS
        r = y + _R_CR[rr]
        g = y + _G_CB[bb] + _G_CR[rr]
        b = y + _B_CB[bb]
        dst[3 * i] = _CLAMP[r >> 16]
        dst[3 * i + 1] = _CLAMP[g >> 16]
        dst[3 * i + 2] = _CLAMP[b >> 16]
        # A fraction within _TIE of 0 or 1 (mod 1): too close to call.
        if (((r + _TIE) & 0xFFFF) < 2 * _TIE) | (((g + _TIE) & 0xFFFF) < 2 * _TIE) \
                | (((b + _TIE) & 0xFFFF) < 2 * _TIE):
            if n == cap:
                cap = cap * 2 + 256
                grown = realloc(ties[0], cap * sizeof(int64_t))
                if grown == NULL:
                    return -1
                ties[0] = <int64_t*>grown
                grown = realloc(saved[0], cap * 3)
                if grown == NULL:
                    return -1
                saved[0] = <uint8_t*>grown
            ties[0][n] = i
            saved[0][3 * n] = yy
            saved[0][3 * n + 1] = bb
            saved[0][3 * n + 2] = rr
            n += 1
    return n


def ybr_to_rgb(src, dst):
    """YBR_FULL to RGB on 8-bit interleaved samples, identical to pydicom's conversion.

    ``src`` and ``dst`` are buffers of the same length (a multiple of 3); they may be the same
    object (converted in place).
    """
    cdef _Buffer s = _Buffer(src)
    cdef _Buffer d = _Buffer(dst, True)
    cdef int64_t* ties = NULL
    cdef uint8_t* saved = NULL
    cdef Py_ssize_t n
    if s.view.len != d.view.len or s.view.len % 3:
        raise ValueError("src and dst must have the same length, a multiple of 3")
    try:
        with nogil:
            n = _ybr_rgb(s.data(), <uint8_t*>d.view.buf, s.view.len // 3, &ties, &saved)
        if n < 0:
            raise MemoryError()
        if n:
            import numpy as np
            from pacsnode._native._ref.pixels import ybr_to_rgb_exact
            index = np.frombuffer(PyBytes_FromStringAndSize(<char*>ties, n * sizeof(int64_t)), np.int64)
            ybr = np.frombuffer(PyBytes_FromStringAndSize(<char*>saved, n * 3), np.uint8).reshape(n, 3)
            np.frombuffer(dst, np.uint8).reshape(-1, 3)[index] = ybr_to_rgb_exact(ybr)
    finally:
        free(ties)
        free(saved)
