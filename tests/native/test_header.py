"""pacsnode._native.header (Cython) and its twin pacsnode._native._ref.header.

Three kinds of evidence:
* the corpus (pydicom's test files + pydicom-data): every value the scanner returns is compared
  byte for byte with what pydicom's own parser read at the same place;
* native vs ref on the corpus, on truncated copies and on seeded byte flips: the same dict or
  the same exception class, never a crash;
* hand-built encodings for the cases the corpus covers thinly or not at all.
"""
import functools
import importlib
import os
import random
import struct
import subprocess
import sys
import warnings
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.uid import UID

import pacsnode._native as native_pkg
from pacsnode._native._ref import header as ref_header
from pacsnode.errors import MalformedDatasetError
from tests.corpus import corpus_files
from tests.peers import IN_CI, require


def _import_native():
    """The compiled module itself, whichever module pacsnode selected; None if not built."""
    chosen = native_pkg.header
    try:
        return importlib.import_module("pacsnode._native.header")
    except ImportError:
        return None
    finally:
        # Importing the submodule by name rebinds the package attribute; keep the selection.
        native_pkg.header = chosen


native_header = _import_native()
ROOT = Path(__file__).resolve().parents[2]
CORPUS = corpus_files()

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_DELIM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LAST_TAG = 0xFFFFFFFF  # asking for it makes the scanner walk the whole buffer

# What the node indexes: the typical query of a header scan.
INDEX_TAGS = (
    0x00080005, 0x00080016, 0x00080018, 0x00080020, 0x00080021, 0x00080023, 0x00080030,
    0x00080050, 0x00080060, 0x00080080, 0x00080090, 0x00081030, 0x0008103E, 0x00100010,
    0x00100020, 0x00100021, 0x00100030, 0x00100040, 0x00180015, 0x0020000D, 0x0020000E,
    0x00200010, 0x00200011, 0x00200013, 0x00280008, 0x00280010, 0x00280011,
)  # fmt: skip


def _need_native():
    require(native_header is not None, "pacsnode._native.header not built (python setup.py build_ext --inplace)")
    return native_header


@pytest.fixture(params=["native", "ref"])
def twin(request):
    return _need_native() if request.param == "native" else ref_header


def _outcome(fn, *args):
    """The result, or the exception class for malformed input; any other exception propagates."""
    try:
        return fn(*args)
    except MalformedDatasetError:
        return MalformedDatasetError


# --------------------------------------------------------------------------------------------
# pydicom's view of each corpus file


@dataclass
class Reference:
    raw: bytes  # the file
    meta: dict  # group 0002 raw values, as pydicom's parser read them
    meta_end: int
    data: bytes  # the bytes holding the dataset (inflated for deflate)
    offset: int
    implicit: bool
    little: bool
    values: dict = field(default_factory=dict)  # every complete top-level element
    broken: bool = False  # pydicom hit a truncated/invalid element after `values`
    deflated: bool = False
    lying_syntax: bool = False
    undefined_sq: bool = False
    encapsulated: bool = False


def _generate(data, offset, implicit, little, stop_when=None):
    """(element, stream position after it) from pydicom's parser; the error that stopped it."""
    fp = DicomBytesIO(data)
    fp.seek(offset)
    elements = data_element_generator(fp, implicit, little, stop_when=stop_when)
    out = []
    while True:
        try:
            elem = next(elements)
        except StopIteration:
            return out, None, fp.tell()
        except Exception as exc:  # pydicom's way to report a bad file (EOFError, OSError...)
            return out, exc, fp.tell()
        out.append((elem, fp.tell()))


@functools.cache
def reference(path):
    """pydicom's raw reading of ``path``, or None if pydicom cannot read it at all."""
    raw = Path(path).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path, force=True)
        except Exception:
            return None

    meta, meta_end = {}, 0
    if raw[128:132] == b"DICM":
        not_group_2 = lambda tag, vr, length: tag.group != 2  # noqa: E731
        elems, _, meta_end = _generate(raw, 132, False, True, not_group_2)
        meta = {int(e.tag): raw[e.value_tell : end] for e, end in elems}
        assert set(meta) == set(ds.file_meta.keys())
        for tag in ds.file_meta.keys():
            elem = ds.file_meta.get_item(tag)
            if isinstance(elem, RawDataElement):  # not converted by pydicom: its raw bytes
                assert (elem.value or b"") == meta[tag]

    # The encoding pydicom actually read the dataset with: it sniffs the first element, so a
    # syntax that lies (SC_rgb_jpeg.dcm: says explicit, is implicit) is corrected; raw elements
    # remember it. Without meta there is no syntax to start from either.
    read_with = next(
        ((e.is_implicit_VR, e.is_little_endian) for e in map(ds.get_item, ds.keys())
         if isinstance(e, RawDataElement)),
        ds.original_encoding,
    )
    ref = Reference(raw, meta, meta_end, raw, meta_end, *read_with)
    if 0x00020010 in meta:
        syntax = UID(meta[0x00020010].rstrip(b"\0 ").decode())
        if syntax.is_deflated:
            ref.data, ref.offset, ref.deflated = zlib.decompress(raw[meta_end:], -15), 0, True
        ref.lying_syntax = (syntax.is_implicit_VR, syntax.is_little_endian) != read_with

    data = ref.data
    elems, error, end_pos = _generate(data, ref.offset, ref.implicit, ref.little)
    for elem, end in elems:
        if isinstance(elem, RawDataElement) and elem.length != UNDEFINED:
            value = data[elem.value_tell : end]
            if len(value) != elem.length:  # pydicom returns a short value at end of file
                ref.broken = True
                break
            if elem.length:
                assert elem.value == value
        else:  # undefined length: pixel data (raw) or a sequence pydicom parsed
            start = elem.value_tell if isinstance(elem, RawDataElement) else elem.file_tell
            assert data[end - 8 : end - 4] in (b"\xfe\xff\xdd\xe0", b"\xff\xfe\xe0\xdd")
            value = data[start : end - 8]
            if isinstance(elem, RawDataElement):
                assert elem.value == value
                ref.encapsulated = True
            else:
                ref.undefined_sq = True
        ref.values[int(elem.tag)] = value
    ref.broken = ref.broken or error is not None or end_pos != len(data)
    return ref


def _absent_tags(present):
    tags = {t + 1 for t in sorted(present)[::4]} | {0x00000001, 0x00090010, LAST_TAG}
    if present:
        tags.add(min(present) - 1)
    return {t for t in tags if 0 <= t <= LAST_TAG} - set(present)


def _name(path):
    return os.path.basename(path)


# --------------------------------------------------------------------------------------------
# 1. the corpus against pydicom


def test_corpus_is_large_and_mostly_readable():
    unreadable = [_name(p) for p in CORPUS if reference(p) is None]
    assert len(CORPUS) > 120
    assert len(unreadable) < 5, unreadable


def test_corpus_covers_the_encodings():
    refs = [r for r in map(reference, CORPUS) if r is not None]
    assert {(r.implicit, r.little) for r in refs} == {(True, True), (False, True), (False, False)}
    assert any(r.deflated for r in refs)
    assert sum(r.undefined_sq for r in refs) >= 5
    assert sum(r.encapsulated for r in refs) >= 20
    assert sum(not r.broken for r in refs) >= 130
    assert sum(r.lying_syntax for r in refs) < 3


@pytest.mark.parametrize("path", CORPUS, ids=_name)
def test_corpus_matches_pydicom(twin, path):
    ref = reference(path)
    if ref is None:
        pytest.skip("pydicom cannot read it (counted in test_corpus_is_large_and_mostly_readable)")

    assert twin.read_file_meta(ref.raw) == (ref.meta, ref.meta_end)

    scan = functools.partial(twin.scan_dataset, implicit_vr=ref.implicit, little_endian=ref.little,
                             offset=ref.offset)
    present = sorted(ref.values)
    if ref.broken:
        # Everything pydicom read completely is found, and the damage is reported, not skipped.
        assert scan(ref.data, tuple(present)) == ref.values
        with pytest.raises(MalformedDatasetError, match="offset"):
            scan(ref.data, tuple(sorted({*present, LAST_TAG})))
        return

    everything = tuple(sorted({*present, *_absent_tags(present)}))
    assert scan(ref.data, everything) == ref.values

    indexed = {t: ref.values[t] for t in INDEX_TAGS if t in ref.values}
    assert scan(memoryview(ref.data), INDEX_TAGS) == indexed

    rng = random.Random(_name(path))
    subset = tuple(sorted(rng.sample(present, len(present) // 3)))
    assert scan(bytearray(ref.data), subset) == {t: ref.values[t] for t in subset}


# --------------------------------------------------------------------------------------------
# 2. native vs ref: same dict or same exception class, on intact, truncated and flipped bytes


def _compare_twins(native, buf, tags, implicit, little, offset):
    for enc in ((implicit, little), (not implicit, little), (implicit, not little)):
        for wanted in (tags, INDEX_TAGS):
            got = _outcome(native.scan_dataset, buf, wanted, *enc, offset)
            want = _outcome(ref_header.scan_dataset, buf, wanted, *enc, offset)
            assert got == want, (enc, wanted)


@pytest.mark.parametrize("path", CORPUS, ids=_name)
def test_twins_agree(path):
    native = _need_native()
    raw = Path(path).read_bytes()
    ref = reference(path)
    if ref is not None and not ref.deflated:
        implicit, little, offset = ref.implicit, ref.little, ref.offset
        tags = tuple(sorted({*ref.values, LAST_TAG}))
    else:  # scan raw (or still deflated) bytes anyway: garbage in, same outcome out
        implicit, little, tags = False, True, (0x00080018, LAST_TAG)
        offset = ref.meta_end if ref is not None else 0
    rng = random.Random(_name(path))

    def check(buf):
        meta = _outcome(native.read_file_meta, buf)
        assert meta == _outcome(ref_header.read_file_meta, buf)
        start = min(offset, len(buf))
        _compare_twins(native, buf, tags, implicit, little, start)

    check(raw)

    # Truncations: half in the header region, half anywhere (memoryview slices, no copies).
    head = min(len(raw), offset + 4096)
    cuts = {head * i // 10 for i in range(10)} | {rng.randrange(len(raw)) for _ in range(10)}
    view = memoryview(raw)
    for cut in sorted(cuts):
        check(view[:cut])

    # Byte flips, mostly where the element headers are.
    mutable = bytearray(raw)
    for _ in range(20):
        hi = head if rng.random() < 0.8 else len(raw)
        spots = [rng.randrange(hi) for _ in range(rng.randint(1, 3))]
        saved = [mutable[i] for i in spots]
        for i in spots:
            mutable[i] ^= rng.randrange(1, 256)
        check(mutable)
        for i, b in zip(spots, saved):
            mutable[i] = b


# --------------------------------------------------------------------------------------------
# 3. hand-built encodings

LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
            b"UV"}


@dataclass(frozen=True)
class Enc:
    implicit: bool
    little: bool

    def tag(self, tag):
        return struct.pack("<HH" if self.little else ">HH", tag >> 16, tag & 0xFFFF)

    def u32(self, n):
        return struct.pack("<I" if self.little else ">I", n)

    def elem(self, tag, vr, value=b"", undefined=False):
        length = UNDEFINED if undefined else len(value)
        if self.implicit:
            return self.tag(tag) + self.u32(length) + value
        if vr in LONG_VRS:
            return self.tag(tag) + vr + b"\0\0" + self.u32(length) + value
        return self.tag(tag) + vr + struct.pack("<H" if self.little else ">H", length) + value

    def item(self, body, undefined=False):
        if undefined:
            return self.tag(ITEM) + self.u32(UNDEFINED) + body + self.tag(ITEM_DELIM) + self.u32(0)
        return self.tag(ITEM) + self.u32(len(body)) + body

    def seq_delim(self):
        return self.tag(SEQ_DELIM) + self.u32(0)

    def seq(self, tag, items, undefined=True, vr=b"SQ"):
        """(encoded element, the value the scanner must return for it)."""
        body = b"".join(items)
        if undefined:
            return self.elem(tag, vr, body + self.seq_delim(), undefined=True), body
        return self.elem(tag, vr, body), body


IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE = Enc(True, True), Enc(False, True), Enc(False, False)
ENCODINGS = pytest.mark.parametrize(
    "enc", [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE], ids=["implicit", "explicit-le", "explicit-be"]
)


def _scan(twin, enc, buf, tags, offset=0):
    return twin.scan_dataset(buf, tuple(tags), enc.implicit, enc.little, offset)


@ENCODINGS
def test_nested_undefined_length_sequences(twin, enc):
    e = enc
    inner_sq, _ = e.seq(0x00400555, [
        e.item(e.elem(0x0040A043, b"SQ", b"", undefined=True) + e.seq_delim(), undefined=True),
        e.item(e.elem(0x0040A160, b"UT", b"text")),
    ])
    defined_sq, _ = e.seq(0x00082112, [e.item(inner_sq, undefined=True)], undefined=False)
    middle_sq, _ = e.seq(0x00089215, [
        e.item(e.elem(0x00080100, b"SH", b"CODE01")),
        e.item(e.elem(0x00100010, b"PN", b"Nested^Name") + defined_sq, undefined=True),
        e.item(b"", undefined=True),
        e.item(b""),
    ])
    outer_sq, outer_value = e.seq(0x00081140, [
        e.item(e.elem(0x00081150, b"UI", b"1.2.3\0") + middle_sq, undefined=True),
        e.item(e.elem(0x00081155, b"UI", b"1.2.4\0")),
        e.item(middle_sq, undefined=True),
    ])
    empty_sq, _ = e.seq(0x00082111, [])
    buf = (
        e.elem(0x00080005, b"CS", b"ISO_IR 100")
        + outer_sq
        + empty_sq
        + e.elem(0x00100010, b"PN", b"Top^Name")
        + e.elem(0x00100020, b"LO", b"ID42")
    )
    got = _scan(twin, e, buf, [0x00080005, 0x00081140, 0x00082111, 0x00100010, 0x00100020])
    assert got == {
        0x00080005: b"ISO_IR 100",
        0x00081140: outer_value,
        0x00082111: b"",
        0x00100010: b"Top^Name",  # the nested (0010,0010) is not top level
        0x00100020: b"ID42",
    }
    # The sequence value stops right before its delimiter and holds everything nested.
    assert got[0x00081140].count(b"Nested^Name") == 2

    # Without its final delimiter the outer sequence is unterminated.
    broken = buf.replace(e.seq_delim() + e.seq(0x00082111, [])[0], e.seq(0x00082111, [])[0], 1)
    with pytest.raises(MalformedDatasetError, match="offset"):
        _scan(twin, e, broken, [0x00100020])


@pytest.mark.parametrize("enc", [EXPLICIT_LE, EXPLICIT_BE], ids=["explicit-le", "explicit-be"])
def test_undefined_length_un_is_implicit_little_endian(twin, enc):
    imp = IMPLICIT_LE  # PS3.5 6.2.2: the value of an undefined-length UN is implicit VR LE
    un_nested, _ = imp.seq(0x00091002, [
        imp.item(imp.elem(0x00091003, None, b"ab"), undefined=True),
    ])
    un_body = [
        imp.item(imp.elem(0x00091001, None, b"xy") + un_nested, undefined=True),
        imp.item(imp.elem(0x00091001, None, b"zz")),
    ]
    un_elem, un_value = enc.seq(0x00091010, un_body, vr=b"UN")
    # The delimiter of the UN value itself is implicit LE too.
    un_elem = un_elem[:-8] + imp.seq_delim()
    # A UN nested in an explicit sequence: explicit again after it ends, nested levels too.
    explicit_after, _ = enc.seq(0x00091023, [
        enc.item(enc.elem(0x00091024, b"OB", b"\x01\x02") + enc.elem(0x00091025, b"LO", b"ex"),
                 undefined=True),
    ])
    explicit_sq, sq_value = enc.seq(0x00091020, [
        enc.item(enc.elem(0x00091021, b"UN", un_value + imp.seq_delim(), undefined=True)
                 + enc.elem(0x00091022, b"LO", b"after") + explicit_after, undefined=True),
    ])
    buf = (
        enc.elem(0x00090010, b"LO", b"PRIVATE")
        + un_elem
        + explicit_sq
        + enc.elem(0x00100020, b"LO", b"ID42")
    )
    got = _scan(twin, enc, buf, [0x00091010, 0x00091020, 0x00100020])
    assert got == {0x00091010: un_value, 0x00091020: sq_value, 0x00100020: b"ID42"}

    if not enc.little:  # read in the dataset's own byte order the UN items are garbage
        as_sq = buf.replace(b"UN", b"SQ", 1)
        with pytest.raises(MalformedDatasetError):
            _scan(twin, enc, as_sq, [0x00100020])


def test_big_endian_values_are_not_swapped(twin):
    e = EXPLICIT_BE
    buf = (
        e.elem(0x00280010, b"US", b"\x02\x00")
        + e.elem(0x00280011, b"US", b"\x00\x03")
        + e.elem(0x00281050, b"DS", b"40 ")
        + e.elem(0x7FE00010, b"OW", b"\x01\x02\x03\x04")
    )
    assert _scan(twin, e, buf, [0x00280010, 0x00280011, 0x00281050, 0x7FE00010]) == {
        0x00280010: b"\x02\x00",
        0x00280011: b"\x00\x03",
        0x00281050: b"40 ",
        0x7FE00010: b"\x01\x02\x03\x04",
    }


@pytest.mark.parametrize("with_offsets", [False, True], ids=["empty-bot", "bot"])
@pytest.mark.parametrize("enc", [EXPLICIT_LE, IMPLICIT_LE], ids=["explicit-le", "implicit-le"])
def test_encapsulated_pixel_data(twin, enc, with_offsets):
    e = EXPLICIT_LE  # encapsulated pixel data items are always little endian
    frame1 = b"\xff\xd8" + e.seq_delim() + b"\x00" * 6 + b"\xff\xd9"  # a lookalike delimiter
    frame2 = b"\xff\xd8" + bytes(range(40)) + b"\xff\xd9"
    bot = struct.pack("<2I", 0, len(frame1) + 8) if with_offsets else b""
    fragments = e.item(bot) + e.item(frame1) + e.item(frame2)
    pixel = enc.elem(0x7FE00010, b"OB", fragments + e.seq_delim(), undefined=True)
    buf = (
        enc.elem(0x00280010, b"US", b"\x02\x00")
        + pixel
        + enc.elem(0xFFFCFFFC, b"OB", b"\0" * 6)  # Data Set Trailing Padding: a plain element
    )
    got = _scan(twin, enc, buf, [0x00280010, 0x7FE00010, 0xFFFCFFFC])
    assert got == {0x00280010: b"\x02\x00", 0x7FE00010: fragments, 0xFFFCFFFC: b"\0" * 6}

    # A header scan never walks the pixel data: cut it short, the header still reads.
    cut = buf[: len(buf) - 30]
    assert _scan(twin, enc, cut, [0x00280010]) == {0x00280010: b"\x02\x00"}
    with pytest.raises(MalformedDatasetError, match="offset"):
        _scan(twin, enc, cut, [0x00280010, 0x7FE00010])


@ENCODINGS
def test_early_exit_does_not_read_the_tail(twin, enc):
    e = enc
    head = e.elem(0x00100010, b"PN", b"Doe^J") + e.elem(0x00100020, b"LO", b"ID42")
    # A tail whose first element claims far more bytes than there are.
    tail = e.elem(0x00100030, b"OB", b"\x01\x02")[:-2].replace(e.u32(2), e.u32(0x7FFFFFF0))
    tail += b"\xa5" * 100
    buf = head + tail
    want = {0x00100010: b"Doe^J", 0x00100020: b"ID42"}
    assert _scan(twin, e, buf, [0x00100010, 0x00100020]) == want
    assert _scan(twin, e, buf, [0x00100020]) == {0x00100020: b"ID42"}
    tail_value = len(head) + (8 if e.implicit else 12)
    with pytest.raises(MalformedDatasetError, match=rf"offset {tail_value}\b"):
        _scan(twin, e, buf, [0x00100030])
    # Stopping is decided on the tag alone: a tail of just a big tag is fine.
    assert _scan(twin, e, head + e.tag(0x7FE00010), [0x00100020]) == {0x00100020: b"ID42"}


def test_short_vr_length_ffff_is_a_length(twin):
    e = EXPLICIT_LE
    buf = e.elem(0x00081030, b"LO", b"a" * 0xFFFF) + e.elem(0x00100020, b"LO", b"ID42")
    want = {0x00081030: b"a" * 0xFFFF, 0x00100020: b"ID42"}
    assert _scan(twin, e, buf, [0x00081030, 0x00100020]) == want


def test_delimiters_with_nonzero_length_are_accepted(twin):
    e = IMPLICIT_LE
    sq = (e.elem(0x00081140, None, undefined=True) + e.tag(ITEM) + e.u32(UNDEFINED)
          + e.tag(ITEM_DELIM) + e.u32(4) + e.tag(SEQ_DELIM) + e.u32(7))
    buf = sq + e.elem(0x00100020, None, b"ID42")
    assert _scan(twin, e, buf, [0x00100020]) == {0x00100020: b"ID42"}


def test_deep_nesting_does_not_recurse(twin):
    e = IMPLICIT_LE
    depth = 20_000  # far beyond Python's recursion limit
    opening = (e.elem(0x00081140, None, undefined=True) + e.tag(ITEM) + e.u32(UNDEFINED)) * depth
    closing = (e.tag(ITEM_DELIM) + e.u32(0) + e.seq_delim()) * depth
    tail = e.elem(0x00100020, None, b"ID42")
    buf = opening + closing + tail
    got = _scan(twin, e, buf, [0x00081140, 0x00100020])
    assert got == {0x00081140: buf[8 : len(opening) + len(closing) - 8], 0x00100020: b"ID42"}
    with pytest.raises(MalformedDatasetError, match=r"offset 8\b"):  # where the outer value starts
        _scan(twin, e, opening + closing[:-8], [0x00100020])


def _malformed_cases():
    e, x = IMPLICIT_LE, EXPLICIT_LE
    good = x.elem(0x00080005, b"CS", b"ISO_IR 100")  # 18 bytes
    n = len(good)
    undefined_sq = x.elem(0x00081140, b"SQ", undefined=True)  # 12 bytes
    return {
        "truncated-tag": (x, good + b"\x10\x00", n),
        "truncated-short-header": (x, good + x.tag(0x00100010) + b"PN\x04", n),
        "truncated-long-header": (x, good + x.tag(0x00100010) + b"OB\0\0\x04\0", n),
        "truncated-implicit-header": (e, e.tag(0x00100010) + b"\x04\0", 0),
        "value-past-end": (x, good + x.elem(0x00100010, b"PN", b"Doe^J")[:-1], n + 8),
        "long-value-past-end": (x, good + x.elem(0x00100010, b"OB", b"1234")[:-1], n + 12),
        "item-at-top-level": (x, good + x.tag(ITEM) + x.u32(0), n),
        "seq-delimiter-at-top-level": (x, good + x.seq_delim(), n),
        "element-in-sequence": (x, good + undefined_sq + x.elem(0x00081150, b"UI", b"1.2\0"),
                                n + 12),
        "item-delimiter-in-sequence": (x, good + undefined_sq + x.tag(ITEM_DELIM) + x.u32(0),
                                       n + 12),
        "item-in-item": (x, good + undefined_sq + x.item(x.item(b""), undefined=True), n + 20),
        "unterminated-sequence": (x, good + undefined_sq + x.item(b"ab"), n + 12),
        "unterminated-item": (x, good + undefined_sq + x.tag(ITEM) + x.u32(UNDEFINED)
                              + x.elem(0x00081150, b"UI", b"1.2\0"), n + 12),
        "item-past-end": (x, good + undefined_sq + x.tag(ITEM) + x.u32(100) + b"ab", n + 20),
        "nested-value-past-end": (x, good + undefined_sq + x.tag(ITEM) + x.u32(UNDEFINED)
                                  + x.elem(0x00081150, b"UI", b"1.2\0")[:-1], n + 28),
        "pixel-item-past-end": (x, good + x.elem(0x7FE00010, b"OB", undefined=True)
                                + x.item(b"") + x.tag(ITEM) + x.u32(8) + b"1234", n + 28),
    }


MALFORMED = _malformed_cases()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_inputs_raise_with_the_offset(twin, case):
    enc, buf, where = MALFORMED[case]
    with pytest.raises(MalformedDatasetError, match=f"offset {where}\\b"):
        _scan(twin, enc, buf, [0x00080005, LAST_TAG])
    # The same garbage preceded by 5 junk bytes: offsets in messages are absolute.
    with pytest.raises(MalformedDatasetError, match=f"offset {where + 5}\\b"):
        _scan(twin, enc, b"junk!" + buf, [0x00080005, LAST_TAG], offset=5)
    # The element before the damage is still found when nothing after it is wanted, except
    # when not even the next tag can be read: then the scanner cannot know it may stop.
    if case == "truncated-tag":
        with pytest.raises(MalformedDatasetError):
            _scan(twin, enc, buf, [0x00080005])
    elif where:
        assert _scan(twin, enc, buf, [0x00080005]) == {0x00080005: b"ISO_IR 100"}


def test_arguments(twin):
    e = EXPLICIT_LE
    buf = e.elem(0x00100010, b"PN", b"Doe^J ") + e.elem(0x00100020, b"LO", b"ID42")
    want = {0x00100010: b"Doe^J ", 0x00100020: b"ID42"}
    tags = [0x00100010, 0x00100020]
    # Any C-contiguous buffer, read-only or not, wide items read as raw bytes.
    for kind in (bytes, bytearray, memoryview, lambda b: memoryview(b).toreadonly(),
                 lambda b: array("H", b)):
        assert twin.scan_dataset(kind(buf), tags, False, True) == want
    with pytest.raises(BufferError):
        twin.scan_dataset(memoryview(buf + buf)[::2], tags, False, True)
    with pytest.raises(TypeError):
        twin.scan_dataset("text", tags, False, True)
    assert twin.scan_dataset(b"xxx" + buf, tuple(tags), False, True, 3) == want
    assert twin.scan_dataset(buf, tags, False, True, len(buf)) == {}
    assert twin.scan_dataset(b"garbage", (), False, True) == {}
    for bad_offset in (-1, len(buf) + 1):
        with pytest.raises(ValueError):
            twin.scan_dataset(buf, tags, False, True, bad_offset)
    for bad_tags, error in (
        ([0x00100020, 0x00100010], ValueError),  # not ascending
        ([0x00100010] * 2, ValueError),  # duplicated
        ([-1], ValueError),
        ([1 << 32], ValueError),
        (["0x00100010"], TypeError),
        ([1.0], TypeError),
    ):
        with pytest.raises(error):
            twin.scan_dataset(buf, bad_tags, False, True)


def _meta_file(elements, group_length=True, glen_delta=0):
    x = EXPLICIT_LE
    body = b"".join(x.elem(t, vr, v) for t, vr, v in elements)
    if group_length:
        body = x.elem(0x00020000, b"UL", struct.pack("<I", len(body) + glen_delta)) + body
    return b"\0" * 128 + b"DICM" + body


META = [
    (0x00020001, b"OB", b"\x00\x01"),
    (0x00020002, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"),
    (0x00020003, b"UI", b"1.2.3.4\0"),
    (0x00020010, b"UI", b"1.2.840.10008.1.2.1\0"),
]
DATASET = EXPLICIT_LE.elem(0x00080005, b"CS", b"ISO_IR 100")


@pytest.mark.parametrize("group_length", [True, False])
def test_read_file_meta(twin, group_length):
    meta_bytes = _meta_file(META, group_length)
    want = {t: v for t, _, v in META}
    if group_length:
        want[0x00020000] = struct.pack("<I", len(meta_bytes) - 132 - 12)
    assert twin.read_file_meta(meta_bytes + DATASET) == (want, len(meta_bytes))
    assert twin.read_file_meta(meta_bytes) == (want, len(meta_bytes))
    assert twin.read_file_meta(bytearray(meta_bytes + DATASET)) == (want, len(meta_bytes))


def test_read_file_meta_does_not_trust_group_length(twin):
    for delta in (-30, +30):  # too small: all of group 2 is still read; too big: stops at group 8
        buf = _meta_file(META, glen_delta=delta) + DATASET
        meta, offset = twin.read_file_meta(buf)
        assert set(meta) == {0x00020000, *(t for t, _, _ in META)}
        assert buf[offset:] == DATASET
    # ...but a buffer ending where group 2 says more is coming is truncated.
    with pytest.raises(MalformedDatasetError, match="offset"):
        twin.read_file_meta(_meta_file(META, glen_delta=+30))


def test_read_file_meta_without_dicm(twin):
    assert twin.read_file_meta(DATASET) == ({}, 0)
    assert twin.read_file_meta(b"") == ({}, 0)
    assert twin.read_file_meta(b"\0" * 128 + b"DICX" + DATASET) == ({}, 0)
    assert twin.read_file_meta(b"\0" * 128 + b"DIC") == ({}, 0)


def test_read_file_meta_truncated(twin):
    buf = _meta_file(META, group_length=False)
    for cut in (133, 135, 138, 140, 145, len(buf) - 1):
        with pytest.raises(MalformedDatasetError, match="offset"):
            twin.read_file_meta(buf[:cut])
    with pytest.raises(MalformedDatasetError, match="undefined"):
        undefined = EXPLICIT_LE.elem(0x00020001, b"OB", undefined=True)
        twin.read_file_meta(b"\0" * 128 + b"DICM" + undefined)


# --------------------------------------------------------------------------------------------
# 4. which module pacsnode uses


def _truthy(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def test_native_module_selected():
    if IN_CI:
        assert native_header is not None, "CI=true: the native extension must be built"
    if _truthy("PACSNODE_PURE"):
        assert native_pkg.IS_NATIVE is False
        assert native_pkg.header is ref_header
    else:
        if IN_CI:
            assert native_pkg.IS_NATIVE is True
        assert native_pkg.IS_NATIVE == (native_header is not None)
        assert native_pkg.header is (native_header if native_pkg.IS_NATIVE else ref_header)


_BLOCK_NATIVE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pacsnode._native.header":
            raise ImportError("blocked by the test")
sys.meta_path.insert(0, Block())
"""
_REPORT = """
import logging
logging.basicConfig(level=logging.WARNING)
import pacsnode._native as n
print(n.IS_NATIVE, n.header.__name__, "pacsnode._native.header" in sys.modules)
"""


def _select(env, block):
    code = "import sys\n" + (_BLOCK_NATIVE if block else "") + _REPORT
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSNODE_")} | env
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_pure_env_selects_the_twin_without_loading_the_extension():
    run = _select({"PACSNODE_PURE": "1"}, block=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "pacsnode._native._ref.header", "False"]


def test_failed_native_import_falls_back_with_a_warning():
    run = _select({}, block=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "pacsnode._native._ref.header", "False"]
    assert "WARNING" in run.stderr and "pure-Python" in run.stderr


def test_require_native_turns_a_failed_import_into_an_error():
    run = _select({"PACSNODE_REQUIRE_NATIVE": "1"}, block=True)
    assert run.returncode != 0
    assert "ImportError" in run.stderr and "PACSNODE_REQUIRE_NATIVE" in run.stderr


def test_native_is_the_default():
    _need_native()
    run = _select({"PACSNODE_REQUIRE_NATIVE": "1"}, block=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "pacsnode._native.header", "True"]
